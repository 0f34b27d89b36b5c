//! ONNX `CausalConvWithState`-27: causal depthwise 1-D convolution that carries the
//! last `k - 1` inputs as state, with an optional fused SiLU (Mamba, Gated DeltaNet).
//!
//! Input `[B, C, L]`, weight `[C, 1, k]`, bias? `[C]`, past_state? `[B, C, k - 1]`
//! (zeros when absent); outputs `[B, C, L]` and present_state `[B, C, k - 1]`, which
//! fed back as past_state makes a stream of any piece lengths (one step included)
//! equal the whole sequence. The math is `floe_kernels::causal_conv` in f32; f16
//! and f64 are converted.
//!
//! Reference: ONNX operator spec `CausalConvWithState`-27 and
//! onnx/reference/ops/op_causal_conv_with_state.py.

use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, unsupported};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CausalConvOp {
    /// `activation` "silu"/"swish" sets `silu`; "none" clears it.
    CausalConvWithState { silu: bool },
}

fn f32_vec(t: &Tensor, what: &str) -> Result<Vec<f32>> {
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::F64) {
        unsupported!("{what} must be float, got {:?}", t.dtype());
    }
    Ok(t.cast(DType::F32)?.as_slice::<f32>()?.to_vec())
}

/// Computes the op over f32 buffers: `x` `[B, C, L]`, `w` `[C, k]`, `state`
/// `[B, C, k - 1]` in and out. Returns the output `[B, C, L]`.
pub fn causal_conv_with_state(
    x: &[f32],
    dims: [usize; 3],
    w: &[f32],
    k: usize,
    bias: Option<&[f32]>,
    silu: bool,
    state: &mut [f32],
) -> Vec<f32> {
    let [b, c, l] = dims;
    let mut out = vec![0f32; b * c * l];
    for bi in 0..b {
        for ci in 0..c {
            let r = bi * c + ci;
            floe_kernels::causal_conv::causal_conv_channel(
                &x[r * l..(r + 1) * l],
                &w[ci * k..(ci + 1) * k],
                bias.map_or(0.0, |bv| bv[ci]),
                silu,
                &mut state[r * (k - 1)..(r + 1) * (k - 1)],
                &mut out[r * l..(r + 1) * l],
            );
        }
    }
    out
}

impl OpImpl for CausalConvOp {
    fn name(&self) -> &'static str {
        "CausalConvWithState"
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let fact = |i: usize| inputs.get(i).map(|x| x.fact.clone()).unwrap_or_else(Fact::unknown);
        let (x, w) = (fact(0), fact(1));
        let k = w.shape.as_ref().filter(|s| s.rank() == 3).and_then(|s| s.0[2].fixed());
        let state = x.shape.as_ref().filter(|s| s.rank() == 3).map(|s| {
            Shape(vec![s.0[0].clone(), s.0[1].clone(), k.map_or(Dim::Unknown, |k| Dim::Fixed(k.saturating_sub(1)))])
        });
        Ok(vec![x.clone(), Fact { dtype: x.dtype, shape: state }].into_iter().take(n).collect())
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let CausalConvOp::CausalConvWithState { silu } = *self;
        let (x, w) = (input(inputs, 0, "input")?, input(inputs, 1, "weight")?);
        let (bias, past) = (opt_input(inputs, 2), opt_input(inputs, 3));
        let &[b, c, l] = x.shape() else { bail!("input must be [batch, channels, length], got {:?}", x.shape()) };
        let &[wc, 1, k] = w.shape() else { bail!("weight must be [channels, 1, k], got {:?}", w.shape()) };
        if wc != c || k == 0 {
            bail!("weight {:?} must be [{c}, 1, k >= 1] for input {:?}", w.shape(), x.shape());
        }
        if let Some(bv) = bias {
            if bv.shape() != [c] {
                bail!("bias {:?} must be [{c}]", bv.shape());
            }
        }
        let mut state = match past {
            Some(p) if p.shape() == [b, c, k - 1] => f32_vec(p, "past_state")?,
            Some(p) => bail!("past_state {:?} must be [{b}, {c}, {}]", p.shape(), k - 1),
            None => vec![0f32; b * c * (k - 1)],
        };
        let bias = bias.map(|bv| f32_vec(bv, "bias")).transpose()?;
        let out = causal_conv_with_state(
            &f32_vec(x, "input")?,
            [b, c, l],
            &f32_vec(w, "weight")?,
            k,
            bias.as_deref(),
            silu,
            &mut state,
        );
        let dt = x.dtype();
        let mut outs =
            vec![Tensor::from_vec(&[b, c, l], out)?.cast(dt)?, Tensor::from_vec(&[b, c, k - 1], state)?.cast(dt)?];
        outs.truncate(ctx.n_outputs.max(1));
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_whole_sequence_for_any_chunking() {
        let (b, c, l, k) = (2, 3, 23, 4);
        let x: Vec<f32> = (0..b * c * l).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let w: Vec<f32> = (0..c * k).map(|i| ((i * 13 % 7) as f32 / 3.0) - 1.0).collect();
        let bias = [0.1, -0.2, 0.3];
        for silu in [false, true] {
            let mut st = vec![0f32; b * c * (k - 1)];
            let whole = causal_conv_with_state(&x, [b, c, l], &w, k, Some(&bias), silu, &mut st);
            for sizes in [&[1][..], &[2, 5], &[3, 1, 10]] {
                let mut state = vec![0f32; b * c * (k - 1)];
                let mut got = vec![0f32; b * c * l];
                let (mut at, mut i) = (0, 0);
                while at < l {
                    let n = sizes[i % sizes.len()].min(l - at);
                    let piece: Vec<f32> = (0..b * c).flat_map(|r| x[r * l + at..r * l + at + n].to_vec()).collect();
                    let o = causal_conv_with_state(&piece, [b, c, n], &w, k, Some(&bias), silu, &mut state);
                    for r in 0..b * c {
                        got[r * l + at..r * l + at + n].copy_from_slice(&o[r * n..(r + 1) * n]);
                    }
                    at += n;
                    i += 1;
                }
                let err = got.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err <= 1e-5, "{sizes:?}: {err}");
                assert_eq!(state, st);
            }
        }
    }
}
