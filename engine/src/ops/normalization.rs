//! Normalizations: BatchNormalization (inference), LayerNormalization,
//! InstanceNormalization, RMSNormalization, GroupNormalization,
//! LpNormalization, MeanVarianceNormalization, LRN.
//! Reference: ONNX spec for each op (BatchNormalization-15, LayerNormalization-17,
//! InstanceNormalization-22, RMSNormalization-23, GroupNormalization-18/21,
//! LpNormalization-22, MeanVarianceNormalization-13, LRN-13).
//!
//! Statistics are accumulated in f64 (two passes: mean, then squared deviations),
//! which is at least as precise as any `stash_type`. LayerNormalization and
//! RMSNormalization on f32 (what the fusion passes produce) work on the f32 rows
//! in place (RMS through `floe_kernels::norm::rms_norm_row`), also as prepared
//! kernels with constant scale and bias broadcast to the row once at plan time;
//! the other ops and dtypes go through f64 buffers.

use super::broadcast::for_each_offset;
use super::{fixed_shape, input, norm_axis, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
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
    /// Outputs Y and optionally Mean and InvStdDev (float32: `stash_type` 1).
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
        _ => Err(Error::DType { expected: "a float type for normalization".into(), actual: dt }))
}

fn check_float(op: &str, x: &Tensor) -> Result<()> {
    if !x.dtype().is_float() {
        return Err(Error::DType { expected: format!("a float type for {op}"), actual: x.dtype() });
    }
    Ok(())
}

/// `scale`/`bias` broadcast (unidirectionally, numpy rules) to the normalised
/// block shape `block`, as `block.iter().product()` values; `default` when absent.
fn broadcast_affine(t: Option<&Tensor>, block: &[usize], what: &str, default: f64) -> Result<Vec<f64>> {
    let n: usize = block.iter().product();
    let Some(t) = t else { return Ok(vec![default; n]) };
    // leading 1s beyond the block's rank carry no information
    let lead = t.rank().saturating_sub(block.len());
    let ts = &t.shape()[lead..];
    let fits = t.shape()[..lead].iter().all(|&d| d == 1)
        && ts.iter().zip(&block[block.len() - ts.len()..]).all(|(&a, &b)| a == 1 || a == b);
    if !fits {
        return Err(Error::Shape(format!(
            "{what} has shape {:?}, which does not broadcast to the normalised shape {block:?}",
            t.shape()
        )));
    }
    let v = t.to_f64_vec();
    if v.len() == n {
        return Ok(v);
    }
    let mut out = vec![0.0; n];
    for_each_offset(ts, block, |i, o| out[i] = v[o]);
    Ok(out)
}

/// `scale`/`bias` with exactly one value per channel (or group).
fn per_channel(t: &Tensor, n: usize, what: &str, per: &str) -> Result<Vec<f64>> {
    if t.numel() != n {
        return Err(Error::Shape(format!("{what} has shape {:?}, expected [{n}] (one per {per})", t.shape())));
    }
    Ok(t.to_f64_vec())
}

/// Mean and 1/sqrt(var + eps) of one row (`center` false: RMS, mean reported as 0).
fn row_stats(row: impl Iterator<Item = f64> + Clone, n: usize, eps: f64, center: bool) -> (f64, f64) {
    let mean = if center { row.clone().sum::<f64>() / n as f64 } else { 0.0 };
    let var = row.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Normalises each of the contiguous blocks of `n` values: `(x - mean) / sqrt(var + eps)`
/// (or without centring for RMS). Returns normalised values, means and 1/std.
fn normalize_rows(x: &[f64], n: usize, eps: f64, center: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut out = vec![0.0; x.len()];
    let (mut means, mut invs) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let (mean, inv) = row_stats(row.iter().copied(), n, eps, center);
        for (o, v) in out[r * n..(r + 1) * n].iter_mut().zip(row) {
            *o = (v - mean) * inv;
        }
        means.push(mean);
        invs.push(inv);
    }
    (out, means, invs)
}

