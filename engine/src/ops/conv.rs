//! Convolutions: Conv (N-D: 1-D audio, 2-D images, 3-D; groups, dilations,
//! strides, explicit or auto padding), ConvTranspose and ConvInteger.
//! Reference: ONNX spec Conv-22, ConvTranspose-22, ConvInteger-10 and
//! onnx/reference/ops/op_conv_transpose.py for the padding rules.
//!
//! Conv lowers each (batch, group) to an im2col matrix and one GEMM through
//! `floe_kernels::gemm::sgemm` (f32); other float types use an f64 loop.

use super::{input, opt_input, strides, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};
use floe_kernels::gemm::{sgemm, MatRef};

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
    ConvTranspose { attrs: ConvAttrs, output_padding: Vec<usize>, output_shape: Vec<usize> },
    ConvInteger(ConvAttrs),
}

/// Resolved geometry of one convolution.
struct Geometry {
    kernel: Vec<usize>,
    stride: Vec<usize>,
    dil: Vec<usize>,
    pad_begin: Vec<usize>,
    out: Vec<usize>,
}

fn or_ones(v: &[usize], n: usize) -> Vec<usize> {
    if v.is_empty() {
        vec![1; n]
    } else {
        v.to_vec()
    }
}

/// Output size, begin padding and dilations for a convolution or pooling window.
pub fn conv_geometry(
    input: &[usize],
    kernel: &[usize],
    a: &ConvAttrs,
    ceil_mode: bool,
) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let n = input.len();
    let stride = or_ones(&a.strides, n);
    let dil = or_ones(&a.dilations, n);
    if kernel.len() != n || stride.len() != n || dil.len() != n || stride.contains(&0) || dil.contains(&0) {
        bail!("kernel {kernel:?}, strides {stride:?} or dilations {dil:?} do not fit {n} spatial dims");
    }
    let mut begin = vec![0usize; n];
    let mut out = vec![0usize; n];
    for i in 0..n {
        let ext = dil[i] * (kernel[i].max(1) - 1) + 1;
        match a.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                out[i] = input[i].div_ceil(stride[i]);
                let total = ((out[i].max(1) - 1) * stride[i] + ext).saturating_sub(input[i]);
                begin[i] = if a.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 };
            }
            AutoPad::Valid | AutoPad::NotSet => {
                let (pb, pe) = if a.auto_pad == AutoPad::NotSet && a.pads.len() == 2 * n {
                    (a.pads[i], a.pads[i + n])
                } else {
                    (0, 0)
                };
                begin[i] = pb;
                let span = input[i] + pb + pe;
                if span < ext {
                    return Err(Error::Shape(format!(
                        "window of extent {ext} is larger than padded input {span} on spatial axis {i}"
                    )));
                }
                out[i] = if ceil_mode {
                    let mut o = (span - ext).div_ceil(stride[i]) + 1;
                    // the last window must start inside the input or the begin padding
                    if (o - 1) * stride[i] >= input[i] + pb {
                        o -= 1;
                    }
                    o
                } else {
                    (span - ext) / stride[i] + 1
                };
            }
        }
    }
    Ok((out, begin, dil))
}

fn geometry(x: &[usize], w: &[usize], a: &ConvAttrs) -> Result<Geometry> {
    let spatial = &x[2..];
    let kernel = if a.kernel_shape.is_empty() { w[2..].to_vec() } else { a.kernel_shape.clone() };
    let (out, pad_begin, dil) = conv_geometry(spatial, &kernel, a, false)?;
    Ok(Geometry { stride: or_ones(&a.strides, spatial.len()), kernel, dil, pad_begin, out })
}

