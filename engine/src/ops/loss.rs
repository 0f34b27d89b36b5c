//! Losses that inference graphs still carry (evaluation heads, exported training
//! graphs): NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.
//! Reference: ONNX spec, NegativeLogLikelihoodLoss-13/22, SoftmaxCrossEntropyLoss-13.

use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::Element;
use crate::error::Result;
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossReduction {
    None,
    Sum,
    Mean,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum LossOp {
    /// Inputs: log-probabilities `[N, C, d...]`, target `[N, d...]`, optional weight `[C]`.
    NegativeLogLikelihood { reduction: LossReduction, ignore_index: Option<i64> },
    /// Inputs: scores `[N, C, d...]`, labels `[N, d...]`, optional weight; outputs
    /// loss and (optionally) log_prob.
    SoftmaxCrossEntropy { reduction: LossReduction, ignore_index: Option<i64> },
}

/// NLL over f64 log-probabilities laid out `[N, C, inner]`.
fn nll(
    logp: &[f64],
    shape: &[usize],
    target: &[i64],
    weight: Option<&[f64]>,
    red: LossReduction,
    ignore: Option<i64>,
) -> Result<(Vec<f64>, Vec<usize>)> {
    if shape.len() < 2 {
        bail!("loss input must have rank >= 2 ([N, C, ...]), got {shape:?}");
    }
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    if target.len() != n * inner {
        bail!("target has {} elements, expected {}", target.len(), n * inner);
    }
    let mut losses = vec![0.0; n * inner];
    let mut wsum = 0.0;
    for i in 0..n {
        for d in 0..inner {
            let t = target[i * inner + d];
            if Some(t) == ignore {
                continue;
            }
            if t < 0 || t as usize >= c {
                bail!("target class {t} is out of range for {c} classes");
            }
            let w = weight.map_or(1.0, |w| w[t as usize]);
            losses[i * inner + d] = -logp[(i * c + t as usize) * inner + d] * w;
            wsum += w;
        }
    }
    Ok(match red {
        LossReduction::None => {
            let mut s = vec![n];
            s.extend_from_slice(&shape[2..]);
            (losses, s)
        }
        LossReduction::Sum => (vec![losses.iter().sum()], vec![]),
        LossReduction::Mean => (vec![losses.iter().sum::<f64>() / wsum], vec![]),
    })
}

impl OpImpl for LossOp {
    fn name(&self) -> &'static str {
        match self {
            LossOp::NegativeLogLikelihood { .. } => "NegativeLogLikelihoodLoss",
            LossOp::SoftmaxCrossEntropy { .. } => "SoftmaxCrossEntropyLoss",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let red = match self {
            LossOp::NegativeLogLikelihood { reduction, .. } | LossOp::SoftmaxCrossEntropy { reduction, .. } => {
                *reduction
            }
        };
        let loss_shape = if red == LossReduction::None { None } else { Some(Shape::fixed(&[])) };
        let mut v = vec![Fact { dtype: x.dtype, shape: loss_shape }];
        if n > 1 {
            v.push(x);
        }
        Ok(v)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let target = input(inputs, 1, "target")?.to_i64_vec()?;
        let weight = opt_input(inputs, 2).map(|w| w.to_f64_vec());
        let (red, ignore, softmax) = match self {
            LossOp::NegativeLogLikelihood { reduction, ignore_index } => (*reduction, *ignore_index, false),
            LossOp::SoftmaxCrossEntropy { reduction, ignore_index } => (*reduction, *ignore_index, true),
        };
        let mut logp = x.to_f64_vec();
        if softmax {
            if x.rank() < 2 {
                bail!("scores must have rank >= 2");
            }
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let inner: usize = x.shape()[2..].iter().product();
            for i in 0..n {
                for d in 0..inner {
                    let at = |j: usize| (i * c + j) * inner + d;
                    let m = (0..c).map(|j| logp[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = (0..c).map(|j| (logp[at(j)] - m).exp()).sum();
                    let l = s.ln();
                    for j in 0..c {
                        logp[at(j)] = logp[at(j)] - m - l;
                    }
                }
            }
        }
        let (loss, shape) = nll(&logp, x.shape(), &target, weight.as_deref(), red, ignore)?;
        let dt = x.dtype();
        let mut outs = Vec::new();
        dispatch_float!(dt, T => {
            outs.push(Tensor::from_vec(&shape, loss.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>())?);
            if ctx.n_outputs > 1 {
                outs.push(Tensor::from_vec(x.shape(), logp.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>())?);
            }
        }, _ => bail!("{} expects float input, got {dt}", self.name()));
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_nll_divides_by_weight_of_counted_targets() {
        // logp for N=2, C=2; targets 1 and 0 (ignored): loss = -(-0.5)*2 / 2
        let (l, s) =
            nll(&[-1.0, -0.5, -0.2, -3.0], &[2, 2], &[1, 0], Some(&[1.0, 2.0]), LossReduction::Mean, Some(0)).unwrap();
        assert!(s.is_empty());
        assert!((l[0] - 0.5).abs() < 1e-12);
    }
}