/// One f32 row of LayerNormalization (`beta` given, possibly zeros) or, with
/// `beta` None, RMSNormalization; returns the row's mean and `1 / sqrt(var + eps)`
/// (RMS: 0 and `1 / sqrt(mean(x^2) + eps)`, computed only if `stats`).
///
/// LayerNormalization keeps f64 statistics ([`floe_kernels::norm::mean_var_f64`]) rather than
/// `floe_kernels::norm::layer_norm_row`: the ONNX reference tests put outputs
/// near zero after cancelling against the bias, where the row kernel's f32
/// statistics (about an ulp off) exceed the tolerance
/// (test_layer_normalization_4d_axis1).
fn norm_row_f32(
    row: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
    stats: bool,
) -> (f32, f32) {
    match beta {
        Some(beta) => {
            let (mean, var) = floe_kernels::norm::mean_var_f64(row);
            let (mean, inv) = (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
            for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
                *o = (v - mean) * inv * g + b;
            }
            (mean, inv)
        }
        None => {
            floe_kernels::norm::rms_norm_row(row, gamma, eps, out);
            if !stats {
                return (0.0, 0.0);
            }
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / row.len().max(1) as f64;
            (0.0, (1.0 / (ms + eps as f64).sqrt()) as f32)
        }
    }
}

/// f32 LayerNormalization or RMSNormalization over rows of `n` for one input
/// shape, with scale (and bias) broadcast to the row at plan time. Writes Y, and
/// Mean and InvStdDev when planned (LayerNormalization only).
struct LayerNormKernel {
    rows: usize,
    n: usize,
    gamma: Vec<f32>,
    /// None: RMSNormalization.
    beta: Option<Vec<f32>>,
    eps: f32,
}

impl Kernel for LayerNormKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "X")?.as_slice::<f32>()?;
        let (y, stats) = outputs.split_first_mut().ok_or_else(|| Error::Invalid("no output to write".into()))?;
        let y = y.as_mut_slice::<f32>()?;
        let total = self.rows * self.n;
        if x.len() != total || y.len() != total || stats.iter().any(|t| t.numel() != self.rows) {
            bail!(
                "planned for {} rows of {}, got X of {} and outputs of {} and {:?} elements",
                self.rows,
                self.n,
                x.len(),
                y.len(),
                stats.iter().map(Tensor::numel).collect::<Vec<_>>()
            );
        }
        let rows = x.chunks_exact(self.n).zip(y.chunks_exact_mut(self.n));
        match stats {
            [] => {
                for (row, out) in rows {
                    norm_row_f32(row, &self.gamma, self.beta.as_deref(), self.eps, out, false);
                }
            }
            [mean, rest @ ..] => {
                let mean = mean.as_mut_slice::<f32>()?;
                let mut inv = match rest.first_mut() {
                    Some(t) => Some(t.as_mut_slice::<f32>()?),
                    None => None,
                };
                for (r, (row, out)) in rows.enumerate() {
                    let (m, i) = norm_row_f32(row, &self.gamma, self.beta.as_deref(), self.eps, out, true);
                    mean[r] = m;
                    if let Some(inv) = inv.as_deref_mut() {
                        inv[r] = i;
                    }
                }
            }
        }
        Ok(())
    }
}

