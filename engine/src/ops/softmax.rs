//! Softmax, LogSoftmax and Hardmax. Opset < 13 coerces the input to 2-D at `axis`
//! (the "legacy" form); opset >= 13 normalises along one axis.

use super::{input, norm_axis, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::shape::Fact;
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SoftmaxOp {
    pub kind: SoftmaxKind,
    pub axis: i64,
    /// Opset < 13: normalise over all dims from `axis` on.
    pub legacy: bool,
}

/// (outer, n, inner) for normalising over `n` elements at stride `inner`.
fn layout(shape: &[usize], axis: usize, legacy: bool) -> (usize, usize, usize) {
    let outer: usize = shape[..axis].iter().product();
    if legacy {
        (outer, shape[axis..].iter().product(), 1)
    } else {
        (outer, shape[axis], shape[axis + 1..].iter().product())
    }
}

impl OpImpl for SoftmaxOp {
    fn name(&self) -> &'static str {
        match self.kind {
            SoftmaxKind::Softmax => "Softmax",
            SoftmaxKind::LogSoftmax => "LogSoftmax",
            SoftmaxKind::Hardmax => "Hardmax",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        Ok(vec![inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown)])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        if x.rank() == 0 {
            bail!("{} needs rank >= 1", self.name());
        }
        let axis = norm_axis(self.axis, x.rank())?;
        let (outer, n, inner) = layout(x.shape(), axis, self.legacy);
        let mut out = x.clone();
        if x.dtype() == DType::F32 && inner == 1 && self.kind != SoftmaxKind::Hardmax {
            let o = out.as_mut_slice::<f32>()?;
            for row in o.chunks_mut(n.max(1)) {
                match self.kind {
                    SoftmaxKind::Softmax => floe_kernels::softmax::softmax_f32(row),
                    _ => floe_kernels::softmax::log_softmax_f32(row),
                }
            }
            return Ok(vec![out]);
        }
        dispatch_float!(x.dtype(), T => {
            let o = out.as_mut_slice::<T>()?;
            let mut buf = vec![0f64; n];
            for oi in 0..outer {
                for ii in 0..inner {
                    let at = |j: usize| (oi * n + j) * inner + ii;
                    for (j, b) in buf.iter_mut().enumerate() {
                        *b = o[at(j)].to_f64();
                    }
                    match self.kind {
                        SoftmaxKind::Hardmax => {
                            let mut best = 0;
                            for j in 1..n {
                                if buf[j] > buf[best] {
                                    best = j;
                                }
                            }
                            for j in 0..n {
                                o[at(j)] = T::from_f64((j == best) as u8 as f64);
                            }
                        }
                        kind => {
                            let m = buf.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let s: f64 = buf.iter().map(|v| (v - m).exp()).sum();
                            for j in 0..n {
                                let v = if kind == SoftmaxKind::Softmax { (buf[j] - m).exp() / s } else { buf[j] - m - s.ln() };
                                o[at(j)] = T::from_f64(v);
                            }
                        }
                    }
                }
            }
        }, _ => bail!("{} expects a float input, got {}", self.name(), x.dtype()));
        Ok(vec![out])
    }
}
