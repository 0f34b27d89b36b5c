//! Normalizations: BatchNormalization (inference), LayerNormalization,
//! InstanceNormalization, RMSNormalization, GroupNormalization,
//! LpNormalization, MeanVarianceNormalization, LRN.
//! Reference: ONNX spec for each op (BatchNormalization-15, LayerNormalization-17,
//! RMSNormalization-23, GroupNormalization-18/21, LRN-13). Statistics are
//! accumulated in f64.

use super::{input, norm_axis, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum NormOp {
    BatchNorm {
        epsilon: f32,
    },
    /// Outputs Y and optionally Mean and InvStdDev.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    InstanceNorm {
        epsilon: f32,
    },
    RmsNorm {
        axis: i64,
        epsilon: f32,
    },
    /// `per_channel_affine`: opset 21 (scale/bias per channel) vs 18 (per group).
    GroupNorm {
        num_groups: usize,
        epsilon: f32,
        per_channel_affine: bool,
    },
    LpNorm {
        axis: i64,
        p: i64,
    },
    MeanVarianceNorm {
        axes: Vec<i64>,
    },
    Lrn {
        alpha: f32,
        beta: f32,
        bias: f32,
        size: usize,
    },
}

fn make(dt: DType, shape: &[usize], v: &[f64]) -> Result<Tensor> {
    dispatch_float!(dt, T => Tensor::from_vec(shape, v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>()),
        _ => bail!("normalization expects a float input, got {dt}"))
}

/// `scale`/`bias` of `n` elements broadcast over the normalised block (or one value).
fn affine(t: Option<&Tensor>, n: usize, what: &str, default: f64) -> Result<Vec<f64>> {
    match t {
        None => Ok(vec![default; n]),
        Some(t) => {
            let v = t.to_f64_vec();
            if v.len() == n {
                Ok(v)
            } else if v.len() == 1 {
                Ok(vec![v[0]; n])
            } else if v.len() < n && n.is_multiple_of(v.len()) {
                // broadcast over leading dims of the normalised block
                Ok((0..n).map(|i| v[i % v.len()]).collect())
            } else {
                Err(Error::Shape(format!("{what} has {} values for a normalised block of {n}", v.len())))
            }
        }
    }
}

/// Normalises each of `rows` contiguous blocks of `n` values: `(x - mean) / sqrt(var + eps)`
/// (or without centring for RMS). Returns normalised values, means and 1/std.
fn normalize_rows(x: &[f64], n: usize, eps: f64, center: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / n.max(1);
    let mut out = vec![0.0; x.len()];
    let (mut means, mut invs) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mean = if center { row.iter().sum::<f64>() / n as f64 } else { 0.0 };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (o, v) in out[r * n..(r + 1) * n].iter_mut().zip(row) {
            *o = (v - mean) * inv;
        }
        means.push(mean);
        invs.push(inv);
    }
    (out, means, invs)
}

fn layer_norm(
    x: &Tensor,
    scale: Option<&Tensor>,
    bias: Option<&Tensor>,
    axis: i64,
    eps: f32,
    rms: bool,
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let n: usize = x.shape()[a..].iter().product();
    let (mut y, means, invs) = normalize_rows(&x.to_f64_vec(), n, eps as f64, !rms);
    let (s, b) = (affine(scale, n, "scale", 1.0)?, affine(bias, n, "bias", 0.0)?);
    for (i, v) in y.iter_mut().enumerate() {
        *v = *v * s[i % n] + b[i % n];
    }
    let mut outs = vec![make(x.dtype(), x.shape(), &y)?];
    if n_out > 1 {
        let mut stat_shape = x.shape()[..a].to_vec();
        stat_shape.extend(std::iter::repeat_n(1, x.rank() - a));
        // statistics are float32 unless the input is double (stash_type default 1)
        let st = if x.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        outs.push(make(st, &stat_shape, &means)?);
        if n_out > 2 {
            outs.push(make(st, &stat_shape, &invs)?);
        }
    }
    Ok(outs)
}

