//! Shape and data-movement ops. Opset changes handled here: Squeeze/Unsqueeze/
//! Split axes and sizes became inputs at 13 (Split num_outputs at 18), Slice
//! parameters became inputs at 10, Pad at 11, Reshape gained allowzero at 14.

use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use crate::onnx::tensor::dtype_from_onnx;
use crate::{conv_invalid, conv_unsupported};
use floe_engine::ops::layout::{LayoutOp, PadMode};
use floe_engine::{DType, Op, Tensor};

fn l(op: LayoutOp) -> ConvResult<Op> {
    Ok(op.into())
}

fn dtype_attr(c: &NodeCtx, name: &str) -> ConvResult<Option<DType>> {
    match c.int(name)? {
        None => Ok(None),
        Some(code) => match dtype_from_onnx(code as i32) {
            Ok(d) => Ok(Some(d)),
            Err(m) => conv_unsupported!("{name} = {m}"),
        },
    }
}

pub fn register(r: &mut Registry) {
    r.add("Reshape", 5, 21, |c| l(LayoutOp::Reshape { allowzero: c.int_or("allowzero", 0)? != 0 }));
    r.add("Transpose", 1, 21, |c| {
        let perm = c.ints("perm")?.map(|p| p.iter().map(|&v| v.max(0) as usize).collect());
        l(LayoutOp::Transpose { perm })
    });
    r.add("Squeeze", 1, 21, |c| l(LayoutOp::Squeeze { axes: if c.opset < 13 { c.ints("axes")? } else { None } }));
    r.add("Unsqueeze", 1, 21, |c| {
        if c.opset < 13 {
            match c.ints("axes")? {
                Some(a) => l(LayoutOp::Unsqueeze { axes: Some(a) }),
                None => conv_invalid!("Unsqueeze needs the 'axes' attribute before opset 13"),
            }
        } else {
            l(LayoutOp::Unsqueeze { axes: None })
        }
    });
    r.add("Flatten", 1, 21, |c| l(LayoutOp::Flatten { axis: c.int_or("axis", 1)? }));
    r.add("Concat", 4, 13, |c| match c.int("axis")? {
        Some(axis) => l(LayoutOp::Concat { axis }),
        None => conv_invalid!("Concat needs an 'axis' attribute"),
    });
    r.add("Split", 2, 18, |c| {
        let split = if c.opset < 13 { c.ints("split")? } else { None };
        let num_outputs = c.int("num_outputs")?.map(|n| n.max(1) as usize);
        l(LayoutOp::Split { axis: c.int_or("axis", 0)?, split, num_outputs })
    });
    r.add("Slice", 1, 13, |c| {
        if c.opset < 10 {
            l(LayoutOp::Slice { starts: c.ints("starts")?, ends: c.ints("ends")?, axes: c.ints("axes")? })
        } else {
            l(LayoutOp::Slice { starts: None, ends: None, axes: None })
        }
    });
    r.add("Expand", 8, 13, |_| l(LayoutOp::Expand));
    r.add("Tile", 6, 13, |_| l(LayoutOp::Tile));
    r.add("Pad", 2, 24, |c| {
        let mode = match c.string("mode")?.as_deref().unwrap_or("constant") {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => conv_invalid!("Pad mode '{other}'"),
        };
        if c.opset < 11 {
            let pads = c.ints("pads")?.or(c.ints("paddings")?);
            l(LayoutOp::Pad { mode, pads, value: c.float_or("value", 0.0)? })
        } else {
            l(LayoutOp::Pad { mode, pads: None, value: 0.0 })
        }
    });
    r.add("Identity", 1, 21, |_| l(LayoutOp::Identity));
    r.add("Dropout", 1, 22, |c| {
        if c.has_input(2) {
            // training_mode given: only a constant false is inference.
        }
        l(LayoutOp::Dropout)
    });
    r.add("Shape", 1, 24, |c| l(LayoutOp::Shape { start: c.int_or("start", 0)?, end: c.int("end")? }));
    r.add("Size", 1, 21, |_| l(LayoutOp::Size));
    r.add("Cast", 6, 24, |c| {
        if let Some(0) = c.int("saturate")? {
            // saturate only matters for float8 targets, which are unsupported anyway
        }
        match dtype_attr(c, "to")? {
            Some(to) => l(LayoutOp::Cast { to }),
            None => conv_invalid!("Cast needs a 'to' attribute"),
        }
    });
    r.add("CastLike", 15, 24, |_| l(LayoutOp::CastLike));
    r.add("ConstantOfShape", 9, 24, |c| {
        let value = c.tensor("value")?.unwrap_or_else(|| Tensor::scalar(0.0f32));
        if value.numel() != 1 {
            conv_invalid!("ConstantOfShape value must hold one element");
        }
        l(LayoutOp::ConstantOfShape { value })
    });
    r.add("Range", 11, 11, |_| l(LayoutOp::Range));
    r.add("Trilu", 14, 14, |c| l(LayoutOp::Trilu { upper: c.int_or("upper", 1)? != 0 }));
    r.add("DepthToSpace", 1, 13, |c| {
        let crd = match c.string("mode")?.as_deref().unwrap_or("DCR") {
            "DCR" => false,
            "CRD" => true,
            other => conv_invalid!("DepthToSpace mode '{other}'"),
        };
        l(LayoutOp::DepthToSpace { blocksize: c.int_or("blocksize", 0)?.max(0) as usize, crd })
    });
    r.add("SpaceToDepth", 1, 13, |c| {
        l(LayoutOp::SpaceToDepth { blocksize: c.int_or("blocksize", 0)?.max(0) as usize })
    });
    r.add("OneHot", 9, 11, |c| l(LayoutOp::OneHot { axis: c.int_or("axis", -1)? }));
    r.add("NonZero", 9, 13, |_| l(LayoutOp::NonZero));
    r.add("EyeLike", 9, 22, |c| l(LayoutOp::EyeLike { dtype: dtype_attr(c, "dtype")?, k: c.int_or("k", 0)? }));
    r.add("Compress", 9, 11, |c| l(LayoutOp::Compress { axis: c.int("axis")? }));
    r.add("BitCast", 26, 26, |c| match dtype_attr(c, "to")? {
        Some(to) => l(LayoutOp::BitCast { to }),
        None => conv_invalid!("BitCast needs a 'to' attribute"),
    });
    r.add("CenterCropPad", 18, 18, |c| l(LayoutOp::CenterCropPad { axes: c.ints("axes")? }));
    r.add("ReverseSequence", 10, 10, |c| {
        l(LayoutOp::ReverseSequence { time_axis: c.int_or("time_axis", 0)?, batch_axis: c.int_or("batch_axis", 1)? })
    });
    r.add("Unique", 11, 11, |c| l(LayoutOp::Unique { axis: c.int("axis")?, sorted: c.int_or("sorted", 1)? != 0 }));
}
