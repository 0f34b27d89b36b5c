//! `SpikeLinear`: `act(x @ w + bias)` for a spike input `x` (every element 0 or 1),
//! computed by accumulation only: each output row starts from the bias and adds the
//! rows of `w` whose input is set. No multiplies, and the work scales with the
//! number of spikes rather than with `K`. The channels-first form is a 1x1 Conv
//! (`x` `[B, K, spatial...]`, `w` `[N, K, 1...]`): each output plane adds `w[n, k]` at
//! the positions where input plane `k` fired.
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

/// Inputs: `x` `[..., K]` spikes, `w` `[K, N]`, optional `bias` `[N]`; output `[..., N]`.
/// With `channels_first` (a 1x1 Conv): `x` `[B, K, spatial...]`, `w` `[N, K, 1...]`,
/// output `[B, N, spatial...]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpikeLinearOp {
    pub activation: FusedActivation,
    pub channels_first: bool,
}

/// The 1x1 Conv form: `x` `[batch, k, sp]`, `w` `[n, k]`, `out` `[batch, n, sp]`.
pub fn spike_conv1x1(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (batch, k, n, sp): (usize, usize, usize, usize),
    activation: FusedActivation,
    out: &mut [f32],
    acc: &mut Vec<f32>,
) -> Result<()> {
    if x.len() != batch * k * sp
        || w.len() != n * k
        || out.len() != batch * n * sp
        || bias.is_some_and(|b| b.len() != n)
    {
        return Err(Error::Shape(format!(
            "SpikeLinear (1x1 conv): x {} values, w {} for [{n}, {k}], output {} for [{batch}, {n}, {sp}]",
            x.len(),
            w.len(),
            out.len()
        )));
    }
    for bi in 0..batch {
        let ob = &mut out[bi * n * sp..(bi + 1) * n * sp];
        for (ni, row) in ob.chunks_exact_mut(sp.max(1)).enumerate() {
            row.fill(bias.map_or(0.0, |b| b[ni]));
        }
        for ki in 0..k {
            let xs = &x[(bi * k + ki) * sp..(bi * k + ki + 1) * sp];
            for (ni, row) in ob.chunks_exact_mut(sp.max(1)).enumerate() {
                let wv = w[ni * k + ki];
                for (o, &xv) in row.iter_mut().zip(xs) {
                    // a select, not a product: the spike chooses whether w is added
                    *o += if xv != 0.0 { wv } else { 0.0 };
                }
            }
        }
        if activation != FusedActivation::None {
            acc.resize(sp, 0.0);
            for row in ob.chunks_exact_mut(sp.max(1)) {
                acc.copy_from_slice(row);
                activation.kernel().apply(acc, row);
            }
        }
    }
    Ok(())
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

/// `(B, K, N, spatial)` of the 1x1 Conv form, checked.
fn conv_dims(x: &[usize], w: &[usize]) -> Result<(usize, usize, usize, usize)> {
    if x.len() < 2 || w.len() != x.len() || w[1] != x[1] || w[2..].iter().any(|&d| d != 1) {
        return Err(Error::Shape(format!("SpikeLinear (1x1 conv): x {x:?} does not match weight {w:?}")));
    }
    Ok((x[0], x[1], w[0], x[2..].iter().product()))
}

impl SpikeLinearOp {
    fn output_shape(&self, x: &[usize], w: &[usize]) -> Result<Vec<usize>> {
        let mut shape = x.to_vec();
        if self.channels_first {
            shape[1] = conv_dims(x, w)?.2;
        } else {
            *shape.last_mut().expect("rank >= 1") = dims(x, w)?.1;
        }
        Ok(shape)
    }

    #[allow(clippy::too_many_arguments)]
    fn compute(
        &self,
        x: &[f32],
        xs: &[usize],
        w: &[f32],
        ws: &[usize],
        b: Option<&[f32]>,
        out: &mut [f32],
        acc: &mut Vec<f32>,
    ) -> Result<()> {
        if self.channels_first {
            spike_conv1x1(x, w, b, conv_dims(xs, ws)?, self.activation, out, acc)
        } else {
            spike_linear(x, w, b, dims(xs, ws)?, self.activation, out, acc)
        }
    }
}

/// The prepared kernel: weights and bias read at run time (they are constants the
/// plan holds), one scratch row kept across runs.
struct SpikeLinearKernel {
    op: SpikeLinearOp,
    x_shape: Vec<usize>,
    w_shape: Vec<usize>,
    acc: Mutex<Vec<f32>>,
}

impl Kernel for SpikeLinearKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "x")?.as_slice::<f32>()?;
        let w = input(inputs, 1, "w")?.as_slice::<f32>()?;
        let b = opt_input(inputs, 2).map(|t| t.as_slice::<f32>()).transpose()?;
        let mut acc = self.acc.lock().map_err(|_| Error::Invalid("SpikeLinear scratch poisoned".into()))?;
        self.op.compute(x, &self.x_shape, w, &self.w_shape, b, outputs[0].as_mut_slice::<f32>()?, &mut acc)
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
            (Some(xs), Some(ws)) if self.channels_first && xs.rank() >= 2 && ws.rank() >= 1 => {
                let mut d = xs.0.clone();
                d[1] = ws.0[0].clone();
                Some(Shape(d))
            }
            (Some(xs), Some(ws)) if !self.channels_first && xs.rank() >= 1 && ws.rank() == 2 => {
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
        let mut out = Tensor::zeros(DType::F32, &self.output_shape(x.shape(), w.shape())?)?;
        let b = opt_input(inputs, 2).map(|t| t.as_slice::<f32>()).transpose()?;
        let o = out.as_mut_slice::<f32>()?;
        self.compute(x.as_slice::<f32>()?, x.shape(), w.as_slice::<f32>()?, w.shape(), b, o, &mut Vec::new())?;
        Ok(vec![out])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        if inputs.iter().take(3).any(|i| i.fact.dtype.is_some_and(|d| d != DType::F32)) || inputs.len() < 2 {
            return Ok(None);
        }
        let (Some(x), Some(w)) = (fixed_shape(&inputs[0]), fixed_shape(&inputs[1])) else { return Ok(None) };
        self.output_shape(&x, &w)?;
        Ok(Some(Box::new(SpikeLinearKernel { op: self.clone(), x_shape: x, w_shape: w, acc: Mutex::new(Vec::new()) })))
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
            let op = SpikeLinearOp { activation: act, channels_first: false };
            let got = op.eval(&EvalCtx { n_outputs: 1 }, &[Some(&xt), Some(&wt), Some(&bt)]).unwrap();
            let (g, w) = (got[0].as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
            let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-5, "{act:?}: {err}");
        }
        let got = SpikeLinearOp::default().eval(&EvalCtx { n_outputs: 1 }, &[Some(&xt), Some(&wt)]).unwrap();
        assert_eq!(got[0].shape(), &[2, 3, n]);
    }

    #[test]
    fn channels_first_equals_the_dense_1x1_conv_on_spikes() {
        use crate::ops::conv::{AutoPad, ConvAttrs, ConvOp};
        let (b, k, n, l) = (2, 5, 3, 7);
        let x: Vec<f32> = (0..b * k * l).map(|i| ((i * 5 + 1) % 3 == 0) as u8 as f32).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 13 % 11) as f32 - 5.0) / 4.0).collect();
        let bias: Vec<f32> = vec![0.5, -0.25, 0.0];
        let (xt, wt, bt) = (
            Tensor::from_slice(&[b, k, l], &x).unwrap(),
            Tensor::from_slice(&[n, k, 1], &w).unwrap(),
            Tensor::from_slice(&[n], &bias).unwrap(),
        );
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![1],
            pads: vec![],
            strides: vec![],
        };
        let ins = [Some(&xt), Some(&wt), Some(&bt)];
        let ctx = EvalCtx { n_outputs: 1 };
        for act in [FusedActivation::None, FusedActivation::Relu] {
            let dense = ConvOp::ConvAct { attrs: attrs.clone(), activation: act }.eval(&ctx, &ins).unwrap();
            let got = SpikeLinearOp { activation: act, channels_first: true }.eval(&ctx, &ins).unwrap();
            assert_eq!(got[0].shape(), dense[0].shape());
            let (g, d) = (got[0].as_slice::<f32>().unwrap(), dense[0].as_slice::<f32>().unwrap());
            let err = g.iter().zip(d).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-5, "{act:?}: {err}");
        }
    }
}
