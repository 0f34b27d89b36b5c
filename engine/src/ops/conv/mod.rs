//! Convolutions: Conv (N-D: 1-D audio, 2-D images, 3-D; groups, dilations,
//! strides, explicit or auto padding), ConvTranspose and ConvInteger.
//! Reference: ONNX spec Conv-22, ConvTranspose-22, ConvInteger-10 (output size
//! and `auto_pad` formulas). Where onnxruntime and the ONNX reference disagree
//! with the spec text (SAME with dilation, ConvTranspose SAME sizes), floe
//! follows the spec text.
//!
//! The sliding-window geometry ([`Window`]) is shared with pooling. Conv lowers
//! each (batch, group) to an im2col matrix and one GEMM through
//! `floe_kernels::gemm::sgemm` (f32; a 1x1 stride-1 unpadded conv multiplies the
//! input in place); ConvTranspose is the adjoint: one GEMM `W^T @ X` per
//! (batch, group) and a col2im scatter-add. Other float types use the same index
//! tables with f64 accumulation, and ConvInteger runs the f64 path on
//! zero-point-shifted integers (exact: every product and sum fits in 2^53).

use super::fused::FusedActivation;
use super::{input, opt_input, strides, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::{checked_numel, Tensor, MAX_TENSOR_BYTES};
use crate::{bail, dispatch_float};
use floe_kernels::gemm::{sgemm, MatRef};

mod kernel;

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Attributes shared by the convolution ops (empty vectors mean "default").
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvAttrs {
    pub auto_pad: AutoPad,
    pub dilations: Vec<usize>,
    pub group: usize,
    pub kernel_shape: Vec<usize>,
    /// `[begin..., end...]`.
    pub pads: Vec<usize>,
    pub strides: Vec<usize>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ConvOp {
    Conv(ConvAttrs),
    /// Conv followed by an activation (fused by `passes::fuse_activation`).
    ConvAct {
        attrs: ConvAttrs,
        activation: FusedActivation,
    },
    /// `output_shape` holds the spatial dims (an `[N, C, spatial...]` value is
    /// accepted too, as onnxruntime does).
    ConvTranspose {
        attrs: ConvAttrs,
        output_padding: Vec<usize>,
        output_shape: Vec<usize>,
    },
    ConvInteger(ConvAttrs),
}

/// The bias of a prepared f32 conv with `m` outputs: the constant input 2, or
/// zeros when it is absent; `None` when it is given at run time or does not fit
/// (the op's `eval` then runs and reports any mismatch).
pub(crate) fn constant_bias(inputs: &[super::InferInput<'_>], m: usize) -> Result<Option<Vec<f32>>> {
    Ok(match inputs.get(2).and_then(|b| b.value) {
        Some(b) if b.dtype() == DType::F32 && b.numel() == m => Some(b.as_slice::<f32>()?.to_vec()),
        Some(_) => None,
        None if inputs.get(2).is_some_and(|b| b.fact.dtype.is_some()) => None,
        None => Some(vec![0.0; m]),
    })
}

/// Marks an im2col / col2im entry that falls into padding.
pub(crate) const PAD: usize = usize::MAX;

/// Where a sliding window (a conv kernel or a pooling window) lands on the
/// spatial dims of an input: output size and padding per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub dil: Vec<usize>,
    pub pad_begin: Vec<usize>,
    /// Padding after the input (auto padding included). With `ceil_mode` the last
    /// window may reach past it; positions there are neither input nor padding.
    pub pad_end: Vec<usize>,
    pub out: Vec<usize>,
}

fn or_ones(v: &[usize], n: usize) -> Vec<usize> {
    if v.is_empty() {
        vec![1; n]
    } else {
        v.to_vec()
    }
}

impl Window {
    /// Resolves the output size and padding of a window over `input` (spatial dims).
    ///
    /// NOTSET/VALID: `out = floor_or_ceil((in + pads - ext) / stride) + 1` where
    /// `ext = (kernel - 1) * dilation + 1`; with `ceil_mode` a last window that would
    /// start in the end padding is dropped. SAME_*: `out = ceil(in / stride)`, the
    /// needed padding split evenly with the odd one at the end (UPPER) or the
    /// beginning (LOWER). Fails when no window fits.
    pub fn new(input: &[usize], kernel: &[usize], a: &ConvAttrs, ceil_mode: bool) -> Result<Window> {
        let n = input.len();
        let stride = or_ones(&a.strides, n);
        let dil = or_ones(&a.dilations, n);
        if kernel.len() != n || stride.len() != n || dil.len() != n {
            bail!("kernel {kernel:?}, strides {stride:?} and dilations {dil:?} must each have {n} values (one per spatial dim)");
        }
        if kernel.contains(&0) || stride.contains(&0) || dil.contains(&0) {
            bail!("kernel {kernel:?}, strides {stride:?} and dilations {dil:?} must be positive");
        }
        let explicit = a.auto_pad == AutoPad::NotSet && !a.pads.is_empty();
        if explicit && a.pads.len() != 2 * n {
            bail!("pads {:?} must have {} values (begin and end per spatial dim)", a.pads, 2 * n);
        }
        let (mut pad_begin, mut pad_end, mut out) = (vec![0; n], vec![0; n], vec![0; n]);
        for i in 0..n {
            // i128 and a bound on extents: absurd attributes are errors, not overflows
            let (inp, s) = (input[i] as i128, stride[i] as i128);
            let ext = bounded(dil[i] as i128 * (kernel[i] as i128 - 1) + 1, "window extent", i)?;
            match a.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = (inp + s - 1) / s;
                    let total = ((o.max(1) - 1) * s + ext - inp).max(0);
                    let begin = if a.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 };
                    pad_begin[i] = bounded(begin, "padding", i)? as usize;
                    pad_end[i] = bounded(total - begin, "padding", i)? as usize;
                    out[i] = o as usize;
                }
                AutoPad::Valid | AutoPad::NotSet => {
                    if explicit {
                        (pad_begin[i], pad_end[i]) = (a.pads[i], a.pads[i + n]);
                    }
                    let span = bounded(inp + pad_begin[i] as i128 + pad_end[i] as i128, "padded input", i)?;
                    let reach = span - ext;
                    let mut o = if ceil_mode {
                        reach.div_euclid(s) + (reach.rem_euclid(s) != 0) as i128
                    } else {
                        reach.div_euclid(s)
                    } + 1;
                    // the last window must start inside the input or the begin padding
                    if ceil_mode && o > 0 && (o - 1) * s >= inp + pad_begin[i] as i128 {
                        o -= 1;
                    }
                    if o <= 0 {
                        return Err(Error::Shape(format!(
                            "window of extent {ext} (kernel {}, dilation {}) does not fit the padded input of size {span} on spatial axis {i}",
                            kernel[i], dil[i]
                        )));
                    }
                    out[i] = o as usize;
                }
            }
        }
        Ok(Window { kernel: kernel.to_vec(), stride, dil, pad_begin, pad_end, out })
    }

    /// For each kernel offset `k` and output position `o`, the flat offset into one
    /// input plane at `[k * no + o]`, or [`PAD`].
    pub(crate) fn im2col_index(&self, x_sp: &[usize]) -> Result<Vec<usize>> {
        let (nk, no) = (self.kernel.iter().product::<usize>(), self.out.iter().product::<usize>());
        let len = guarded_len(&[nk, no], 8)?;
        let (ks, os, xs) = (strides(&self.kernel), strides(&self.out), strides(x_sp));
        let mut idx = Vec::with_capacity(len);
        for k in 0..nk {
            for o in 0..no {
                let mut off = 0usize;
                for d in 0..x_sp.len() {
                    let kd = (k / ks[d]) % self.kernel[d];
                    let od = (o / os[d]) % self.out[d];
                    let pos = (od * self.stride[d] + kd * self.dil[d]).wrapping_sub(self.pad_begin[d]);
                    // positions before the input wrap around to huge values
                    if pos >= x_sp[d] {
                        off = PAD;
                        break;
                    }
                    off += pos * xs[d];
                }
                idx.push(off);
            }
        }
        Ok(idx)
    }
}