impl LayerNormKernel {
    /// `None` unless X is f32, every scale/bias is a constant that broadcasts to
    /// the normalised block, and the outputs are Y (and for LayerNormalization
    /// f32 Mean, InvStdDev).
    fn plan(
        inputs: &[InferInput<'_>],
        outputs: &[Fact],
        axis: i64,
        eps: f32,
        rms: bool,
    ) -> Result<Option<LayerNormKernel>> {
        let Some(x) = inputs.first() else { return Ok(None) };
        let Some(shape) = fixed_shape(x) else { return Ok(None) };
        let f32_out = outputs.iter().all(|o| o.dtype == Some(DType::F32));
        let max_out = if rms { 1 } else { 3 };
        if x.fact.dtype != Some(DType::F32) || !f32_out || outputs.is_empty() || outputs.len() > max_out {
            return Ok(None);
        }
        let Ok(a) = norm_axis(axis, shape.len()) else { return Ok(None) };
        let (rows, n) = (shape[..a].iter().product::<usize>(), shape[a..].iter().product::<usize>());
        if shape.is_empty() || rows == 0 || n == 0 {
            return Ok(None);
        }
        // A constant, or (None) an omitted optional input; Err(()) for a computed one.
        let konst = |i: usize| -> std::result::Result<Option<&Tensor>, ()> {
            match inputs.get(i) {
                None => Ok(None),
                Some(inp) if inp.fact.dtype.is_none() && inp.fact.shape.is_none() && inp.value.is_none() => Ok(None),
                Some(inp) => inp.value.map(Some).ok_or(()),
            }
        };
        let (Ok(scale), Ok(bias)) = (konst(1), if rms { Ok(None) } else { konst(2) }) else { return Ok(None) };
        if rms && scale.is_none() {
            return Ok(None);
        }
        let block = &shape[a..];
        let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let (Ok(gamma), Ok(beta)) =
            (broadcast_affine(scale, block, "scale", 1.0), broadcast_affine(bias, block, "bias", 0.0))
        else {
            return Ok(None);
        };
        Ok(Some(LayerNormKernel { rows, n, gamma: to_f32(gamma), beta: (!rms).then(|| to_f32(beta)), eps }))
    }
}

/// LayerNormalization (`rms` false) or RMSNormalization over the dims from `axis`
/// on. With `n_out` > 1 also returns Mean and InvStdDev (float32, shaped like X
/// with the normalised dims set to 1).
fn layer_norm(
    x: &Tensor,
    scale: Option<&Tensor>,
    bias: Option<&Tensor>,
    axis: i64,
    eps: f32,
    rms: bool,
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let op = if rms { "RMSNormalization" } else { "LayerNormalization" };
    check_float(op, x)?;
    let a = norm_axis(axis, x.rank())?;
    let block = &x.shape()[a..];
    let n: usize = block.iter().product();
    let (s, b) = (broadcast_affine(scale, block, "scale", 1.0)?, broadcast_affine(bias, block, "bias", 0.0)?);
    let (y, means, invs) = if x.dtype() == DType::F32 {
        let mut y = Tensor::zeros(DType::F32, x.shape())?;
        let (mut means, mut invs) = (Vec::new(), Vec::new());
        let (s, b): (Vec<f32>, Vec<f32>) =
            (s.iter().map(|&v| v as f32).collect(), b.iter().map(|&v| v as f32).collect());
        let rows = x.as_slice::<f32>()?.chunks_exact(n.max(1)).zip(y.as_mut_slice::<f32>()?.chunks_exact_mut(n.max(1)));
        for (row, out) in rows {
            let (mean, inv) = norm_row_f32(row, &s, (!rms).then_some(&b[..]), eps, out, n_out > 1);
            if n_out > 1 {
                means.push(mean as f64);
                invs.push(inv as f64);
            }
        }
        (y, means, invs)
    } else {
        let (mut y, means, invs) = normalize_rows(&x.to_f64_vec(), n, eps as f64, !rms);
        for (i, v) in y.iter_mut().enumerate() {
            *v = *v * s[i % n] + b[i % n];
        }
        (make(x.dtype(), x.shape(), &y)?, means, invs)
    };
    let mut outs = vec![y];
    if n_out > 1 {
        let mut stat_shape = x.shape()[..a].to_vec();
        stat_shape.extend(std::iter::repeat_n(1, x.rank() - a));
        outs.push(make(DType::F32, &stat_shape, &means)?);
        if n_out > 2 {
            outs.push(make(DType::F32, &stat_shape, &invs)?);
        }
    }
    Ok(outs)
}

/// Inference-mode BatchNormalization: `(x - mean) / sqrt(var + eps) * scale + B` per channel.
fn batch_norm(x: &Tensor, inputs: &[Option<&Tensor>], eps: f32) -> Result<Tensor> {
    check_float("BatchNormalization", x)?;
    if x.rank() < 2 {
        return Err(Error::Shape(format!("BatchNormalization needs X [N, C, ...], got {:?}", x.shape())));
    }
    let c = x.shape()[1];
    let get = |i: usize, what: &str| per_channel(input(inputs, i, what)?, c, what, "channel");
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
    check_float("InstanceNormalization", x)?;
    if x.rank() < 3 {
        return Err(Error::Shape(format!("InstanceNormalization needs X [N, C, spatial...], got {:?}", x.shape())));
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let (s, b) = (per_channel(scale, c, "scale", "channel")?, per_channel(bias, c, "B", "channel")?);
    let (mut y, _, _) = normalize_rows(&x.to_f64_vec(), inner, eps as f64, true);
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / inner) % c;
        *v = *v * s[ch] + b[ch];
    }
    make(x.dtype(), x.shape(), &y)
}

