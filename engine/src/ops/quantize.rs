//! Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.
//!
//! `q = saturate(round_half_even(x / scale) + zero_point)` and
//! `x = (q - zero_point) * scale`, with one scale per tensor, per slice along `axis`,
//! or per block of `block_size` elements along `axis` (opset 21). Integer targets are
//! uint8/int8/uint16/int16 (int4/int2/float8 tensors are refused by the importer).
//! Reference: ONNX operator spec, QuantizeLinear-25 / DequantizeLinear-25 /
//! DynamicQuantizeLinear-11; rounding and precision follow the ONNX reference
//! implementation (`onnx/reference/ops/op_quantize_linear.py`).

use super::{input, norm_axis, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_float, dispatch_numeric, unsupported};
use half::f16;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum QuantOp {
    /// `y = saturate(round(x / y_scale) + y_zero_point)`.
    Quantize {
        axis: i64,
        /// 0 = per-tensor or per-axis; > 0 = blocked along `axis`.
        block_size: usize,
        /// Output type when there is no zero point (default uint8).
        output_dtype: Option<DType>,
        /// Type the division `x / y_scale` is computed in (default: promotion of both).
        precision: Option<DType>,
    },
    /// `y = (x - x_zero_point) * x_scale`.
    Dequantize {
        axis: i64,
        block_size: usize,
        /// Output type (default: the scale's type).
        output_dtype: Option<DType>,
    },
    /// uint8 quantization with scale and zero point computed from the data range.
    DynamicQuantize,
}

/// Maps each element of a tensor of shape `shape` to the index of its scale.
#[derive(Clone, Copy, Debug)]
enum ScaleMap {
    PerTensor,
    /// (axis length, inner size): index = (i / inner) % len.
    PerAxis {
        len: usize,
        inner: usize,
    },
    /// (axis length, scale axis length, inner size, block).
    Blocked {
        len: usize,
        slen: usize,
        inner: usize,
        block: usize,
    },
}

impl ScaleMap {
    /// Works out how `scale` (and a zero point of the same shape) applies to `shape`.
    fn new(shape: &[usize], scale: &[usize], axis: i64, block_size: usize) -> Result<ScaleMap> {
        let n: usize = scale.iter().product();
        if n == 1 && (block_size == 0 || scale.len() <= 1) {
            return Ok(ScaleMap::PerTensor);
        }
        if shape.is_empty() {
            return Err(Error::Shape(format!("a scale of shape {scale:?} needs an input of rank >= 1")));
        }
        let axis = norm_axis(axis, shape.len())?;
        let len = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        if block_size == 0 {
            if scale.len() != 1 || scale[0] != len {
                return Err(Error::Shape(format!(
                    "per-axis scale must be 1-D of length {len} (input dim {axis} of {shape:?}), got {scale:?}"
                )));
            }
            return Ok(ScaleMap::PerAxis { len, inner });
        }
        let slen = len.div_ceil(block_size);
        let ok = scale.len() == shape.len()
            && scale.iter().zip(shape).enumerate().all(|(i, (&s, &d))| if i == axis { s == slen } else { s == d });
        if !ok {
            return Err(Error::Shape(format!(
                "blocked scale for input {shape:?} with axis {axis} and block_size {block_size} must have \
                 shape equal to the input's except dim {axis} = {slen}, got {scale:?}"
            )));
        }
        Ok(ScaleMap::Blocked { len, slen, inner, block: block_size })
    }

    #[inline]
    fn index(&self, i: usize) -> usize {
        match *self {
            ScaleMap::PerTensor => 0,
            ScaleMap::PerAxis { len, inner } => (i / inner) % len,
            ScaleMap::Blocked { len, slen, inner, block } => {
                let outer = i / (inner * len);
                let c = (i / inner) % len;
                (outer * slen + c / block) * inner + i % inner
            }
        }
    }
}

/// The zero point has the scale's shape (a scalar and a 1-element vector count as equal).
fn check_zero_point_shape(z: &Tensor, scale: &Tensor) -> Result<()> {
    let same = z.shape() == scale.shape() || (z.numel() == 1 && scale.numel() == 1);
    if !same {
        return Err(Error::Shape(format!(
            "zero point shape {:?} differs from scale shape {:?}",
            z.shape(),
            scale.shape()
        )));
    }
    Ok(())
}

/// Inclusive range of an integer quantized type.
fn int_range(d: DType) -> Result<(i64, i64)> {
    Ok(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        other => unsupported!("quantized type {other} (expected uint8, int8, uint16 or int16)"),
    })
}

/// `a / b` rounded as the division would be in `prec` (f16, f32 or f64).
#[inline]
fn div_in(a: f64, b: f64, prec: DType) -> f64 {
    match prec {
        DType::F64 => a / b,
        // f32 division then rounding to f16 is correctly rounded (24 >= 2 * 11 + 2 bits).
        DType::F16 => f16::from_f32(a as f32 / b as f32).to_f64(),
        _ => (a as f32 / b as f32) as f64,
    }
}