/// Largest window extent, padded input or output size along one axis. Far above
/// anything a tensor can hold, and small enough that index arithmetic never overflows.
const MAX_EXTENT: i128 = crate::tensor::MAX_TENSOR_BYTES as i128;

fn bounded(v: i128, what: &str, axis: usize) -> Result<i128> {
    if v > MAX_EXTENT {
        return Err(Error::Shape(format!("{what} {v} on spatial axis {axis} is too large")));
    }
    Ok(v)
}

/// Element count of a scratch buffer, refused when it would exceed the tensor limit.
fn guarded_len(dims: &[usize], elem_size: usize) -> Result<usize> {
    let n = checked_numel(dims)?;
    if n.saturating_mul(elem_size) > MAX_TENSOR_BYTES {
        bail!("convolution scratch of {dims:?} elements is too large");
    }
    Ok(n)
}

fn check_float(op: &str, t: &Tensor, what: &str) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::DType { expected: format!("a float type for {op} {what}"), actual: t.dtype() });
    }
    Ok(())
}

fn bias_values(b: Option<&Tensor>, m: usize, op: &str) -> Result<Vec<f64>> {
    match b {
        Some(b) if b.numel() != m => {
            Err(Error::Shape(format!("{op} bias B has shape {:?}, expected [{m}] (one per output channel)", b.shape())))
        }
        Some(b) => Ok(b.to_f64_vec()),
        None => Ok(vec![0.0; m]),
    }
}

fn to_dtype(dt: DType, shape: &[usize], v: &[f64], op: &str) -> Result<Tensor> {
    dispatch_float!(dt, T => Tensor::from_vec(shape, v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>()),
        _ => bail!("{op} expects float inputs, got {dt}"))
}