fn group_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f32,
    per_channel_affine: bool,
) -> Result<Tensor> {
    check_float("GroupNormalization", x)?;
    if x.rank() < 2 || groups == 0 || !x.shape()[1].is_multiple_of(groups) {
        return Err(Error::Shape(format!(
            "GroupNormalization needs X [N, C, ...] with C a multiple of num_groups {groups}, got {:?}",
            x.shape()
        )));
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let block = c / groups * inner;
    let (n_aff, per) = if per_channel_affine { (c, "channel") } else { (groups, "group") };
    let (s, b) = (per_channel(scale, n_aff, "scale", per)?, per_channel(bias, n_aff, "bias", per)?);
    let (mut y, _, _) = normalize_rows(&x.to_f64_vec(), block, eps as f64, true);
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / inner.max(1)) % c;
        let k = if per_channel_affine { ch } else { ch / (c / groups) };
        *v = *v * s[k] + b[k];
    }
    make(x.dtype(), x.shape(), &y)
}

/// `x / ||x||_p` along `axis` (p = 1 or 2); a zero norm gives 0.
fn lp_norm(x: &Tensor, axis: i64, p: i64) -> Result<Tensor> {
    check_float("LpNormalization", x)?;
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
            for j in 0..n {
                v[at(j)] = if norm > 0.0 { v[at(j)] / norm } else { 0.0 };
            }
        }
    }
    make(x.dtype(), x.shape(), &v)
}

/// MeanVarianceNormalization: `(x - mean) / (sqrt(var) + 1e-9)` over `axes`
/// (the epsilon and its placement follow the op's function body).
fn mvn(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    check_float("MeanVarianceNormalization", x)?;
    let r = x.rank();
    let ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
    let shape = x.shape();
    // statistics live in X's shape with the reduced axes set to 1
    let reduced: Vec<usize> = (0..r).map(|d| if ax.contains(&d) { 1 } else { shape[d] }).collect();
    let groups: usize = reduced.iter().product();
    let mut key = Vec::with_capacity(x.numel());
    for_each_offset(&reduced, shape, |_, o| key.push(o));
    let v = x.to_f64_vec();
    let mut count = vec![0usize; groups];
    let (mut mean, mut var) = (vec![0f64; groups], vec![0f64; groups]);
    for (&k, &val) in key.iter().zip(&v) {
        mean[k] += val;
        count[k] += 1;
    }
    for (m, &c) in mean.iter_mut().zip(&count) {
        *m /= c.max(1) as f64;
    }
    for (&k, &val) in key.iter().zip(&v) {
        var[k] += (val - mean[k]) * (val - mean[k]);
    }
    let y: Vec<f64> = key
        .iter()
        .zip(&v)
        .map(|(&k, &val)| (val - mean[k]) / ((var[k] / count[k].max(1) as f64).sqrt() + 1e-9))
        .collect();
    make(x.dtype(), shape, &y)
}