/// The type numpy computes `x / scale` in.
fn promoted(x: DType, s: DType) -> DType {
    match (x, s) {
        (DType::F64, _) | (_, DType::F64) => DType::F64,
        (DType::F16, DType::F16) => DType::F16,
        (x, _) if x.is_int() => DType::F64,
        _ => DType::F32,
    }
}

/// QuantizeLinear on whole tensors.
pub fn quantize_linear(
    x: &Tensor,
    scale: &Tensor,
    zero_point: Option<&Tensor>,
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
    precision: Option<DType>,
) -> Result<Tensor> {
    if !scale.dtype().is_float() {
        bail!("QuantizeLinear y_scale must be a float tensor, got {}", scale.dtype());
    }
    let out_dtype = match (zero_point, output_dtype) {
        (Some(z), Some(o)) if z.dtype() != o => {
            bail!("QuantizeLinear output_dtype {o} differs from y_zero_point's type {}", z.dtype())
        }
        (Some(z), _) => z.dtype(),
        (None, o) => o.unwrap_or(DType::U8),
    };
    let (lo, hi) = int_range(out_dtype)?;
    if out_dtype == DType::I32 {
        unsupported!("QuantizeLinear to int32");
    }
    let map = ScaleMap::new(x.shape(), scale.shape(), axis, block_size)?;
    if let Some(z) = zero_point {
        check_zero_point_shape(z, scale)?;
    }
    let prec = precision.unwrap_or_else(|| promoted(x.dtype(), scale.dtype()));
    let s = scale.to_f64_vec();
    let z = match zero_point {
        Some(z) => z.to_i64_vec()?,
        None => vec![0; s.len()],
    };
    let xv = x.to_f64_vec();
    let q: Vec<i64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = map.index(i);
            let r = div_in(v, s[k], prec).round_ties_even();
            // NaN maps to the zero point (float -> int casts give 0 for NaN).
            let r = if r.is_nan() { 0 } else { r.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64 };
            (r + z[k]).clamp(lo, hi)
        })
        .collect();
    dispatch_numeric!(out_dtype, T => Tensor::from_vec(x.shape(), q.iter().map(|&v| T::from_i64(v)).collect::<Vec<T>>()),
        bool => unreachable!("int_range refuses bool"))
}

/// DequantizeLinear on whole tensors.
pub fn dequantize_linear(
    x: &Tensor,
    scale: &Tensor,
    zero_point: Option<&Tensor>,
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
) -> Result<Tensor> {
    if !scale.dtype().is_float() {
        bail!("DequantizeLinear x_scale must be a float tensor, got {}", scale.dtype());
    }
    int_range(x.dtype())?;
    let map = ScaleMap::new(x.shape(), scale.shape(), axis, block_size)?;
    if let Some(z) = zero_point {
        if z.dtype() != x.dtype() {
            bail!("DequantizeLinear x_zero_point type {} differs from x's type {}", z.dtype(), x.dtype());
        }
        check_zero_point_shape(z, scale)?;
    }
    let out_dtype = output_dtype.unwrap_or(scale.dtype());
    let s = scale.to_f64_vec();
    let z = match zero_point {
        Some(z) => z.to_i64_vec()?,
        None => vec![0; s.len()],
    };
    let xv = x.to_i64_vec()?;
    // (x - zp) is exact in i64; the product is taken in f32 like the reference (and
    // onnxruntime) unless the scale is f64.
    let wide = scale.dtype() == DType::F64;
    let vals: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = map.index(i);
            let d = v - z[k];
            if wide {
                d as f64 * s[k]
            } else {
                (d as f32 * s[k] as f32) as f64
            }
        })
        .collect();
    dispatch_float!(out_dtype, T => Tensor::from_vec(x.shape(), vals.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>()),
        _ => bail!("DequantizeLinear output_dtype must be a float type, got {out_dtype}"))
}

/// DynamicQuantizeLinear: uint8 `y`, f32 scalar `y_scale`, uint8 scalar `y_zero_point`.
/// Computed in f32 as the spec's formulas are written.
pub fn dynamic_quantize_linear(x: &Tensor) -> Result<[Tensor; 3]> {
    if x.dtype() != DType::F32 {
        bail!("DynamicQuantizeLinear expects float32 input, got {}", x.dtype());
    }
    let xv = x.as_slice::<f32>()?;
    let max = xv.iter().copied().fold(0.0f32, f32::max);
    let min = xv.iter().copied().fold(0.0f32, f32::min);
    let scale = if max == min { 1.0 } else { max - min } / 255.0f32;
    let zp = (0.0f32 - min / scale).clamp(0.0, 255.0).round_ties_even();
    let y: Vec<u8> = xv.iter().map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8).collect();
    Ok([Tensor::from_vec(x.shape(), y)?, Tensor::scalar(scale), Tensor::scalar(zp as u8)])
}