/// Checks X `[N, C, spatial...]` against W and returns (group, kernel from W).
fn check_ranks<'a>(
    op: &str,
    xs: &[usize],
    ws: &'a [usize],
    a: &ConvAttrs,
    w_layout: &str,
) -> Result<(usize, &'a [usize])> {
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(Error::Shape(format!(
            "{op} needs X [N, C, spatial...] and W {w_layout} of the same rank (at least 3), got X {xs:?} and W {ws:?}"
        )));
    }
    let kernel = &ws[2..];
    if !a.kernel_shape.is_empty() && a.kernel_shape != kernel {
        return Err(Error::Shape(format!(
            "{op} kernel_shape {:?} differs from the spatial dims of W {ws:?}",
            a.kernel_shape
        )));
    }
    Ok((a.group.max(1), kernel))
}

/// Conv: `Y[n, m] = B[m] + sum over the group's channels and the window of X * W`.
fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: &ConvAttrs) -> Result<Tensor> {
    check_float("Conv", x, "X")?;
    check_float("Conv", w, "W")?;
    let (xs, ws) = (x.shape(), w.shape());
    let (group, kernel) = check_ranks("Conv", xs, ws, a, "[M, C/group, kernel...]")?;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c != ws[1] * group || m % group != 0 {
        return Err(Error::Shape(format!(
            "Conv: X {xs:?} has {c} channels and W {ws:?} has {m} filters; with group {group}, W must be [M, {}, ...] and M a multiple of {group}",
            c / group
        )));
    }
    let g = Window::new(&xs[2..], kernel, a, false)?;
    let (cg, mg) = (c / group, m / group);
    let nk: usize = kernel.iter().product();
    let no: usize = g.out.iter().product();
    let sp: usize = xs[2..].iter().product();
    let mut out_shape = vec![n, m];
    out_shape.extend(&g.out);
    let bias = bias_values(b, m, "Conv")?;
    let idx = g.im2col_index(&xs[2..])?;
    if x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        let (xv, wv) = (x.as_slice::<f32>()?, w.as_slice::<f32>()?);
        let mut out = Tensor::zeros(DType::F32, &out_shape)?;
        let o = out.as_mut_slice::<f32>()?;
        // a 1x1 kernel that reads every input position once in order needs no im2col
        let direct = nk == 1 && no == sp && idx.iter().enumerate().all(|(i, &v)| v == i);
        let mut col = vec![0f32; if direct { 0 } else { guarded_len(&[cg, nk, no], 4)? }];
        for bi in 0..n {
            for gi in 0..group {
                let xg = &xv[(bi * c + gi * cg) * sp..][..cg * sp];
                if !direct {
                    for (ci, src) in xg.chunks_exact(sp.max(1)).enumerate() {
                        for (k, chunk) in idx.chunks_exact(no.max(1)).enumerate() {
                            let row = &mut col[(ci * nk + k) * no..][..no];
                            for (r, &i) in row.iter_mut().zip(chunk) {
                                *r = if i == PAD { 0.0 } else { src[i] };
                            }
                        }
                    }
                }
                let dst = &mut o[(bi * m + gi * mg) * no..][..mg * no];
                for (mi, row) in dst.chunks_exact_mut(no.max(1)).enumerate() {
                    row.fill(bias[gi * mg + mi] as f32);
                }
                let wg = MatRef::new(&wv[gi * mg * cg * nk..][..mg * cg * nk], mg, cg * nk);
                let cols = if direct { MatRef::new(xg, cg, sp) } else { MatRef::new(&col, cg * nk, no) };
                sgemm(1.0, wg, cols, 1.0, dst);
            }
        }
        return Ok(out);
    }
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut o = vec![0f64; guarded_len(&out_shape, 8)?];
    for bi in 0..n {
        for mi in 0..m {
            let gi = mi / mg;
            let dst = &mut o[(bi * m + mi) * no..][..no];
            dst.fill(bias[mi]);
            for ci in 0..cg {
                let src = &xv[(bi * c + gi * cg + ci) * sp..][..sp];
                for k in 0..nk {
                    let wk = wv[(mi * cg + ci) * nk + k];
                    for (d, &i) in dst.iter_mut().zip(&idx[k * no..(k + 1) * no]) {
                        if i != PAD {
                            *d += src[i] * wk;
                        }
                    }
                }
            }
        }
    }
    to_dtype(x.dtype(), &out_shape, &o, "Conv")
}

/// Resolved geometry of a transposed convolution.
#[derive(Debug, PartialEq)]
struct TransposeWindow {
    stride: Vec<usize>,
    dil: Vec<usize>,
    /// Output position of full-output position 0; negative when the requested
    /// output is larger than the full one and extends before it.
    begin: Vec<i64>,
    out: Vec<usize>,
}

