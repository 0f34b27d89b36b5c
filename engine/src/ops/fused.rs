//! Activations that fusion passes fold into the op producing their input (Linear,
//! Conv), so the activation is applied as the GEMM stores its output.

use super::elementwise::UnaryOp;
use crate::error::Result;
use crate::tensor::Tensor;
use floe_kernels::gemm::Activation;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FusedActivation {
    #[default]
    None,
    Relu,
    Sigmoid,
    Tanh,
    /// The exact (erf) form.
    Gelu,
    /// `x * sigmoid(x)` (Swish with alpha 1).
    Silu,
}

impl FusedActivation {
    /// The fusable activation a unary op computes, if any.
    pub fn from_unary(u: &UnaryOp) -> Option<FusedActivation> {
        Some(match u {
            UnaryOp::Relu => FusedActivation::Relu,
            UnaryOp::Sigmoid => FusedActivation::Sigmoid,
            UnaryOp::Tanh => FusedActivation::Tanh,
            UnaryOp::Gelu { tanh_approx: false } => FusedActivation::Gelu,
            UnaryOp::Swish { alpha } if *alpha == 1.0 => FusedActivation::Silu,
            _ => return None,
        })
    }

    /// The unary op it stands for (the unfused definition).
    pub fn unary(self) -> Option<UnaryOp> {
        Some(match self {
            FusedActivation::None => return None,
            FusedActivation::Relu => UnaryOp::Relu,
            FusedActivation::Sigmoid => UnaryOp::Sigmoid,
            FusedActivation::Tanh => UnaryOp::Tanh,
            FusedActivation::Gelu => UnaryOp::Gelu { tanh_approx: false },
            FusedActivation::Silu => UnaryOp::Swish { alpha: 1.0 },
        })
    }

    /// The GEMM epilogue activation.
    pub fn kernel(self) -> Activation {
        match self {
            FusedActivation::None => Activation::None,
            FusedActivation::Relu => Activation::Relu,
            FusedActivation::Sigmoid => Activation::Sigmoid,
            FusedActivation::Tanh => Activation::Tanh,
            FusedActivation::Gelu => Activation::Gelu,
            FusedActivation::Silu => Activation::Silu,
        }
    }

    /// Applies the activation to an op's result (the reference path).
    pub fn apply(self, t: Tensor) -> Result<Tensor> {
        match self.unary() {
            None => Ok(t),
            Some(u) => u.eval(&t),
        }
    }
}