fn batch_norm(x: &Tensor, inputs: &[Option<&Tensor>], eps: f32) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!("BatchNormalization needs [N, C, ...], got {:?}", x.shape());
    }
    let c = x.shape()[1];
    let get = |i: usize, what: &str| -> Result<Vec<f64>> {
        let v = input(inputs, i, what)?.to_f64_vec();
        if v.len() != c {
            return Err(Error::Shape(format!("BatchNormalization {what} has {} values for {c} channels", v.len())));
        }
        Ok(v)
    };
    let (s, b, m, var) = (get(1, "scale")?, get(2, "B")?, get(3, "input_mean")?, get(4, "input_var")?);
    let inner: usize = x.shape()[2..].iter().product();
    let y: Vec<f64> = x
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / inner.max(1)) % c;
            (v - m[ch]) / (var[ch] + eps as f64).sqrt() * s[ch] + b[ch]
        })
        .collect();
    make(x.dtype(), x.shape(), &y)
}

fn instance_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if x.rank() < 3 {
        bail!("InstanceNormalization needs [N, C, spatial...], got {:?}", x.shape());
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let (mut y, _, _) = normalize_rows(&x.to_f64_vec(), inner, eps as f64, true);
    let (s, b) = (affine(Some(scale), c, "scale", 1.0)?, affine(Some(bias), c, "B", 0.0)?);
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / inner) % c;
        *v = *v * s[ch] + b[ch];
    }
    make(x.dtype(), x.shape(), &y)
}

fn group_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, groups: usize, eps: f32, per_channel: bool) -> Result<Tensor> {
    if x.rank() < 2 || groups == 0 || !x.shape()[1].is_multiple_of(groups) {
        bail!("GroupNormalization: {groups} groups do not divide the channels of {:?}", x.shape());
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let block = c / groups * inner;
    let (mut y, _, _) = normalize_rows(&x.to_f64_vec(), block, eps as f64, true);
    let n_aff = if per_channel { c } else { groups };
    let (s, b) = (affine(Some(scale), n_aff, "scale", 1.0)?, affine(Some(bias), n_aff, "bias", 0.0)?);
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / inner.max(1)) % c;
        let k = if per_channel { ch } else { ch / (c / groups) };
        *v = *v * s[k] + b[k];
    }
    make(x.dtype(), x.shape(), &y)
}

fn lp_norm(x: &Tensor, axis: i64, p: i64) -> Result<Tensor> {
    if p != 1 && p != 2 {
        bail!("LpNormalization p must be 1 or 2, got {p}");
    }
    let a = norm_axis(axis, x.rank())?;
    let (n, inner) = (x.shape()[a], x.shape()[a + 1..].iter().product::<usize>());
    let mut v = x.to_f64_vec();
    let outer = v.len() / (n * inner).max(1);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let norm = if p == 1 {
                (0..n).map(|j| v[at(j)].abs()).sum::<f64>()
            } else {
                (0..n).map(|j| v[at(j)] * v[at(j)]).sum::<f64>().sqrt()
            };
            if norm > 0.0 {
                for j in 0..n {
                    v[at(j)] /= norm;
                }
            }
        }
    }
    make(x.dtype(), x.shape(), &v)
}

fn mvn(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let r = x.rank();
    let ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
    let st = super::strides(x.shape());
    let v = x.to_f64_vec();
    // group id of each element: its index with the reduced axes zeroed
    let key =
        |i: usize| -> usize { (0..r).filter(|d| !ax.contains(d)).map(|d| (i / st[d]) % x.shape()[d] * st[d]).sum() };
    let mut sums: std::collections::HashMap<usize, (f64, f64, usize)> = std::collections::HashMap::new();
    for (i, &val) in v.iter().enumerate() {
        let e = sums.entry(key(i)).or_default();
        e.0 += val;
        e.1 += val * val;
        e.2 += 1;
    }
    let y: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &val)| {
            let (s, sq, n) = sums[&key(i)];
            let mean = s / n as f64;
            let var = (sq / n as f64 - mean * mean).max(0.0);
            (val - mean) / (var.sqrt() + 1e-9)
        })
        .collect();
    make(x.dtype(), x.shape(), &y)
}