/// Output size and begin padding of ConvTranspose (spec ConvTranspose-22):
/// `full = stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1`.
/// Explicit `pads` are cut from `full`. Otherwise (and always when `output_shape`
/// is given: it overrides `pads`) the target is `output_shape`, `in * stride` for
/// SAME_*, or `full`, and `total = full - target` is split with
/// `begin = total / 2` (SAME_UPPER) or `total - total / 2` (else), `/` flooring
/// as the ONNX reference does when the target is larger than `full`.
fn transpose_window(
    x_sp: &[usize],
    kernel: &[usize],
    a: &ConvAttrs,
    out_pad: &[usize],
    out_shape: &[usize],
) -> Result<TransposeWindow> {
    let nd = x_sp.len();
    let stride = or_ones(&a.strides, nd);
    let dil = or_ones(&a.dilations, nd);
    let opad = if out_pad.is_empty() { vec![0; nd] } else { out_pad.to_vec() };
    let target: Option<&[usize]> = match out_shape.len() {
        0 => None,
        l if l == nd => Some(out_shape),
        l if l == nd + 2 => Some(&out_shape[2..]),
        _ => bail!("ConvTranspose output_shape {out_shape:?} must have {nd} values (one per spatial dim)"),
    };
    if kernel.len() != nd || stride.len() != nd || dil.len() != nd || opad.len() != nd {
        bail!(
            "ConvTranspose kernel {kernel:?}, strides {stride:?}, dilations {dil:?} and output_padding {opad:?} must each have {nd} values"
        );
    }
    if kernel.contains(&0) || stride.contains(&0) || dil.contains(&0) || x_sp.contains(&0) {
        bail!("ConvTranspose needs positive kernel {kernel:?}, strides {stride:?}, dilations {dil:?} and input spatial dims {x_sp:?}");
    }
    let explicit = a.auto_pad == AutoPad::NotSet && !a.pads.is_empty() && target.is_none();
    if explicit && a.pads.len() != 2 * nd {
        bail!("ConvTranspose pads {:?} must have {} values (begin and end per spatial dim)", a.pads, 2 * nd);
    }
    let mut begin = vec![0i64; nd];
    let mut out = vec![0usize; nd];
    for i in 0..nd {
        let full = bounded(
            stride[i] as i128 * (x_sp[i] as i128 - 1) + opad[i] as i128 + (kernel[i] as i128 - 1) * dil[i] as i128 + 1,
            "full output",
            i,
        )?;
        if explicit {
            let o = full - a.pads[i] as i128 - a.pads[i + nd] as i128;
            if o <= 0 {
                return Err(Error::Shape(format!(
                    "ConvTranspose pads {:?} remove the whole output ({full} positions) on spatial axis {i}",
                    a.pads
                )));
            }
            (begin[i], out[i]) = (a.pads[i] as i64, o as usize);
        } else {
            let t = match (target, a.auto_pad) {
                (Some(t), _) => t[i] as i128,
                (None, AutoPad::SameUpper | AutoPad::SameLower) => x_sp[i] as i128 * stride[i] as i128,
                (None, _) => full,
            };
            let total = full - bounded(t, "output size", i)?;
            let b = if a.auto_pad == AutoPad::SameUpper { total.div_euclid(2) } else { total - total.div_euclid(2) };
            (begin[i], out[i]) = (b as i64, t as usize);
        }
    }
    Ok(TransposeWindow { stride, dil, begin, out })
}