/// For each kernel offset and output position, the input offset (or None if padding).
fn im2col_index(x_sp: &[usize], g: &Geometry) -> Vec<Option<usize>> {
    let nk: usize = g.kernel.iter().product();
    let no: usize = g.out.iter().product();
    let ks = strides(&g.kernel);
    let os = strides(&g.out);
    let xs = strides(x_sp);
    let n = x_sp.len();
    let mut idx = Vec::with_capacity(nk * no);
    for k in 0..nk {
        for o in 0..no {
            let mut off = 0usize;
            let mut inside = true;
            for d in 0..n {
                let kd = (k / ks[d]) % g.kernel[d];
                let od = (o / os[d]) % g.out[d];
                let pos = (od * g.stride[d] + kd * g.dil[d]) as isize - g.pad_begin[d] as isize;
                if pos < 0 || pos as usize >= x_sp[d] {
                    inside = false;
                    break;
                }
                off += pos as usize * xs[d];
            }
            idx.push(inside.then_some(off));
        }
    }
    idx
}

fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: &ConvAttrs) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        bail!("Conv needs X [N, C, ...] and W [M, C/group, ...] of the same rank, got {xs:?} and {ws:?}");
    }
    let group = a.group.max(1);
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c != ws[1] * group || m % group != 0 {
        return Err(Error::Shape(format!(
            "Conv: X has {c} channels, W {ws:?} with group {group} expects {}",
            ws[1] * group
        )));
    }
    let g = geometry(xs, ws, a)?;
    if g.kernel != ws[2..] {
        bail!("Conv kernel_shape {:?} differs from W {ws:?}", g.kernel);
    }
    let (cg, mg) = (c / group, m / group);
    let nk: usize = g.kernel.iter().product();
    let no: usize = g.out.iter().product();
    let sp: usize = xs[2..].iter().product();
    let idx = im2col_index(&xs[2..], &g);
    let mut out_shape = vec![n, m];
    out_shape.extend(&g.out);
    let bias = match b {
        Some(b) if b.numel() != m => bail!("Conv bias has {} values for {m} output channels", b.numel()),
        Some(b) => b.to_f64_vec(),
        None => vec![0.0; m],
    };
    if x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        let (xv, wv) = (x.as_slice::<f32>()?, w.as_slice::<f32>()?);
        let mut out = Tensor::zeros(DType::F32, &out_shape)?;
        let o = out.as_mut_slice::<f32>()?;
        let mut col = vec![0f32; cg * nk * no];
        for bi in 0..n {
            for gi in 0..group {
                for ci in 0..cg {
                    let src = &xv[(bi * c + gi * cg + ci) * sp..][..sp];
                    for (k, chunk) in idx.chunks(no).enumerate() {
                        let row = &mut col[(ci * nk + k) * no..][..no];
                        for (r, i) in row.iter_mut().zip(chunk) {
                            *r = i.map_or(0.0, |i| src[i]);
                        }
                    }
                }
                let dst = &mut o[(bi * m + gi * mg) * no..][..mg * no];
                for (mi, row) in dst.chunks_mut(no).enumerate() {
                    row.fill(bias[gi * mg + mi] as f32);
                }
                let wg = MatRef::new(&wv[gi * mg * cg * nk..][..mg * cg * nk], mg, cg * nk);
                sgemm(1.0, wg, MatRef::new(&col, cg * nk, no), 1.0, dst);
            }
        }
        return Ok(out);
    }
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut o = vec![0f64; n * m * no];
    for bi in 0..n {
        for mi in 0..m {
            let gi = mi / mg;
            for oi in 0..no {
                let mut acc = bias[mi];
                for ci in 0..cg {
                    let src = &xv[(bi * c + gi * cg + ci) * sp..][..sp];
                    for k in 0..nk {
                        if let Some(i) = idx[k * no + oi] {
                            acc += src[i] * wv[(mi * cg + ci) * nk + k];
                        }
                    }
                }
                o[(bi * m + mi) * no + oi] = acc;
            }
        }
    }
    dispatch_float!(x.dtype(), T => Tensor::from_vec(&out_shape, o.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>()),
        _ => bail!("Conv expects float inputs, got {}", x.dtype()))
}

fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a: &ConvAttrs,
    out_pad: &[usize],
    out_shape_attr: &[usize],
) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        bail!("ConvTranspose needs X [N, C, ...] and W [C, M/group, ...], got {xs:?} and {ws:?}");
    }
    let nd = xs.len() - 2;
    let group = a.group.max(1);
    let (n, c) = (xs[0], xs[1]);
    if ws[0] != c || c % group != 0 {
        return Err(Error::Shape(format!("ConvTranspose: X has {c} channels, W is {ws:?}")));
    }
    let mg = ws[1];
    let m = mg * group;
    let cg = c / group;
    let kernel = if a.kernel_shape.is_empty() { ws[2..].to_vec() } else { a.kernel_shape.clone() };
    let stride = or_ones(&a.strides, nd);
    let dil = or_ones(&a.dilations, nd);
    let opad = if out_pad.is_empty() { vec![0; nd] } else { out_pad.to_vec() };
    if kernel.len() != nd || stride.len() != nd || dil.len() != nd || opad.len() < nd {
        bail!("ConvTranspose attributes do not fit {nd} spatial dims");
    }
    let ext: Vec<usize> = (0..nd).map(|i| (kernel[i] - 1) * dil[i] + 1).collect();
    let full: Vec<usize> = (0..nd).map(|i| stride[i] * (xs[2 + i] - 1) + opad[i] + ext[i]).collect();
    let (begin, out_sp): (Vec<usize>, Vec<usize>) =
        if a.pads.len() != 2 * nd && matches!(a.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            let target: Vec<usize> = if out_shape_attr.len() == nd {
                out_shape_attr.to_vec()
            } else {
                (0..nd).map(|i| xs[2 + i] * stride[i]).collect()
            };
            let begin = (0..nd)
                .map(|i| {
                    let total = full[i].saturating_sub(target[i]);
                    if a.auto_pad == AutoPad::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    }
                })
                .collect();
            (begin, target)
        } else {
            let pads = if a.pads.len() == 2 * nd { a.pads.clone() } else { vec![0; 2 * nd] };
            let out = if out_shape_attr.len() == nd {
                out_shape_attr.to_vec()
            } else {
                (0..nd).map(|i| full[i].saturating_sub(pads[i] + pads[i + nd])).collect()
            };
            (pads[..nd].to_vec(), out)
        };
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let sp: usize = xs[2..].iter().product();
    let no: usize = out_sp.iter().product();
    let nk: usize = kernel.iter().product();
    let (xst, kst, ost) = (strides(&xs[2..]), strides(&kernel), strides(&out_sp));
    let mut o = vec![0f64; n * m * no];
    for bi in 0..n {
        for ci in 0..c {
            let gi = ci / cg;
            for xi in 0..sp {
                let xval = xv[(bi * c + ci) * sp + xi];
                if xval == 0.0 {
                    continue;
                }
                for k in 0..nk {
                    let mut off = 0usize;
                    let mut inside = true;
                    for d in 0..nd {
                        let p = ((xi / xst[d]) % xs[2 + d] * stride[d] + (k / kst[d]) % kernel[d] * dil[d]) as isize
                            - begin[d] as isize;
                        if p < 0 || p as usize >= out_sp[d] {
                            inside = false;
                            break;
                        }
                        off += p as usize * ost[d];
                    }
                    if !inside {
                        continue;
                    }
                    for mo in 0..mg {
                        let mi = gi * mg + mo;
                        o[(bi * m + mi) * no + off] += xval * wv[(ci * mg + mo) * nk + k];
                    }
                }
            }
        }
    }
    if let Some(b) = b {
        let bv = b.to_f64_vec();
        if bv.len() != m {
            bail!("ConvTranspose bias has {} values for {m} output channels", bv.len());
        }
        for (i, v) in o.iter_mut().enumerate() {
            *v += bv[(i / no) % m];
        }
    }
    let mut shape = vec![n, m];
    shape.extend(&out_sp);
    dispatch_float!(x.dtype(), T => Tensor::from_vec(&shape, o.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>()),
        _ => bail!("ConvTranspose expects float inputs, got {}", x.dtype()))
}