fn lrn(x: &Tensor, alpha: f32, beta: f32, bias: f32, size: usize) -> Result<Tensor> {
    if x.rank() < 3 || size == 0 {
        bail!("LRN needs [N, C, spatial...] and size >= 1");
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let v = x.to_f64_vec();
    let (lo, hi) = ((size - 1) / 2, size.div_ceil(2) - 1);
    let y: Vec<f64> = (0..v.len())
        .map(|i| {
            let ch = (i / inner) % c;
            let base = i - ch * inner;
            let sq: f64 = (ch.saturating_sub(lo)..=(ch + hi).min(c - 1)).map(|k| v[base + k * inner].powi(2)).sum();
            v[i] / (bias as f64 + alpha as f64 / size as f64 * sq).powf(beta as f64)
        })
        .collect();
    make(x.dtype(), x.shape(), &y)
}

impl OpImpl for NormOp {
    fn name(&self) -> &'static str {
        match self {
            NormOp::BatchNorm { .. } => "BatchNormalization",
            NormOp::LayerNorm { .. } => "LayerNormalization",
            NormOp::InstanceNorm { .. } => "InstanceNormalization",
            NormOp::RmsNorm { .. } => "RMSNormalization",
            NormOp::GroupNorm { .. } => "GroupNormalization",
            NormOp::LpNorm { .. } => "LpNormalization",
            NormOp::MeanVarianceNorm { .. } => "MeanVarianceNormalization",
            NormOp::Lrn { .. } => "LRN",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let mut v = vec![x.clone()];
        if let NormOp::LayerNorm { axis, .. } = self {
            let st = if x.dtype == Some(DType::F64) { DType::F64 } else { DType::F32 };
            let shape = match &x.shape {
                Some(s) => {
                    let a = norm_axis(*axis, s.rank())?;
                    let mut d = s.0[..a].to_vec();
                    d.extend(std::iter::repeat_n(crate::Dim::Fixed(1), s.rank() - a));
                    Some(Shape(d))
                }
                None => None,
            };
            for _ in 1..n {
                v.push(Fact { dtype: Some(st), shape: shape.clone() });
            }
        }
        v.resize(n.max(1), Fact::unknown());
        Ok(v)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        Ok(match self {
            NormOp::BatchNorm { epsilon } => vec![batch_norm(x, inputs, *epsilon)?],
            NormOp::LayerNorm { axis, epsilon } => {
                layer_norm(x, opt_input(inputs, 1), opt_input(inputs, 2), *axis, *epsilon, false, ctx.n_outputs)?
            }
            NormOp::RmsNorm { axis, epsilon } => layer_norm(x, opt_input(inputs, 1), None, *axis, *epsilon, true, 1)?,
            NormOp::InstanceNorm { epsilon } => {
                vec![instance_norm(x, input(inputs, 1, "scale")?, input(inputs, 2, "B")?, *epsilon)?]
            }
            NormOp::GroupNorm { num_groups, epsilon, per_channel_affine } => {
                vec![group_norm(
                    x,
                    input(inputs, 1, "scale")?,
                    input(inputs, 2, "bias")?,
                    *num_groups,
                    *epsilon,
                    *per_channel_affine,
                )?]
            }
            NormOp::LpNorm { axis, p } => vec![lp_norm(x, *axis, *p)?],
            NormOp::MeanVarianceNorm { axes } => vec![mvn(x, axes)?],
            NormOp::Lrn { alpha, beta, bias, size } => vec![lrn(x, *alpha, *beta, *bias, *size)?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_a_row_has_zero_mean_unit_variance() {
        let x = Tensor::from_slice(&[1, 4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let y = layer_norm(&x, None, None, -1, 0.0, false, 1).unwrap();
        // (x - 2.5) / sqrt(1.25)
        let want = [-1.341_640_8f32, -0.447_213_6, 0.447_213_6, 1.341_640_8];
        for (a, b) in y[0].as_slice::<f32>().unwrap().iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn batch_norm_applies_per_channel_statistics() {
        let x = Tensor::from_slice(&[1, 2, 1], &[3.0f32, 3.0]).unwrap();
        let t = |v: [f32; 2]| Tensor::from_slice(&[2], &v).unwrap();
        let (s, b, m, v) = (t([1.0, 2.0]), t([0.0, 1.0]), t([1.0, 0.0]), t([4.0, 1.0]));
        let y = batch_norm(&x, &[Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)], 0.0).unwrap();
        // ch0: (3-1)/2*1+0 = 1; ch1: (3-0)/1*2+1 = 7
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 7.0]);
    }
}