/// LRN across channels: `x / (bias + alpha / size * sum of x^2 over the window)^beta`,
/// the window running from `c - floor((size - 1) / 2)` to `c + ceil((size - 1) / 2)`.
fn lrn(x: &Tensor, alpha: f32, beta: f32, bias: f32, size: usize) -> Result<Tensor> {
    check_float("LRN", x)?;
    if x.rank() < 2 || size == 0 {
        return Err(Error::Shape(format!(
            "LRN needs X [N, C, ...] and size >= 1, got {:?} and size {size}",
            x.shape()
        )));
    }
    let c = x.shape()[1];
    let inner: usize = x.shape()[2..].iter().product();
    let v = x.to_f64_vec();
    let (lo, hi) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
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
                v.push(Fact { dtype: Some(DType::F32), shape: shape.clone() });
            }
        }
        v.resize(n.max(1), Fact::unknown());
        Ok(v)
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        let k = match self {
            NormOp::LayerNorm { axis, epsilon } => LayerNormKernel::plan(inputs, outputs, *axis, *epsilon, false)?,
            NormOp::RmsNorm { axis, epsilon } => LayerNormKernel::plan(inputs, outputs, *axis, *epsilon, true)?,
            _ => None,
        };
        Ok(k.map(|k| Box::new(k) as Box<dyn Kernel>))
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        Ok(match self {
            NormOp::BatchNorm { epsilon } => vec![batch_norm(x, inputs, *epsilon)?],
            NormOp::LayerNorm { axis, epsilon } => {
                layer_norm(x, opt_input(inputs, 1), opt_input(inputs, 2), *axis, *epsilon, false, ctx.n_outputs)?
            }
            NormOp::RmsNorm { axis, epsilon } => {
                layer_norm(x, Some(input(inputs, 1, "scale")?), None, *axis, *epsilon, true, 1)?
            }
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

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_slice(shape, v).unwrap()
    }

    use crate::ops::layout::tests::{assert_close, planned_vs_eval, Rng};

    #[test]
    fn layer_and_rms_norm_kernels_match_eval() {
        let mut rng = Rng(0x6a09_e667_f3bc_c908);
        for case in 0..40 {
            let rank = 1 + case % 4;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(19)).collect();
            let a = rng.below(rank);
            let block = &shape[a..];
            // scale/bias: full block, its trailing dims, or absent (LayerNorm)
            let affine = |rng: &mut Rng| -> Option<Tensor> {
                match rng.below(3) {
                    0 => None,
                    1 => Some(rng.tensor(block)),
                    _ => Some(rng.tensor(&block[block.len() - 1..])),
                }
            };
            let (scale, bias) = (affine(&mut rng), affine(&mut rng));
            let axis = a as i64 - if case % 2 == 0 { rank as i64 } else { 0 };
            let xs = [rng.tensor(&shape), rng.tensor(&shape)];
            let (op, consts, n_out) = if case % 4 == 3 {
                let scale = scale.or_else(|| Some(rng.tensor(block)));
                (NormOp::RmsNorm { axis, epsilon: 1e-6 }, vec![scale], 1)
            } else {
                (NormOp::LayerNorm { axis, epsilon: 1e-5 }, vec![scale, bias], 1 + case % 3)
            };
            for (got, want) in planned_vs_eval(op.clone().into(), &xs, &consts, n_out) {
                assert_close(&got, &want, 1e-5, &format!("{op:?} on {shape:?}"));
            }
        }
    }

    #[test]
    fn layer_norm_with_a_computed_scale_stays_on_eval() {
        let x = Fact::new(DType::F32, Shape::fixed(&[2, 4]));
        let scale = Fact::new(DType::F32, Shape::fixed(&[4]));
        let ins = [InferInput { fact: &x, value: None }, InferInput { fact: &scale, value: None }];
        let op = NormOp::LayerNorm { axis: -1, epsilon: 1e-5 };
        assert!(op.kernel(&ins, &op.infer(&ins, 1).unwrap()).unwrap().is_none());
        let w = Tensor::from_slice(&[4], &[1.0f32; 4]).unwrap();
        let ins = [ins[0], InferInput { fact: &scale, value: Some(&w) }];
        assert!(op.kernel(&ins, &op.infer(&ins, 1).unwrap()).unwrap().is_some());
    }

    fn close(got: &Tensor, want: &[f32]) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len(), "{got:?}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - *b as f64).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn layer_norm_of_a_row_has_zero_mean_unit_variance() {
        let x = t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let y = layer_norm(&x, None, None, -1, 0.0, false, 3).unwrap();
        // (x - 2.5) / sqrt(1.25)
        close(&y[0], &[-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8]);
        // statistics are float32 and keep the rank, even for a double input
        let y64 = layer_norm(&x.cast(DType::F64).unwrap(), None, None, -1, 0.0, false, 3).unwrap();
        for s in [&y[1], &y64[1]] {
            assert_eq!((s.dtype(), s.shape()), (DType::F32, &[1usize, 1][..]));
        }
        close(&y64[1], &[2.5]);
        close(&y64[2], &[1.0 / 1.25f32.sqrt()]);
    }

    #[test]
    fn layer_norm_scale_broadcasts_over_the_normalised_block() {
        // normalised block [2, 2]; scale [2, 1] scales rows, bias [2] shifts columns
        let x = t(&[1, 2, 2], &[0.0, 2.0, 4.0, 6.0]);
        let (s, b) = (t(&[2, 1], &[1.0, 2.0]), t(&[2], &[0.0, 10.0]));
        let y = layer_norm(&x, Some(&s), Some(&b), 1, 0.0, false, 1).unwrap();
        // mean 3, std sqrt(5): z = [-3, -1, 1, 3] / sqrt(5)
        let z = |v: f32| v / 5f32.sqrt();
        close(&y[0], &[z(-3.0), z(-1.0) + 10.0, 2.0 * z(1.0), 2.0 * z(3.0) + 10.0]);
        assert!(layer_norm(&x, Some(&t(&[3], &[1.0, 1.0, 1.0])), None, 1, 0.0, false, 1).is_err());
    }

    #[test]
    fn rms_norm_divides_by_the_root_mean_square() {
        // rms of [3, 4] = sqrt(12.5)
        let y = layer_norm(&t(&[2], &[3.0, 4.0]), Some(&t(&[2], &[1.0, 2.0])), None, 0, 0.0, true, 1).unwrap();
        let r = 12.5f32.sqrt();
        close(&y[0], &[3.0 / r, 8.0 / r]);
    }

    #[test]
    fn batch_norm_applies_per_channel_statistics() {
        let x = t(&[1, 2, 1], &[3.0, 3.0]);
        let c = |v: [f32; 2]| t(&[2], &v);
        let (s, b, m, v) = (c([1.0, 2.0]), c([0.0, 1.0]), c([1.0, 0.0]), c([4.0, 1.0]));
        let y = batch_norm(&x, &[Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)], 0.0).unwrap();
        // ch0: (3-1)/2*1+0 = 1; ch1: (3-0)/1*2+1 = 7
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 7.0]);
        let short = t(&[1], &[1.0]);
        assert!(batch_norm(&x, &[Some(&x), Some(&short), Some(&b), Some(&m), Some(&v)], 0.0).is_err());
    }

    #[test]
    fn group_norm_affine_is_per_group_in_opset_18_and_per_channel_in_21() {
        // 2 channels in 1 group of [1, 3]: mean 2, var 1 -> [-1, 1]
        let x = t(&[1, 2, 1], &[1.0, 3.0]);
        let y = group_norm(&x, &t(&[1], &[2.0]), &t(&[1], &[0.5]), 1, 0.0, false).unwrap();
        close(&y, &[-1.5, 2.5]);
        let y = group_norm(&x, &t(&[2], &[2.0, 3.0]), &t(&[2], &[0.0, 1.0]), 1, 0.0, true).unwrap();
        close(&y, &[-2.0, 4.0]);
        assert!(group_norm(&x, &t(&[1], &[2.0]), &t(&[1], &[0.5]), 1, 0.0, true).is_err());
    }

    #[test]
    fn lrn_window_of_even_size_reaches_further_up() {
        // size 2: lo = 0, hi = 1 -> channel c sums c and c + 1
        let x = t(&[1, 3, 1], &[1.0, 2.0, 3.0]);
        let y = lrn(&x, 2.0, 1.0, 1.0, 2).unwrap();
        // divisor 1 + (2 / 2) * sum: ch0 1 + 5, ch1 1 + 13, ch2 1 + 9
        close(&y, &[1.0 / 6.0, 2.0 / 14.0, 3.0 / 10.0]);
    }

    #[test]
    fn mvn_and_lp_norm() {
        // MVN over axis 1 of [[1, 3], [2, 2]]: row 0 -> [-1, 1], row 1 has no spread -> 0
        let y = mvn(&t(&[2, 2], &[1.0, 3.0, 2.0, 2.0]), &[1]).unwrap();
        close(&y, &[-1.0, 1.0, 0.0, 0.0]);
        let y = lp_norm(&t(&[2], &[-3.0, 1.0]), 0, 1).unwrap();
        close(&y, &[-0.75, 0.25]);
        let y = lp_norm(&t(&[2], &[3.0, 4.0]), -1, 2).unwrap();
        close(&y, &[0.6, 0.8]);
    }
}
