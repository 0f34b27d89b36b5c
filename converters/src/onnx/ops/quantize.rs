//! QuantizeLinear, DequantizeLinear (opsets 10-25) and DynamicQuantizeLinear (11).
//! Per-axis scales arrived at 13, `saturate` at 19 (float8 only), `block_size` and
//! `output_dtype` at 21 (DequantizeLinear's `output_dtype` at 23), `precision` at 23.
//! Types floe has no tensors for (int4, int2, float8, float4) are unsupported.

use crate::conv_unsupported;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use crate::onnx::tensor::dtype_from_onnx;
use floe_engine::ops::quantize::QuantOp;
use floe_engine::DType;

/// A data-type attribute (0 or absent = not given).
fn dtype_attr(c: &NodeCtx, name: &str) -> ConvResult<Option<DType>> {
    match c.int(name)? {
        None | Some(0) => Ok(None),
        Some(code) => match dtype_from_onnx(code as i32) {
            Ok(d) => Ok(Some(d)),
            Err(m) => conv_unsupported!("{name} = {m}"),
        },
    }
}

fn block_size(c: &NodeCtx) -> ConvResult<usize> {
    let b = c.int_or("block_size", 0)?;
    if b < 0 {
        crate::conv_invalid!("block_size must be >= 0, got {b}");
    }
    Ok(b as usize)
}

pub fn register(r: &mut Registry) {
    r.add("QuantizeLinear", 10, 25, |c| {
        let output_dtype = dtype_attr(c, "output_dtype")?;
        if let Some(d) = output_dtype {
            if !matches!(d, DType::U8 | DType::I8 | DType::U16 | DType::I16) {
                conv_unsupported!("QuantizeLinear output_dtype {d}");
            }
        }
        let precision = dtype_attr(c, "precision")?;
        if let Some(p) = precision {
            if !p.is_float() {
                conv_unsupported!("QuantizeLinear precision {p}");
            }
        }
        Ok(QuantOp::Quantize { axis: c.int_or("axis", 1)?, block_size: block_size(c)?, output_dtype, precision }.into())
    });
    r.add("DequantizeLinear", 10, 25, |c| {
        let output_dtype = dtype_attr(c, "output_dtype")?;
        if let Some(d) = output_dtype {
            if !d.is_float() {
                conv_unsupported!("DequantizeLinear output_dtype {d}");
            }
        }
        Ok(QuantOp::Dequantize { axis: c.int_or("axis", 1)?, block_size: block_size(c)?, output_dtype }.into())
    });
    r.add("DynamicQuantizeLinear", 11, 11, |_| Ok(QuantOp::DynamicQuantize.into()));
}
