//! Channels-last forms of spatial ops: `ChannelsLast(op)` is `op` (a Conv, a
//! pool, a global pool) applied to an X whose channel axis is last,
//! `[N, spatial..., C]`, writing its output channels-last too.
//!
//! Speech models feed `[N, T, F]` frames through a Transpose into channels-first
//! 1-D convolutions. Channels-last, a 1-D conv's window over all input channels
//! is one contiguous run of the input (`k * C` floats starting at row
//! `t * stride`), so the conv is a single GEMM that reads its left operand in
//! place: no im2col copy, no Transpose, and the output channels (usually a
//! multiple of the register tile) run along the GEMM's wide axis. The
//! `channels_last` pass decides where the layout changes.
//!
//! `eval` is the reference: transpose X to channels-first, the inner op's own
//! `eval`, transpose the output back. The prepared f32 kernels (1-D: `conv`,
//! `pool`) are tested against it.

mod conv;
mod pool;

use super::conv::ConvOp;
use super::layout::transpose;
use super::pool::PoolOp;
use super::{EvalCtx, InferInput, Kernel, Op, OpImpl};
use crate::bail;
use crate::error::Result;
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;

/// `inner` with input 0 and output 0 channels-last; other inputs (weights, bias)
/// keep the inner op's layout.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChannelsLastOp {
    pub inner: Box<Op>,
}

impl ChannelsLastOp {
    /// Wraps an op this layout supports: Conv (with or without a fused
    /// activation), MaxPool / AveragePool and GlobalAveragePool / GlobalMaxPool.
    pub fn wrap(op: &Op) -> Option<ChannelsLastOp> {
        let supported = match op {
            Op::Conv(c) => matches!(c, ConvOp::Conv(_) | ConvOp::ConvAct { .. }),
            Op::Pool(p) => matches!(p, PoolOp::Pool { .. } | PoolOp::GlobalAverage | PoolOp::GlobalMax),
            _ => false,
        };
        supported.then(|| ChannelsLastOp { inner: Box::new(op.clone()) })
    }
}

/// `[N, C, s...]` -> `[N, s..., C]`.
pub fn to_last(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    if rank > 2 {
        p[1..].rotate_left(1);
    }
    p
}

/// `[N, s..., C]` -> `[N, C, s...]`.
pub fn to_first(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    if rank > 2 {
        p[1..].rotate_right(1);
    }
    p
}

fn permute_fact(f: &Fact, perm: impl Fn(usize) -> Vec<usize>) -> Fact {
    let shape = f.shape.as_ref().map(|s| Shape(perm(s.rank()).iter().map(|&a| s.0[a].clone()).collect()));
    Fact { dtype: f.dtype, shape }
}

impl OpImpl for ChannelsLastOp {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn infer(&self, inputs: &[InferInput<'_>], n_outputs: usize) -> Result<Vec<Fact>> {
        if n_outputs != 1 || inputs.is_empty() {
            bail!("a channels-last {} has one data input and one output", self.inner.name());
        }
        let x = permute_fact(inputs[0].fact, to_first);
        let mut ins = inputs.to_vec();
        ins[0] = InferInput { fact: &x, value: None };
        let outs = self.inner.infer(&ins, 1)?;
        Ok(outs.iter().map(|f| permute_fact(f, to_last)).collect())
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = super::input(inputs, 0, "X")?;
        if x.rank() < 3 || ctx.n_outputs != 1 {
            bail!("a channels-last {} needs X [N, spatial..., C] and one output, got X {:?}", self.name(), x.shape());
        }
        let first = transpose(x, &to_first(x.rank()))?;
        let mut ins = inputs.to_vec();
        ins[0] = Some(&first);
        let out = self.inner.eval(ctx, &ins)?;
        let y = out.first().ok_or_else(|| crate::Error::Invalid(format!("{} gave no output", self.name())))?;
        Ok(vec![transpose(y, &to_last(y.rank()))?])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        match &*self.inner {
            Op::Conv(ConvOp::Conv(a)) => conv::prepare(a, super::fused::FusedActivation::None, inputs, outputs),
            Op::Conv(ConvOp::ConvAct { attrs, activation }) => conv::prepare(attrs, *activation, inputs, outputs),
            Op::Pool(p) => pool::prepare(p, inputs, outputs),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_permutations_invert_each_other() {
        assert_eq!(to_last(3), [0, 2, 1]);
        assert_eq!(to_first(4), [0, 3, 1, 2]);
        assert_eq!(to_last(4), [0, 2, 3, 1]);
        for r in 1..6 {
            let (a, b) = (to_last(r), to_first(r));
            assert_eq!((0..r).map(|i| a[b[i]]).collect::<Vec<_>>(), (0..r).collect::<Vec<_>>());
        }
    }
}