fn conv_integer(x: &Tensor, w: &Tensor, xz: Option<&Tensor>, wz: Option<&Tensor>, a: &ConvAttrs) -> Result<Tensor> {
    let zx = xz.and_then(|t| t.to_f64_vec().first().copied()).unwrap_or(0.0);
    // w's zero point is per tensor or per output channel
    let zw = wz.map(|t| t.to_f64_vec()).unwrap_or_else(|| vec![0.0]);
    let m = w.shape().first().copied().unwrap_or(1);
    if zw.len() != 1 && zw.len() != m {
        bail!("ConvInteger w_zero_point has {} values for {m} output channels", zw.len());
    }
    let per = w.numel() / m.max(1);
    let xf = Tensor::from_vec(x.shape(), x.to_f64_vec().iter().map(|v| v - zx).collect::<Vec<f64>>())?;
    let wf = Tensor::from_vec(
        w.shape(),
        w.to_f64_vec()
            .iter()
            .enumerate()
            .map(|(i, v)| v - zw[if zw.len() == 1 { 0 } else { i / per }])
            .collect::<Vec<f64>>(),
    )?;
    conv(&xf, &wf, None, a)?.cast(DType::I32)
}

impl OpImpl for ConvOp {
    fn name(&self) -> &'static str {
        match self {
            ConvOp::Conv(_) => "Conv",
            ConvOp::ConvTranspose { .. } => "ConvTranspose",
            ConvOp::ConvInteger(_) => "ConvInteger",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let w = inputs.get(1).map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let dtype = if matches!(self, ConvOp::ConvInteger(_)) { Some(DType::I32) } else { x.dtype };
        let shape =
            match (self, x.shape.as_ref().and_then(|s| s.as_fixed()), w.shape.as_ref().and_then(|s| s.as_fixed())) {
                (ConvOp::Conv(a) | ConvOp::ConvInteger(a), Some(xs), Some(ws))
                    if xs.len() >= 3 && ws.len() == xs.len() =>
                {
                    let g = geometry(&xs, &ws, a)?;
                    let mut s = vec![Dim::Fixed(xs[0]), Dim::Fixed(ws[0])];
                    s.extend(g.out.iter().map(|&d| Dim::Fixed(d)));
                    Some(Shape(s))
                }
                _ => None,
            };
        Ok(vec![Fact { dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let w = input(inputs, 1, "W")?;
        Ok(vec![match self {
            ConvOp::Conv(a) => conv(x, w, opt_input(inputs, 2), a)?,
            ConvOp::ConvTranspose { attrs, output_padding, output_shape } => {
                conv_transpose(x, w, opt_input(inputs, 2), attrs, output_padding, output_shape)?
            }
            ConvOp::ConvInteger(a) => conv_integer(x, w, opt_input(inputs, 2), opt_input(inputs, 3), a)?,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pads: Vec<usize>, strides: Vec<usize>) -> ConvAttrs {
        ConvAttrs { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: vec![], pads, strides }
    }

    #[test]
    fn conv1d_with_padding_matches_hand_computed() {
        // x = [1 2 3 4 5], w = [1 0 -1], pad 1: y[i] = x[i-1] - x[i+1]
        let x = Tensor::from_slice(&[1, 1, 5], &[1.0f32, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let w = Tensor::from_slice(&[1, 1, 3], &[1.0f32, 0.0, -1.0]).unwrap();
        let y = conv(&x, &w, None, &attrs(vec![1, 1], vec![])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2.0, -2.0, -2.0, -2.0, 4.0]);
        let y = conv(&x, &w, None, &attrs(vec![1, 1], vec![2])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2.0, -2.0, 4.0]);
    }

    #[test]
    fn transpose_of_stride_two_spreads_inputs() {
        // x = [1 2], w = [1 1], stride 2 -> [1 1 2 2]
        let x = Tensor::from_slice(&[1, 1, 2], &[1.0f32, 2.0]).unwrap();
        let w = Tensor::from_slice(&[1, 1, 2], &[1.0f32, 1.0]).unwrap();
        let y = conv_transpose(&x, &w, None, &attrs(vec![], vec![2]), &[], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn channel_mismatch_is_an_error() {
        let x = Tensor::zeros(DType::F32, &[1, 3, 5]).unwrap();
        let w = Tensor::zeros(DType::F32, &[2, 2, 3]).unwrap();
        assert!(conv(&x, &w, None, &attrs(vec![], vec![])).is_err());
    }
}
