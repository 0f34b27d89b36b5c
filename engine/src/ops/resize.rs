//! Resize (opsets 10-19) and Upsample (7, 9): nearest, N-D linear and cubic
//! interpolation, with or without an antialiasing filter when downscaling.
//!
//! Interpolation is separable, so the tensor is resized one axis at a time: for each
//! output position along the axis, the coordinate transformation gives a source
//! coordinate, and a small table of (source index, weight) pairs is applied to every
//! line along that axis. The weights and neighbour selection follow the ONNX reference
//! implementation (`onnx/reference/ops/op_resize.py`), which produced the conformance
//! data: edge-clamped neighbours, `exclude_outside` renormalisation, `tf_crop_and_resize`
//! extrapolation. Values are computed in f64; integer outputs round and saturate.
//! Reference: ONNX operator spec, Resize-19 and Upsample-9.

use super::{input, norm_axis, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::{checked_numel, Tensor, MAX_TENSOR_BYTES};
use crate::{bail, dispatch_numeric};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InterpMode {
    Nearest,
    Linear,
    Cubic,
}

/// How an output index maps to a source coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// Resize-11 only: `(y + 0.5) / scale`.
    TfHalfPixelForNn,
    TfCropAndResize,
}

/// Which neighbour `nearest` picks for a fractional coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Upsample and Resize-10: floor when upscaling, ceil when downscaling (what
    /// onnxruntime does for those versions).
    Legacy,
}

/// Opset 18: how `sizes` is honoured over `axes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Attributes shared by Resize and Upsample.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResizeAttrs {
    pub mode: InterpMode,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    /// Axes that `roi`, `scales` and `sizes` refer to (all axes if `None`).
    pub axes: Option<Vec<i64>>,
    pub policy: AspectPolicy,
}