/// ConvTranspose: every input position scatters `x * W[c, m, k]` to output
/// position `x * stride + k * dilation - begin`.
fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &ConvAttrs,
    out_pad: &[usize],
    out_shape_attr: &[usize],
) -> Result<Tensor> {
    check_float("ConvTranspose", x, "X")?;
    check_float("ConvTranspose", w, "W")?;
    let (xs, ws) = (x.shape(), w.shape());
    let (group, kernel) = check_ranks("ConvTranspose", xs, ws, a, "[C, M/group, kernel...]")?;
    let (n, c) = (xs[0], xs[1]);
    if ws[0] != c || c % group != 0 {
        return Err(Error::Shape(format!(
            "ConvTranspose: X {xs:?} has {c} channels, W {ws:?} must be [{c}, M/group, ...] and {c} a multiple of group {group}"
        )));
    }
    let (cg, mg) = (c / group, ws[1]);
    let m = mg * group;
    let g = transpose_window(&xs[2..], kernel, a, out_pad, out_shape_attr)?;
    let sp: usize = xs[2..].iter().product();
    let no: usize = g.out.iter().product();
    let nk: usize = kernel.iter().product();
    let mut shape = vec![n, m];
    shape.extend(&g.out);
    let bias = bias_values(b, m, "ConvTranspose")?;
    // col2im table: for kernel offset k and input position xi, the output offset
    let (xst, kst, ost) = (strides(&xs[2..]), strides(kernel), strides(&g.out));
    let mut idx = Vec::with_capacity(guarded_len(&[nk, sp], 8)?);
    for k in 0..nk {
        for xi in 0..sp {
            let mut off = 0usize;
            for d in 0..xs.len() - 2 {
                let p =
                    ((xi / xst[d]) % xs[2 + d] * g.stride[d] + (k / kst[d]) % kernel[d] * g.dil[d]) as i64 - g.begin[d];
                if p < 0 || p as usize >= g.out[d] {
                    off = PAD;
                    break;
                }
                off += p as usize * ost[d];
            }
            idx.push(off);
        }
    }
    if x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        let (xv, wv) = (x.as_slice::<f32>()?, w.as_slice::<f32>()?);
        let mut out = Tensor::zeros(DType::F32, &shape)?;
        let o = out.as_mut_slice::<f32>()?;
        let mut cols = vec![0f32; guarded_len(&[mg, nk, sp], 4)?];
        for bi in 0..n {
            for gi in 0..group {
                // cols [mg * nk, sp] = W_g^T @ X_g, with W_g [cg, mg * nk] and X_g [cg, sp]
                let wg = MatRef::new(&wv[gi * cg * mg * nk..][..cg * mg * nk], cg, mg * nk).t();
                let xg = MatRef::new(&xv[(bi * c + gi * cg) * sp..][..cg * sp], cg, sp);
                sgemm(1.0, wg, xg, 0.0, &mut cols);
                for mo in 0..mg {
                    let mi = gi * mg + mo;
                    let dst = &mut o[(bi * m + mi) * no..][..no];
                    dst.fill(bias[mi] as f32);
                    for k in 0..nk {
                        let row = &cols[(mo * nk + k) * sp..][..sp];
                        for (&v, &i) in row.iter().zip(&idx[k * sp..(k + 1) * sp]) {
                            if i != PAD {
                                dst[i] += v;
                            }
                        }
                    }
                }
            }
        }
        return Ok(out);
    }
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut o = vec![0f64; guarded_len(&shape, 8)?];
    for bi in 0..n {
        for mi in 0..m {
            let (gi, mo) = (mi / mg, mi % mg);
            let dst = &mut o[(bi * m + mi) * no..][..no];
            dst.fill(bias[mi]);
            for ci in gi * cg..(gi + 1) * cg {
                let src = &xv[(bi * c + ci) * sp..][..sp];
                for k in 0..nk {
                    let wk = wv[(ci * mg + mo) * nk + k];
                    for (&v, &i) in src.iter().zip(&idx[k * sp..(k + 1) * sp]) {
                        if i != PAD {
                            dst[i] += v * wk;
                        }
                    }
                }
            }
        }
    }
    to_dtype(x.dtype(), &shape, &o, "ConvTranspose")
}

/// ConvInteger: Conv of `(x - x_zero_point)` and `(w - w_zero_point)` into int32.
/// `x_zero_point` is per tensor; `w_zero_point` per tensor or per output channel.
fn conv_integer(x: &Tensor, w: &Tensor, xz: Option<&Tensor>, wz: Option<&Tensor>, a: &ConvAttrs) -> Result<Tensor> {
    for (t, what) in [(Some(x), "x"), (Some(w), "w"), (xz, "x_zero_point"), (wz, "w_zero_point")] {
        if let Some(t) = t {
            if !matches!(t.dtype(), DType::U8 | DType::I8) {
                return Err(Error::DType {
                    expected: format!("uint8 or int8 for ConvInteger {what}"),
                    actual: t.dtype(),
                });
            }
        }
    }
    let zx = match xz.map(|t| t.to_f64_vec()) {
        None => 0.0,
        Some(v) if v.len() == 1 => v[0],
        Some(v) => bail!("ConvInteger x_zero_point must be a single value, got {} values", v.len()),
    };
    let m = w.shape().first().copied().unwrap_or(0);
    let zw = wz.map(|t| t.to_f64_vec()).unwrap_or_else(|| vec![0.0]);
    if zw.len() != 1 && zw.len() != m {
        return Err(Error::Shape(format!(
            "ConvInteger w_zero_point has {} values, expected 1 or {m} (one per output channel)",
            zw.len()
        )));
    }
    let per = w.numel() / m.max(1);
    let xf: Vec<f64> = x.to_f64_vec().iter().map(|v| v - zx).collect();
    let wf: Vec<f64> =
        w.to_f64_vec().iter().enumerate().map(|(i, v)| v - zw[if zw.len() == 1 { 0 } else { i / per }]).collect();
    let y = conv(&Tensor::from_vec(x.shape(), xf)?, &Tensor::from_vec(w.shape(), wf)?, None, a)?;
    y.cast(DType::I32)
}

