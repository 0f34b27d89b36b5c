//! Conv, ConvTranspose, ConvInteger (engine side: `floe_engine::ops::conv`).

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::conv::{AutoPad, ConvAttrs, ConvOp};

/// A non-negative ints attribute (empty when absent).
pub fn usizes(c: &NodeCtx, name: &str) -> ConvResult<Vec<usize>> {
    let v = c.ints(name)?.unwrap_or_default();
    if v.iter().any(|&x| x < 0) {
        conv_invalid!("attribute '{name}' has a negative value: {v:?}");
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// The attributes convolutions and pooling share.
pub fn conv_attrs(c: &NodeCtx) -> ConvResult<ConvAttrs> {
    let auto_pad = match c.string("auto_pad")?.as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => conv_invalid!("auto_pad '{other}'"),
    };
    let group = c.int_or("group", 1)?;
    if group < 1 {
        conv_invalid!("group {group}");
    }
    Ok(ConvAttrs {
        auto_pad,
        dilations: usizes(c, "dilations")?,
        group: group as usize,
        kernel_shape: usizes(c, "kernel_shape")?,
        pads: usizes(c, "pads")?,
        strides: usizes(c, "strides")?,
    })
}

pub fn register(r: &mut Registry) {
    r.add("Conv", 1, 22, |c| Ok(ConvOp::Conv(conv_attrs(c)?).into()));
    r.add("ConvTranspose", 1, 22, |c| {
        Ok(ConvOp::ConvTranspose {
            attrs: conv_attrs(c)?,
            output_padding: usizes(c, "output_padding")?,
            output_shape: usizes(c, "output_shape")?,
        }
        .into())
    });
    r.add("ConvInteger", 10, 10, |c| Ok(ConvOp::ConvInteger(conv_attrs(c)?).into()));
}