impl ResizeAttrs {
    /// The semantics of Upsample-7/9 and Resize-10: asymmetric coordinates.
    pub fn legacy(mode: InterpMode) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord: CoordMode::Asymmetric,
            nearest: NearestMode::Legacy,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            policy: AspectPolicy::Stretch,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ResizeOp {
    /// Resize-11+: inputs X, roi, scales, sizes (all but X optional).
    Resize(ResizeAttrs),
    /// Resize-10: inputs X, scales.
    Resize10(ResizeAttrs),
    /// Upsample: scales from the attribute (opset 7) or input 1 (opset 9).
    Upsample { attrs: ResizeAttrs, scales: Option<Vec<f32>> },
}

/// How the output size along each axis is requested.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Scales(&'a [f64]),
    Sizes(&'a [i64]),
}

/// Per-axis scales and output sizes for an input of shape `dims`.
pub fn output_geometry(dims: &[usize], a: &ResizeAttrs, target: Target<'_>) -> Result<(Vec<f64>, Vec<usize>)> {
    let r = dims.len();
    let axes = resolve_axes(a, r)?;
    let given = match target {
        Target::Scales(s) => s.len(),
        Target::Sizes(s) => s.len(),
    };
    if given != axes.len() {
        return Err(Error::Shape(format!(
            "Resize needs one {} per resized axis ({} for input {dims:?}), got {given}",
            if matches!(target, Target::Scales(_)) { "scale" } else { "size" },
            axes.len()
        )));
    }
    let mut scales = vec![1.0f64; r];
    let mut out = dims.to_vec();
    match target {
        Target::Scales(s) => {
            for (&ax, &sc) in axes.iter().zip(s) {
                if !(sc > 0.0 && sc.is_finite()) {
                    bail!("Resize scales must be positive, got {sc} for axis {ax}");
                }
                scales[ax] = sc;
                let o = (sc * dims[ax] as f64).floor();
                if o > MAX_TENSOR_BYTES as f64 {
                    bail!("Resize output dim {o} for axis {ax} is too large");
                }
                out[ax] = o as usize;
            }
        }
        Target::Sizes(s) => {
            for (&ax, &sz) in axes.iter().zip(s) {
                if sz < 0 {
                    bail!("Resize sizes must be >= 0, got {sz} for axis {ax}");
                }
                if dims[ax] == 0 && sz > 0 {
                    bail!("Resize cannot resize empty axis {ax} to {sz}");
                }
                out[ax] = sz as usize;
                scales[ax] = if dims[ax] == 0 { 1.0 } else { sz as f64 / dims[ax] as f64 };
            }
            if a.policy != AspectPolicy::Stretch && !axes.is_empty() {
                let pick = axes.iter().map(|&ax| scales[ax]);
                let s = if a.policy == AspectPolicy::NotLarger {
                    pick.fold(f64::INFINITY, f64::min)
                } else {
                    pick.fold(0.0, f64::max)
                };
                for &ax in &axes {
                    scales[ax] = s;
                    // round half up, as the spec writes it
                    out[ax] = (s * dims[ax] as f64 + 0.5).floor() as usize;
                }
            }
        }
    }
    Ok((scales, out))
}

fn resolve_axes(a: &ResizeAttrs, r: usize) -> Result<Vec<usize>> {
    match &a.axes {
        None => Ok((0..r).collect()),
        Some(ax) => {
            let mut v = Vec::with_capacity(ax.len());
            for &x in ax {
                let n = norm_axis(x, r)?;
                if v.contains(&n) {
                    bail!("Resize axes {ax:?} repeat axis {n}");
                }
                v.push(n);
            }
            Ok(v)
        }
    }
}

/// Interpolation weights for a fractional position `ratio` in (0, 1] between two
/// source pixels (ratio 1 = exactly on a pixel).
fn coeffs(a: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    let exact = ratio == 1.0;
    match a.mode {
        InterpMode::Nearest => {
            let ceil = match a.nearest {
                _ if exact => true,
                NearestMode::RoundPreferFloor => ratio > 0.5,
                NearestMode::RoundPreferCeil => ratio >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => true,
                NearestMode::Legacy => scale < 1.0,
            };
            if ceil {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        InterpMode::Linear if a.antialias => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let n = 2 - 2 * start;
            let c: Vec<f64> =
                (start..start + n).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect();
            normalized(c)
        }
        InterpMode::Linear => vec![1.0 - ratio, ratio],
        InterpMode::Cubic => {
            let ca = a.cubic_coeff_a as f64;
            let cubic = |x: f64| {
                let x = x.abs();
                if x <= 1.0 {
                    ((ca + 2.0) * x - (ca + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    ((ca * x - 5.0 * ca) * x + 8.0 * ca) * x - 4.0 * ca
                } else {
                    0.0
                }
            };
            if a.antialias {
                let s = scale.min(1.0);
                let start = (-2.0 / s).floor() as i64 + 1;
                let end = 2 - start;
                normalized((start..end).map(|i| cubic(s * (i as f64 - ratio))).collect())
            } else {
                vec![cubic(ratio + 1.0), cubic(ratio), cubic(1.0 - ratio), cubic(2.0 - ratio)]
            }
        }
    }
}

fn normalized(mut c: Vec<f64>) -> Vec<f64> {
    let s: f64 = c.iter().sum();
    if s != 0.0 {
        c.iter_mut().for_each(|v| *v /= s);
    }
    c
}

/// What one output position along an axis reads: `None` = extrapolation value.
type Taps = Option<Vec<(usize, f64)>>;

/// The taps of every output position along one axis.
fn axis_taps(a: &ResizeAttrs, in_len: usize, out_len: usize, scale: f64, roi: (f64, f64)) -> Vec<Taps> {
    let inf = in_len as f64;
    let out_w = scale * inf;
    (0..out_len)
        .map(|y| {
            let yf = y as f64;
            let x = match a.coord {
                CoordMode::HalfPixel => (yf + 0.5) / scale - 0.5,
                CoordMode::HalfPixelSymmetric => {
                    let adjustment = out_len as f64 / out_w;
                    inf / 2.0 * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
                }
                CoordMode::PytorchHalfPixel => {
                    if out_len > 1 {
                        (yf + 0.5) / scale - 0.5
                    } else {
                        0.0
                    }
                }
                CoordMode::AlignCorners => {
                    if out_w == 1.0 {
                        0.0
                    } else {
                        yf * (inf - 1.0) / (out_w - 1.0)
                    }
                }
                CoordMode::Asymmetric => yf / scale,
                CoordMode::TfHalfPixelForNn => (yf + 0.5) / scale,
                CoordMode::TfCropAndResize => {
                    let x = if out_w == 1.0 {
                        (roi.1 - roi.0) * (inf - 1.0) / 2.0
                    } else {
                        yf * (roi.1 - roi.0) * (inf - 1.0) / (out_w - 1.0)
                    };
                    let x = x + roi.0 * (inf - 1.0);
                    if x < 0.0 || x > inf - 1.0 {
                        return None;
                    }
                    x
                }
            };
            let fl = x.floor();
            let ratio = if x == fl { 1.0 } else { x - fl };
            let mut c = coeffs(a, ratio, scale);
            let n = c.len() as i64;
            // the n source pixels nearest to x (ties to the lower one), edge-clamped
            let pad = (n + 1) / 2;
            let xp = x + pad as f64;
            let p = xp.floor();
            let frac = xp - p;
            let offset = if n % 2 == 0 {
                if frac == 0.0 {
                    -(n / 2)
                } else {
                    -(n / 2) + 1
                }
            } else {
                let base = -((n - 1) / 2);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1
                }
            };
            let start = (p as i64).saturating_add(offset).saturating_sub(pad);
            if a.exclude_outside {
                for (k, v) in c.iter_mut().enumerate() {
                    let i = start.saturating_add(k as i64);
                    if i < 0 || i >= in_len as i64 {
                        *v = 0.0;
                    }
                }
                c = normalized(c);
            }
            let last = in_len as i64 - 1;
            Some(
                c.iter()
                    .enumerate()
                    .filter(|(_, &w)| w != 0.0)
                    .map(|(k, &w)| (start.saturating_add(k as i64).clamp(0, last.max(0)) as usize, w))
                    .collect(),
            )
        })
        .collect()
}

/// Resizes `x`. `roi` is `[starts..., ends...]` over the resized axes (only read for
/// `tf_crop_and_resize`).
pub fn resize(x: &Tensor, a: &ResizeAttrs, roi: Option<&[f64]>, target: Target<'_>) -> Result<Tensor> {
    let dims = x.shape().to_vec();
    let r = dims.len();
    let (scales, out_dims) = output_geometry(&dims, a, target)?;
    let axes = resolve_axes(a, r)?;
    let mut full_roi: Vec<(f64, f64)> = vec![(0.0, 1.0); r];
    if a.coord == CoordMode::TfCropAndResize {
        let Some(roi) = roi else { bail!("Resize with tf_crop_and_resize needs the roi input") };
        if roi.len() != 2 * axes.len() {
            return Err(Error::Shape(format!(
                "Resize roi must have 2 x {} values (starts then ends), got {}",
                axes.len(),
                roi.len()
            )));
        }
        for (i, &ax) in axes.iter().enumerate() {
            full_roi[ax] = (roi[i], roi[axes.len() + i]);
        }
    }
    let peak: Vec<usize> = dims.iter().zip(&out_dims).map(|(&i, &o)| i.max(o)).collect();
    if checked_numel(&peak)?.saturating_mul(8) > MAX_TENSOR_BYTES {
        bail!("Resize of {dims:?} to {out_dims:?} is too large");
    }
    let mut out = Tensor::zeros(x.dtype(), &out_dims)?;
    let mut data = x.to_f64_vec();
    let mut cur = dims.clone();
    for ax in 0..r {
        let (in_len, out_len, scale) = (cur[ax], out_dims[ax], scales[ax]);
        let identity = (scale - 1.0).abs() <= 1e-9 * scale.abs().max(1.0)
            && out_len == in_len
            && (a.coord != CoordMode::TfCropAndResize
                || (full_roi[ax].0.abs() <= 1e-9 && (full_roi[ax].1 - 1.0).abs() <= 1e-9));
        if identity {
            continue;
        }
        if in_len == 0 && out_len > 0 {
            bail!("Resize cannot resize empty axis {ax} to {out_len}");
        }
        if a.antialias && a.mode != InterpMode::Nearest && 2.0 / scale > 1e6 {
            bail!("Resize antialias filter for scale {scale} on axis {ax} is too wide");
        }
        let taps = axis_taps(a, in_len, out_len, scale, full_roi[ax]);
        let outer: usize = cur[..ax].iter().product();
        let inner: usize = cur[ax + 1..].iter().product();
        let ext = a.extrapolation_value as f64;
        let mut next = vec![0.0f64; outer * out_len * inner];
        for o in 0..outer {
            let src = &data[o * in_len * inner..(o + 1) * in_len * inner];
            let dst = &mut next[o * out_len * inner..(o + 1) * out_len * inner];
            for (y, t) in taps.iter().enumerate() {
                let row = &mut dst[y * inner..(y + 1) * inner];
                match t {
                    None => row.iter_mut().for_each(|v| *v = ext),
                    Some(t) => {
                        for &(i, w) in t {
                            for (d, s) in row.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                                *d += w * s;
                            }
                        }
                    }
                }
            }
        }
        data = next;
        cur[ax] = out_len;
    }
    let float = x.dtype().is_float();
    dispatch_numeric!(x.dtype(), T => {
        let o = out.as_mut_slice::<T>()?;
        for (d, &v) in o.iter_mut().zip(&data) {
            *d = if float { T::from_f64(v) } else { saturate::<T>(v) };
        }
    }, bool => bail!("Resize does not accept bool input"));
    Ok(out)
}

/// Rounds half to even and clamps into the integer type's range, as the ONNX
/// reference does (onnxruntime truncates a float32 result instead, which can differ
/// by one).
fn saturate<T: Element>(v: f64) -> T {
    let (lo, hi) = match T::DTYPE {
        DType::I8 => (i8::MIN as f64, i8::MAX as f64),
        DType::U8 => (0.0, u8::MAX as f64),
        DType::I16 => (i16::MIN as f64, i16::MAX as f64),
        DType::U16 => (0.0, u16::MAX as f64),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::U64 => (0.0, u64::MAX as f64),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    let r = if v.is_nan() { 0.0 } else { v.round_ties_even().clamp(lo, hi) };
    T::from_f64(r)
}

/// A float tensor's values, or `None` if absent or empty (an empty tensor stands
/// for an omitted input in Resize-11/13 models).
fn nonempty(t: Option<&Tensor>) -> Option<&Tensor> {
    t.filter(|t| t.numel() > 0)
}

/// The `scales` and `sizes` a node was given (either may be absent).
type ScalesSizes = (Option<Vec<f64>>, Option<Vec<i64>>);

/// The scales/sizes an op reads, from inputs (or the Upsample-7 attribute).
fn target_values(op: &ResizeOp, inputs: &[Option<&Tensor>]) -> Result<ScalesSizes> {
    Ok(match op {
        ResizeOp::Resize(_) => {
            let scales = nonempty(opt_input(inputs, 2)).map(|t| t.to_f64_vec());
            let sizes = nonempty(opt_input(inputs, 3)).map(|t| t.to_i64_vec()).transpose()?;
            (scales, sizes)
        }
        ResizeOp::Resize10(_) | ResizeOp::Upsample { scales: None, .. } => {
            (Some(input(inputs, 1, "scales")?.to_f64_vec()), None)
        }
        ResizeOp::Upsample { scales: Some(s), .. } => (Some(s.iter().map(|&v| v as f64).collect()), None),
    })
}

fn attrs(op: &ResizeOp) -> &ResizeAttrs {
    match op {
        ResizeOp::Resize(a) | ResizeOp::Resize10(a) => a,
        ResizeOp::Upsample { attrs, .. } => attrs,
    }
}

/// Output shape from a (possibly symbolic) input shape and constant scales/sizes.
fn infer_shape(s: &Shape, a: &ResizeAttrs, scales: Option<&[f64]>, sizes: Option<&[i64]>) -> Option<Shape> {
    let target = match (scales, sizes) {
        (Some(sc), None) => Target::Scales(sc),
        (None, Some(sz)) => Target::Sizes(sz),
        _ => return None,
    };
    if let Some(dims) = s.as_fixed() {
        return output_geometry(&dims, a, target).ok().map(|(_, out)| Shape::fixed(&out));
    }
    let axes = resolve_axes(a, s.rank()).ok()?;
    let mut out = s.clone();
    for (k, &ax) in axes.iter().enumerate() {
        out.0[ax] = match (target, &s.0[ax]) {
            (Target::Sizes(sz), _) if a.policy == AspectPolicy::Stretch => Dim::Fixed((*sz.get(k)?).max(0) as usize),
            (Target::Scales(sc), d) if sc.get(k) == Some(&1.0) => d.clone(),
            (Target::Scales(sc), Dim::Fixed(n)) => Dim::Fixed((sc.get(k)? * *n as f64).floor().max(0.0) as usize),
            _ => Dim::Unknown,
        };
    }
    Some(out)
}

impl OpImpl for ResizeOp {
    fn name(&self) -> &'static str {
        match self {
            ResizeOp::Resize(_) | ResizeOp::Resize10(_) => "Resize",
            ResizeOp::Upsample { .. } => "Upsample",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let Some(x) = inputs.first() else { return Ok(vec![Fact::unknown()]) };
        let dtype = x.fact.dtype;
        let consts: Vec<Option<&Tensor>> = inputs.iter().map(|i| i.value).collect();
        let known = match self {
            ResizeOp::Upsample { scales: Some(_), .. } => true,
            ResizeOp::Resize(_) => {
                consts.get(2).copied().flatten().is_some() || consts.get(3).copied().flatten().is_some()
            }
            _ => consts.get(1).copied().flatten().is_some(),
        };
        let shape = match (&x.fact.shape, known) {
            (Some(s), true) => {
                let (scales, sizes) = target_values(self, &consts)?;
                infer_shape(s, attrs(self), scales.as_deref(), sizes.as_deref())
            }
            (Some(s), false) => Some(Shape(vec![Dim::Unknown; s.rank()])),
            (None, _) => None,
        };
        Ok(vec![Fact { dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let a = attrs(self);
        let (scales, sizes) = target_values(self, inputs)?;
        let roi = match self {
            ResizeOp::Resize(_) => nonempty(opt_input(inputs, 1)).map(|t| t.to_f64_vec()),
            _ => None,
        };
        let target = match (&scales, &sizes) {
            (Some(s), None) => Target::Scales(s),
            (None, Some(s)) => Target::Sizes(s),
            (Some(_), Some(_)) => bail!("Resize takes scales or sizes, not both"),
            (None, None) => bail!("Resize needs scales or sizes"),
        };
        Ok(vec![resize(x, a, roi.as_deref(), target)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: InterpMode, coord: CoordMode) -> ResizeAttrs {
        ResizeAttrs { coord, nearest: NearestMode::RoundPreferFloor, ..ResizeAttrs::legacy(mode) }
    }

    #[test]
    fn nearest_upsample_repeats_pixels() {
        let x = Tensor::from_slice(&[1, 1, 2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let a = ResizeAttrs::legacy(InterpMode::Nearest);
        let y = resize(&x, &a, None, Target::Scales(&[1.0, 1.0, 2.0, 3.0])).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 6]);
        let want = [
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0,
            4.0, 4.0, 4.0,
        ];
        assert_eq!(y.as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn linear_half_pixel_and_align_corners() {
        // [1, 3] upsampled x2. half_pixel: x = (y + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
        // -> 1 (clamped), 1.5, 2.5, 3 (clamped)
        let x = Tensor::from_slice(&[2], &[1.0f32, 3.0]).unwrap();
        let y = resize(&x, &attrs(InterpMode::Linear, CoordMode::HalfPixel), None, Target::Sizes(&[4])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.5, 2.5, 3.0]);
        // align_corners: x = y * 1 / 3 -> 1, 1.6667, 2.3333, 3
        let y = resize(&x, &attrs(InterpMode::Linear, CoordMode::AlignCorners), None, Target::Sizes(&[4])).unwrap();
        let v = y.as_slice::<f32>().unwrap();
        assert!((v[1] - 5.0 / 3.0).abs() < 1e-6 && (v[2] - 7.0 / 3.0).abs() < 1e-6 && v[3] == 3.0);
    }

    #[test]
    fn cubic_keeps_a_linear_ramp_inside_and_crop_extrapolates() {
        // cubic convolution reproduces linear functions away from the borders
        let x = Tensor::from_slice(&[8], &[0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        let y = resize(&x, &attrs(InterpMode::Cubic, CoordMode::Asymmetric), None, Target::Scales(&[2.0])).unwrap();
        let v = y.as_slice::<f64>().unwrap();
        for (i, &val) in v.iter().enumerate().take(12).skip(4) {
            assert!((val - i as f64 / 2.0).abs() < 1e-12, "{i}: {val}");
        }
        // tf_crop_and_resize reading outside [0, 1] of the roi gives extrapolation_value
        let a = ResizeAttrs { extrapolation_value: -1.0, ..attrs(InterpMode::Linear, CoordMode::TfCropAndResize) };
        let y = resize(&x, &a, Some(&[0.5, 1.5]), Target::Sizes(&[3])).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap(), &[3.5, 7.0, -1.0]);
    }

    #[test]
    fn bad_targets_are_errors() {
        let x = Tensor::from_slice(&[2], &[1.0f32, 3.0]).unwrap();
        let a = attrs(InterpMode::Linear, CoordMode::HalfPixel);
        assert!(resize(&x, &a, None, Target::Scales(&[1.0, 2.0])).is_err());
        assert!(resize(&x, &a, None, Target::Scales(&[-2.0])).is_err());
        assert!(resize(&x, &a, None, Target::Sizes(&[-1])).is_err());
    }
}