impl OpImpl for QuantOp {
    fn name(&self) -> &'static str {
        match self {
            QuantOp::Quantize { .. } => "QuantizeLinear",
            QuantOp::Dequantize { .. } => "DequantizeLinear",
            QuantOp::DynamicQuantize => "DynamicQuantizeLinear",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let fact = |i: usize| inputs.get(i).map(|f| f.fact.clone()).unwrap_or_else(Fact::unknown);
        let x = fact(0);
        Ok(match self {
            QuantOp::Quantize { output_dtype, .. } => {
                let zp = inputs.get(2).map(|f| f.fact.dtype);
                let dtype = match zp {
                    Some(d) => d,
                    None => Some(output_dtype.unwrap_or(DType::U8)),
                };
                vec![Fact { dtype, shape: x.shape }]
            }
            QuantOp::Dequantize { output_dtype, .. } => {
                let dtype = output_dtype.or(fact(1).dtype);
                vec![Fact { dtype, shape: x.shape }]
            }
            QuantOp::DynamicQuantize => {
                let mut v = vec![
                    Fact { dtype: Some(DType::U8), shape: x.shape },
                    Fact::new(DType::F32, Shape(vec![])),
                    Fact::new(DType::U8, Shape(vec![])),
                ];
                v.truncate(n.max(1));
                v
            }
        })
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "x")?;
        Ok(match self {
            QuantOp::Quantize { axis, block_size, output_dtype, precision } => {
                let s = input(inputs, 1, "y_scale")?;
                vec![quantize_linear(x, s, opt_input(inputs, 2), *axis, *block_size, *output_dtype, *precision)?]
            }
            QuantOp::Dequantize { axis, block_size, output_dtype } => {
                let s = input(inputs, 1, "x_scale")?;
                vec![dequantize_linear(x, s, opt_input(inputs, 2), *axis, *block_size, *output_dtype)?]
            }
            QuantOp::DynamicQuantize => {
                let mut v = dynamic_quantize_linear(x)?.to_vec();
                v.truncate(ctx.n_outputs.max(1));
                v
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::from_slice(&[6], &[1.0f32, 3.0, 5.0, -1.0, 600.0, -600.0]).unwrap();
        let s = Tensor::scalar(2.0f32);
        let z = Tensor::scalar(128u8);
        let q = quantize_linear(&x, &s, Some(&z), 1, 0, None, None).unwrap();
        // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 ; then + 128 and clamp to [0, 255]
        assert_eq!(q.as_slice::<u8>().unwrap(), &[128, 130, 130, 128, 255, 0]);
        let q8 = quantize_linear(&x, &s, None, 1, 0, Some(DType::I8), None).unwrap();
        assert_eq!(q8.as_slice::<i8>().unwrap(), &[0, 2, 2, 0, 127, -128]);
    }

    #[test]
    fn per_axis_and_blocked_scales_pick_the_right_element() {
        // x [2, 4]; per-axis on axis 0: row scales 1 and 10.
        let x = Tensor::from_slice(&[2, 4], &[1u8, 2, 3, 4, 10, 20, 30, 40]).unwrap();
        let s = Tensor::from_slice(&[2], &[1.0f32, 10.0]).unwrap();
        let y = dequantize_linear(&x, &s, None, 0, 0, None).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0, 100.0, 200.0, 300.0, 400.0]);
        // blocked along axis 1 with block 3: scale [2, 2], last block is partial.
        let s = Tensor::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let z = Tensor::from_slice(&[2, 2], &[1u8, 0, 0, 10]).unwrap();
        let y = dequantize_linear(&x, &s, Some(&z), 1, 3, None).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 1.0, 2.0, 8.0, 30.0, 60.0, 90.0, 120.0]);
        // a wrongly shaped blocked scale is an error, not a panic
        let bad = Tensor::from_slice(&[2, 3], &[1.0f32; 6]).unwrap();
        assert!(dequantize_linear(&x, &bad, None, 1, 3, None).is_err());
    }

    #[test]
    fn dynamic_quantize_includes_zero_in_the_range() {
        // range [-1, 3] -> scale 4/255, zero point round(255/4) = 64
        let x = Tensor::from_slice(&[3], &[-1.0f32, 0.0, 3.0]).unwrap();
        let [y, s, z] = dynamic_quantize_linear(&x).unwrap();
        assert_eq!(s.as_slice::<f32>().unwrap(), &[4.0f32 / 255.0]);
        assert_eq!(z.as_slice::<u8>().unwrap(), &[64]);
        assert_eq!(y.as_slice::<u8>().unwrap(), &[0, 64, 255]);
    }
}