/// `[N, M, spatial...]` from fact shapes: N as given, M and spatial sizes when fixed.
fn infer_shape(op: &ConvOp, x: &Shape, w: &Shape) -> Result<Option<Shape>> {
    let Some(ws) = w.as_fixed() else { return Ok(None) };
    let Some(x_sp) = x.0.get(2..).and_then(|s| Shape(s.to_vec()).as_fixed()) else {
        return Ok(symbolic_spatial(op, x, &ws));
    };
    if x.rank() < 3 || ws.len() != x.rank() {
        return Ok(None);
    }
    let (m, out) = match op {
        ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. } | ConvOp::ConvInteger(a) => {
            (ws[0], Window::new(&x_sp, &ws[2..], a, false)?.out)
        }
        ConvOp::ConvTranspose { attrs, output_padding, output_shape } => {
            (ws[1] * attrs.group.max(1), transpose_window(&x_sp, &ws[2..], attrs, output_padding, output_shape)?.out)
        }
    };
    let mut s = vec![x.0[0].clone(), Dim::Fixed(m)];
    s.extend(out.into_iter().map(Dim::Fixed));
    Ok(Some(Shape(s)))
}

/// A convolution over symbolic spatial dims (a time axis `T`): each symbolic
/// dim stays the same symbol when the output is as long as the input for any
/// length (stride 1, padding = kernel extent - 1), else becomes unknown.
fn symbolic_spatial(op: &ConvOp, x: &Shape, ws: &[usize]) -> Option<Shape> {
    let (ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. } | ConvOp::ConvInteger(a)) = op else { return None };
    if x.rank() < 3 || ws.len() != x.rank() {
        return None;
    }
    let probe = |n: usize| -> Option<Vec<usize>> {
        let sp: Vec<usize> = x.0[2..].iter().map(|d| d.fixed().unwrap_or(n)).collect();
        Window::new(&sp, &ws[2..], a, false).ok().map(|w| w.out)
    };
    let (o1, o2) = (probe(1000)?, probe(1001)?);
    let mut s = vec![x.0[0].clone(), Dim::Fixed(ws[0])];
    for (i, d) in x.0[2..].iter().enumerate() {
        s.push(match d {
            Dim::Fixed(_) => Dim::Fixed(o1[i]),
            Dim::Sym(_) if o1[i] == 1000 && o2[i] == 1001 => d.clone(),
            _ => Dim::Unknown,
        });
    }
    Some(Shape(s))
}

