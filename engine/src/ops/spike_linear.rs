//! `SpikeLinear`: `act(x @ w + bias)` for a spike input `x` (every element 0 or 1),
//! computed by accumulation only: each output row starts from the bias and adds the
//! rows of `w` whose input is set. No multiplies, and the work scales with the
//! number of spikes rather than with `K`.
//!
//! Why: after a LIF neuron a Linear / 1x1 Conv is a masked add (ALGORITHMS.md 3.5,
//! the premise of spiking LMUFormer's efficiency). `passes::spike_accumulate` puts
//! this op where the producer of the input is `floe::LIF`, which guarantees 0/1
//! values; any non-zero input counts as a spike.

use super::fused::FusedActivation;
use super::{fixed_shape, input, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;
use crate::unsupported;
use std::sync::Mutex;

/// Inputs: `x` `[..., K]` spikes, `w` `[K, N]`, optional `bias` `[N]`. Output `[..., N]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpikeLinearOp {
    pub activation: FusedActivation,
}

/// `out = act(bias + sum of w's rows k where x[.., k] != 0)`, row by row; `acc` is
/// an `n`-float row of scratch (used only with an activation).
pub fn spike_linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (k, n): (usize, usize),
    activation: FusedActivation,
    out: &mut [f32],
    acc: &mut Vec<f32>,
) -> Result<()> {
    let rows = x.len() / k.max(1);
    if x.len() != rows * k || w.len() != k * n || out.len() != rows * n || bias.is_some_and(|b| b.len() != n) {
        return Err(Error::Shape(format!(
            "SpikeLinear: x {} values, w {} for [{k}, {n}], bias {:?}, output {}",
            x.len(),
            w.len(),
            bias.map(|b| b.len()),
            out.len()
        )));
    }
    let act = activation.kernel();
    acc.resize(n, 0.0);
    for (xr, or) in x.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        let dst: &mut [f32] = if activation == FusedActivation::None { or } else { acc };
        match bias {
            Some(b) => dst.copy_from_slice(b),
            None => dst.fill(0.0),
        }
        for (p, &xv) in xr.iter().enumerate() {
            if xv != 0.0 {
                for (d, &wv) in dst.iter_mut().zip(&w[p * n..(p + 1) * n]) {
                    *d += wv;
                }
            }
        }
        if activation != FusedActivation::None {
            act.apply(acc, or);
        }
    }
    Ok(())
}

/// `(K, N)` of the weight, checked against `x`'s last dim.
fn dims(x: &[usize], w: &[usize]) -> Result<(usize, usize)> {
    match (x.last(), w) {
        (Some(&k), &[k2, n]) if k == k2 => Ok((k, n)),
        _ => Err(Error::Shape(format!("SpikeLinear: x {x:?} does not match weight {w:?}"))),
    }
}

/// The prepared kernel: weights and bias read at run time (they are constants the
/// plan holds), one scratch row kept across runs.
struct SpikeLinearKernel {
    k: usize,
    n: usize,
    activation: FusedActivation,
    acc: Mutex<Vec<f32>>,
}

impl Kernel for SpikeLinearKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "x")?.as_slice::<f32>()?;
        let w = input(inputs, 1, "w")?.as_slice::<f32>()?;
        let b = opt_input(inputs, 2).map(|t| t.as_slice::<f32>()).transpose()?;
        let mut acc = self.acc.lock().map_err(|_| Error::Invalid("SpikeLinear scratch poisoned".into()))?;
        spike_linear(x, w, b, (self.k, self.n), self.activation, outputs[0].as_mut_slice::<f32>()?, &mut acc)
    }
}

impl OpImpl for SpikeLinearOp {
    fn name(&self) -> &'static str {
        "SpikeLinear"
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let w = inputs.get(1).and_then(|i| i.fact.shape.clone());
        let shape = match (&x.shape, &w) {
            (Some(xs), Some(ws)) if xs.rank() >= 1 && ws.rank() == 2 => {
                let mut d = xs.0[..xs.rank() - 1].to_vec();
                d.push(ws.0[1].clone());
                Some(Shape(d))
            }
            _ => None,
        };
        Ok(vec![Fact { dtype: x.dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "x")?;
        let w = input(inputs, 1, "w")?;
        if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
            unsupported!("SpikeLinear on {} x {} (f32 only)", x.dtype(), w.dtype());
        }
        let (k, n) = dims(x.shape(), w.shape())?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        let mut out = Tensor::zeros(DType::F32, &shape)?;
        let b = opt_input(inputs, 2).map(|t| t.as_slice::<f32>()).transpose()?;
        let o = out.as_mut_slice::<f32>()?;
        spike_linear(x.as_slice::<f32>()?, w.as_slice::<f32>()?, b, (k, n), self.activation, o, &mut Vec::new())?;
        Ok(vec![out])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        if inputs.iter().take(3).any(|i| i.fact.dtype.is_some_and(|d| d != DType::F32)) || inputs.len() < 2 {
            return Ok(None);
        }
        let (Some(x), Some(w)) = (fixed_shape(&inputs[0]), fixed_shape(&inputs[1])) else { return Ok(None) };
        let (k, n) = dims(&x, &w)?;
        Ok(Some(Box::new(SpikeLinearKernel { k, n, activation: self.activation, acc: Mutex::new(Vec::new()) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::linear;

    #[test]
    fn equals_the_dense_linear_on_spikes() {
        let (rows, k, n) = (6, 9, 5);
        let x: Vec<f32> = (0..rows * k).map(|i| ((i * 7 + 3) % 5 < 2) as u8 as f32).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 37 % 23) as f32 - 11.0) / 8.0).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 0.5).collect();
        let (xt, wt, bt) = (
            Tensor::from_slice(&[2, 3, k], &x).unwrap(),
            Tensor::from_slice(&[k, n], &w).unwrap(),
            Tensor::from_slice(&[n], &b).unwrap(),
        );
        for act in [FusedActivation::None, FusedActivation::Relu] {
            let want = act.apply(linear(&xt, &wt, Some(&bt)).unwrap()).unwrap();
            let op = SpikeLinearOp { activation: act };
            let got = op.eval(&EvalCtx { n_outputs: 1 }, &[Some(&xt), Some(&wt), Some(&bt)]).unwrap();
            let (g, w) = (got[0].as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
            let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-5, "{act:?}: {err}");
        }
        let got = SpikeLinearOp::default().eval(&EvalCtx { n_outputs: 1 }, &[Some(&xt), Some(&wt)]).unwrap();
        assert_eq!(got[0].shape(), &[2, 3, n]);
    }
}
