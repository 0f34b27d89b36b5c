//! The closed set of ops floe executes, one family per file.
//!
//! Each family is an enum implementing [`OpImpl`]: shape/type inference and
//! evaluation. The math lives in plain functions over typed slices, and hot loops
//! call `floe-kernels` (the seam where SIMD kernels drop in without touching the
//! executor). Importers map ONNX nodes onto these ops; passes match on them.

pub mod attention;
mod block_copy;
pub mod broadcast;
pub mod causal_conv;
pub mod channels_last;
pub mod control;
pub mod conv;
pub mod detection;
pub mod einsum;
pub mod elementwise;
pub mod fused;
pub mod gather;
pub mod layout;
pub mod lif;
pub mod linear_attention;
pub mod lmu;
pub mod loss;
pub mod matmul;
pub mod normalization;
pub mod pool;
pub mod quantize;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod signal;
pub mod softmax;
pub mod spike_linear;

use crate::error::Result;
use crate::graph::Graph;
use crate::shape::Fact;
use crate::tensor::Tensor;

/// What inference knows about one input: its fact, and its value if constant.
#[derive(Clone, Copy, Debug)]
pub struct InferInput<'a> {
    pub fact: &'a Fact,
    pub value: Option<&'a Tensor>,
}

/// Per-call context for evaluation.
#[derive(Clone, Copy, Debug)]
pub struct EvalCtx {
    /// How many outputs the node declares (ops with optional outputs fill these).
    pub n_outputs: usize,
}

/// The interface each op family implements.
pub trait OpImpl {
    /// The op type as users know it (ONNX name where there is one).
    fn name(&self) -> &'static str;
    /// Output facts from input facts. Unknown is allowed (filled at run time).
    fn infer(&self, inputs: &[InferInput<'_>], n_outputs: usize) -> Result<Vec<Fact>>;
    /// Computes the outputs. `None` marks an omitted optional input.
    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>>;
    /// Bodies of control-flow ops (for visitors and validation).
    fn subgraphs(&self) -> Vec<&Graph> {
        Vec::new()
    }
    /// A kernel specialised for these inputs (concrete shapes; constant inputs
    /// carry their values) that computes into preallocated outputs of the given
    /// facts. `None` (the default) means the executor calls [`eval`](Self::eval).
    fn kernel(&self, _inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        Ok(None)
    }
    /// True if output 0 is input 0 under another shape (same bytes, no copy):
    /// the executor lets them share one buffer.
    fn is_view(&self) -> bool {
        false
    }
}

/// An op prepared for fixed shapes: packed weights, index tables and loop bounds
/// are computed once at plan time, and `run` writes into output tensors the
/// executor allocated (and reuses across runs) with the planned dtypes and shapes.
/// `run` must overwrite every output element.
pub trait Kernel: Send + Sync {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()>;
}

/// The concrete shape of an input at plan time, if known.
pub fn fixed_shape(i: &InferInput<'_>) -> Option<Vec<usize>> {
    i.fact.shape.as_ref().and_then(|s| s.as_fixed())
}

macro_rules! op_enum {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Every op floe can execute, grouped by family.
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        pub enum Op {
            $($variant($ty)),*
        }

        impl Op {
            fn inner(&self) -> &dyn OpImpl {
                match self {
                    $(Op::$variant(o) => o),*
                }
            }
        }

        $(impl From<$ty> for Op {
            fn from(o: $ty) -> Op {
                Op::$variant(o)
            }
        })*
    };
}

op_enum! {
    Elementwise(elementwise::ElementwiseOp),
    Layout(layout::LayoutOp),
    Gather(gather::GatherOp),
    Reduce(reduce::ReduceOp),
    Softmax(softmax::SoftmaxOp),
    MatMul(matmul::MatMulOp),
    Conv(conv::ConvOp),
    Pool(pool::PoolOp),
    Normalization(normalization::NormOp),
    Rnn(rnn::RnnOp),
    Control(control::ControlOp),
    Resize(resize::ResizeOp),
    Einsum(einsum::EinsumOp),
    Quantize(quantize::QuantOp),
    Loss(loss::LossOp),
    Attention(attention::AttentionOp),
    Signal(signal::SignalOp),
    Detection(detection::DetectionOp),
    Lmu(lmu::LmuMemoryOp),
    Lif(lif::LifOp),
    SpikeLinear(spike_linear::SpikeLinearOp),
    LinearAttention(linear_attention::LinearAttentionOp),
    CausalConv(causal_conv::CausalConvOp),
    ChannelsLast(channels_last::ChannelsLastOp),
}

impl Op {
    pub fn name(&self) -> &'static str {
        self.inner().name()
    }

    pub fn infer(&self, inputs: &[InferInput<'_>], n_outputs: usize) -> Result<Vec<Fact>> {
        self.inner().infer(inputs, n_outputs)
    }

    pub fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.inner().eval(ctx, inputs)
    }

    pub fn subgraphs(&self) -> Vec<&Graph> {
        self.inner().subgraphs()
    }

    pub fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        self.inner().kernel(inputs, outputs)
    }

    pub fn is_view(&self) -> bool {
        self.inner().is_view()
    }
}

/// Input `i`, or an error naming the missing input.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize, what: &str) -> Result<&'a Tensor> {
    inputs.get(i).copied().flatten().ok_or_else(|| crate::Error::Invalid(format!("missing input {i} ({what})")))
}

/// Optional input `i`.
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Resolves a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(crate::Error::Invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Output facts that know only the dtype (one per output).
pub fn dtype_facts(dtype: Option<crate::DType>, n: usize) -> Vec<Fact> {
    vec![Fact { dtype, shape: None }; n]
}

/// Row-major strides of a shape (in elements).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