impl OpImpl for ConvOp {
    fn name(&self) -> &'static str {
        match self {
            ConvOp::Conv(_) | ConvOp::ConvAct { .. } => "Conv",
            ConvOp::ConvTranspose { .. } => "ConvTranspose",
            ConvOp::ConvInteger(_) => "ConvInteger",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let w = inputs.get(1).map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let dtype = if matches!(self, ConvOp::ConvInteger(_)) { Some(DType::I32) } else { x.dtype };
        let shape = match (&x.shape, &w.shape) {
            (Some(xs), Some(ws)) => infer_shape(self, xs, ws)?,
            _ => None,
        };
        Ok(vec![Fact { dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let w = input(inputs, 1, "W")?;
        Ok(vec![match self {
            ConvOp::Conv(a) => conv(x, w, opt_input(inputs, 2), a)?,
            ConvOp::ConvAct { attrs, activation } => activation.apply(conv(x, w, opt_input(inputs, 2), attrs)?)?,
            ConvOp::ConvTranspose { attrs, output_padding, output_shape } => {
                conv_transpose(x, w, opt_input(inputs, 2), attrs, output_padding, output_shape)?
            }
            ConvOp::ConvInteger(a) => conv_integer(x, w, opt_input(inputs, 2), opt_input(inputs, 3), a)?,
        }])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn super::Kernel>>> {
        match self {
            ConvOp::Conv(a) => kernel::prepare(a, FusedActivation::None, inputs),
            ConvOp::ConvAct { attrs, activation } => kernel::prepare(attrs, *activation, inputs),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pads: Vec<usize>, strides: Vec<usize>) -> ConvAttrs {
        ConvAttrs { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: vec![], pads, strides }
    }

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_slice(shape, v).unwrap()
    }

    #[test]
    fn conv1d_with_padding_matches_hand_computed() {
        // x = [1 2 3 4 5], w = [1 0 -1], pad 1: y[i] = x[i-1] - x[i+1]
        let x = t32(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = t32(&[1, 1, 3], &[1.0, 0.0, -1.0]);
        let y = conv(&x, &w, None, &attrs(vec![1, 1], vec![])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2.0, -2.0, -2.0, -2.0, 4.0]);
        let y = conv(&x, &w, None, &attrs(vec![1, 1], vec![2])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2.0, -2.0, 4.0]);
        // the f64 loop gives the same numbers as the GEMM path
        let y = conv(&x.cast(DType::F64).unwrap(), &w.cast(DType::F64).unwrap(), None, &attrs(vec![1, 1], vec![2]));
        assert_eq!(y.unwrap().as_slice::<f64>().unwrap(), &[-2.0, -2.0, 4.0]);
    }

    #[test]
    fn grouped_dilated_conv_with_bias() {
        // two groups of one channel; dilation 2 makes [a, b] read x[i] and x[i+2]
        let x = t32(&[1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
        let w = t32(&[2, 1, 2], &[1.0, 1.0, 1.0, -1.0]);
        let b = t32(&[2], &[0.5, 0.0]);
        let mut a = attrs(vec![], vec![]);
        a.group = 2;
        a.dilations = vec![2];
        let y = conv(&x, &w, Some(&b), &a).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[4.5, 6.5, -20.0, -20.0]);
    }

    #[test]
    fn pointwise_conv_multiplies_channels_in_place() {
        // 1x1 kernel: y[m] = sum_c w[m, c] * x[c]
        let x = t32(&[1, 2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w = t32(&[1, 2, 1, 1], &[1.0, -1.0]);
        let y = conv(&x, &w, None, &attrs(vec![], vec![])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-3.0, -3.0, -3.0]);
    }

    #[test]
    fn same_lower_puts_the_odd_padding_first() {
        // in 4, kernel 2, stride 1: one pad; SAME_LOWER puts it at the beginning
        let mut a = attrs(vec![], vec![]);
        a.auto_pad = AutoPad::SameLower;
        let g = Window::new(&[4], &[2], &a, false).unwrap();
        assert_eq!((g.out, g.pad_begin, g.pad_end), (vec![4], vec![1], vec![0]));
        a.auto_pad = AutoPad::SameUpper;
        let g = Window::new(&[5], &[3], &ConvAttrs { strides: vec![2], ..a }, false).unwrap();
        // out = ceil(5 / 2) = 3, total = (3 - 1) * 2 + 3 - 5 = 2
        assert_eq!((g.out, g.pad_begin, g.pad_end), (vec![3], vec![1], vec![1]));
    }

    #[test]
    fn ceil_mode_keeps_a_window_that_starts_inside_the_input() {
        // kernel 3, dilation 2: extent 5. in 6, stride 2: floor((6 - 5) / 2) + 1 = 1
        let a = ConvAttrs { strides: vec![2], dilations: vec![2], ..attrs(vec![], vec![]) };
        assert_eq!(Window::new(&[6], &[3], &a, false).unwrap().out, vec![1]);
        // ceil((6 - 5) / 2) + 1 = 2: the second window starts at 2, inside the input
        assert_eq!(Window::new(&[6], &[3], &a, true).unwrap().out, vec![2]);
        // in 3 + begin pad 1 < extent 5: no window in floor mode; in ceil mode one,
        // starting in the begin padding and reaching past the input
        let a = ConvAttrs { pads: vec![1, 0], strides: vec![3], dilations: vec![2], ..attrs(vec![], vec![]) };
        assert!(Window::new(&[3], &[3], &a, false).is_err());
        assert_eq!(Window::new(&[3], &[3], &a, true).unwrap().out, vec![1]);
    }

    #[test]
    fn transpose_of_stride_two_spreads_inputs() {
        // x = [1 2], w = [1 1], stride 2 -> [1 1 2 2]
        let x = t32(&[1, 1, 2], &[1.0, 2.0]);
        let w = t32(&[1, 1, 2], &[1.0, 1.0]);
        let y = conv_transpose(&x, &w, None, &attrs(vec![], vec![2]), &[], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn transpose_with_groups_and_bias() {
        // group 2: channel 0 -> output 0 with w [1 2], channel 1 -> output 1 with w [3 4]
        let x = t32(&[1, 2, 2], &[1.0, 2.0, 1.0, -1.0]);
        let w = t32(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = t32(&[2], &[0.0, 1.0]);
        let a = ConvAttrs { group: 2, ..attrs(vec![], vec![]) };
        let y = conv_transpose(&x, &w, Some(&b), &a, &[], &[]).unwrap();
        // out0 = [1, 2+2, 4] ; out1 = [3, 4-3, -4] + 1
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 4.0, 4.0, 4.0, 2.0, -3.0]);
        let y = conv_transpose(&x.cast(DType::F64).unwrap(), &w.cast(DType::F64).unwrap(), Some(&b), &a, &[], &[]);
        assert_eq!(y.unwrap().as_slice::<f64>().unwrap(), &[1.0, 4.0, 4.0, 4.0, 2.0, -3.0]);
    }

    #[test]
    fn transpose_output_shape_places_the_odd_crop_at_the_beginning() {
        // full output [1 1 2 2] (stride 2); output_shape 3 crops one: NOTSET puts
        // total - total/2 = 1 at the beginning -> [1 2 2]
        let x = t32(&[1, 1, 2], &[1.0, 2.0]);
        let w = t32(&[1, 1, 2], &[1.0, 1.0]);
        let y = conv_transpose(&x, &w, None, &attrs(vec![], vec![2]), &[], &[3]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 2.0, 2.0]);
        // pads [0, 1] alone crop the end; with output_shape they are ignored
        let y = conv_transpose(&x, &w, None, &attrs(vec![0, 1], vec![2]), &[], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.0, 2.0]);
        let y = conv_transpose(&x, &w, None, &attrs(vec![0, 1], vec![2]), &[], &[3]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 2.0, 2.0]);
        // SAME_UPPER with stride 3: target 2 * 3 = 6 > full 5 -> total -1, begin floor(-1/2) = -1
        let a = ConvAttrs { auto_pad: AutoPad::SameUpper, ..attrs(vec![], vec![3]) };
        let y = conv_transpose(&x, &w, None, &a, &[], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 1.0, 1.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn conv_integer_subtracts_zero_points() {
        // x - 2 = [-1 0 1 2], w - (-1) = [1 2]: y = [-1*1+0*2, 0+2, 1+4]
        let x = Tensor::from_slice(&[1, 1, 4], &[1u8, 2, 3, 4]).unwrap();
        let w = Tensor::from_slice(&[1, 1, 2], &[0i8, 1]).unwrap();
        let (xz, wz) = (Tensor::scalar(2u8), Tensor::scalar(-1i8));
        let y = conv_integer(&x, &w, Some(&xz), Some(&wz), &attrs(vec![], vec![])).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[-1, 2, 5]);
    }

    #[test]
    fn malformed_shapes_are_errors_not_panics() {
        let x = Tensor::zeros(DType::F32, &[1, 3, 5]).unwrap();
        let w = Tensor::zeros(DType::F32, &[2, 2, 3]).unwrap();
        assert!(conv(&x, &w, None, &attrs(vec![], vec![])).is_err());
        let w = Tensor::zeros(DType::F32, &[2, 3, 3]).unwrap();
        assert!(conv(&x, &w, None, &attrs(vec![1], vec![])).is_err(), "pads of the wrong length");
        assert!(conv(&x, &w, None, &attrs(vec![], vec![0])).is_err(), "zero stride");
        assert!(conv(&x, &Tensor::zeros(DType::F32, &[2, 3, 7]).unwrap(), None, &attrs(vec![], vec![])).is_err());
        let bad_kernel = ConvAttrs { kernel_shape: vec![5], ..attrs(vec![], vec![]) };
        assert!(conv(&x, &w, None, &bad_kernel).is_err());
        let wt = Tensor::zeros(DType::F32, &[3, 1, 3]).unwrap();
        assert!(conv_transpose(&x, &wt, None, &bad_kernel, &[], &[]).is_err());
        let wt0 = Tensor::zeros(DType::F32, &[3, 1, 0]).unwrap();
        assert!(conv_transpose(&x, &wt0, None, &attrs(vec![], vec![]), &[], &[]).is_err());
        let x0 = Tensor::zeros(DType::F32, &[1, 3, 0]).unwrap();
        assert!(conv_transpose(&x0, &wt, None, &attrs(vec![], vec![]), &[], &[]).is_err());
        // full output 5 - 1 + 3 = 7 positions, pads remove 8
        assert!(conv_transpose(&x, &wt, None, &attrs(vec![4, 4], vec![]), &[], &[]).is_err());
        let huge = ConvAttrs { dilations: vec![usize::MAX], ..attrs(vec![], vec![]) };
        assert!(conv(&x, &w, None, &huge).is_err());
        assert!(conv_transpose(&x, &wt, None, &huge, &[], &[]).is_err());
        assert!(conv_transpose(&x, &wt, None, &attrs(vec![], vec![usize::MAX]), &[], &[]).is_err());
        let xi = Tensor::zeros(DType::I32, &[1, 3, 5]).unwrap();
        assert!(conv(&xi, &w, None, &attrs(vec![], vec![])).is_err());
    }

    #[test]
    fn infer_keeps_a_symbolic_batch() {
        let x = Fact::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(3), Dim::Fixed(5)]));
        let w = Fact::new(DType::F32, Shape::fixed(&[4, 3, 3]));
        let ins = [InferInput { fact: &x, value: None }, InferInput { fact: &w, value: None }];
        let f = ConvOp::Conv(attrs(vec![1, 1], vec![2])).infer(&ins, 1).unwrap();
        assert_eq!(f[0].shape, Some(Shape(vec![Dim::Sym("N".into()), Dim::Fixed(4), Dim::Fixed(3)])));
        let ct = ConvOp::ConvTranspose { attrs: attrs(vec![], vec![2]), output_padding: vec![1], output_shape: vec![] };
        let wt = Fact::new(DType::F32, Shape::fixed(&[3, 2, 3]));
        let f = ct.infer(&[ins[0], InferInput { fact: &wt, value: None }], 1).unwrap();
        // 2 * (5 - 1) + 1 + 3 = 12
        assert_eq!(f[0].shape, Some(Shape(vec![Dim::Sym("N".into()), Dim::Fixed(2), Dim::Fixed(12)])));
    }
}
