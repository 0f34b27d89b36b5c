//! Resize and Upsample. Opset changes handled here: Upsample's scales moved from an
//! attribute (7) to an input (9); Resize-10 takes (X, scales) with asymmetric
//! coordinates; Resize-11 added roi/sizes, coordinate_transformation_mode,
//! nearest_mode, cubic_coeff_a, exclude_outside and extrapolation_value; 13 dropped
//! `tf_half_pixel_for_nn`; 18 added antialias, axes and keep_aspect_ratio_policy;
//! 19 added `half_pixel_symmetric`.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::resize::{AspectPolicy, CoordMode, InterpMode, NearestMode, ResizeAttrs, ResizeOp};
use floe_engine::Op;

fn interp_mode(c: &NodeCtx) -> ConvResult<InterpMode> {
    Ok(match c.string("mode")?.as_deref().unwrap_or("nearest") {
        "nearest" => InterpMode::Nearest,
        // Upsample-7 documents "linear (including bilinear, trilinear, etc)"
        "linear" | "bilinear" | "trilinear" => InterpMode::Linear,
        "cubic" if c.node.op_type == "Resize" && c.opset >= 11 => InterpMode::Cubic,
        other => conv_invalid!("{} mode '{other}'", c.node.op_type),
    })
}

fn resize_attrs(c: &NodeCtx) -> ConvResult<ResizeAttrs> {
    let mode = interp_mode(c)?;
    let coord = match c.string("coordinate_transformation_mode")?.as_deref().unwrap_or("half_pixel") {
        "half_pixel" => CoordMode::HalfPixel,
        "half_pixel_symmetric" if c.opset >= 19 => CoordMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        "tf_half_pixel_for_nn" if c.opset < 13 => CoordMode::TfHalfPixelForNn,
        "tf_crop_and_resize" => CoordMode::TfCropAndResize,
        other => conv_invalid!("Resize-{} coordinate_transformation_mode '{other}'", c.opset),
    };
    let nearest = match c.string("nearest_mode")?.as_deref().unwrap_or("round_prefer_floor") {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => conv_invalid!("Resize nearest_mode '{other}'"),
    };
    let policy = match c.string("keep_aspect_ratio_policy")?.as_deref().unwrap_or("stretch") {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        other => conv_invalid!("Resize keep_aspect_ratio_policy '{other}'"),
    };
    Ok(ResizeAttrs {
        mode,
        coord,
        nearest,
        cubic_coeff_a: c.float_or("cubic_coeff_a", -0.75)?,
        exclude_outside: c.int_or("exclude_outside", 0)? != 0,
        extrapolation_value: c.float_or("extrapolation_value", 0.0)?,
        antialias: c.int_or("antialias", 0)? != 0 && mode != InterpMode::Nearest,
        axes: c.ints("axes")?,
        policy,
    })
}

fn resize(c: &NodeCtx) -> ConvResult<Op> {
    if c.opset < 11 {
        return Ok(ResizeOp::Resize10(ResizeAttrs::legacy(interp_mode(c)?)).into());
    }
    if !c.has_input(2) && !c.has_input(3) {
        conv_invalid!("Resize needs a scales or a sizes input");
    }
    Ok(ResizeOp::Resize(resize_attrs(c)?).into())
}

fn upsample(c: &NodeCtx) -> ConvResult<Op> {
    let attrs = ResizeAttrs::legacy(interp_mode(c)?);
    if c.opset < 9 {
        match c.floats("scales")? {
            Some(s) => Ok(ResizeOp::Upsample { attrs, scales: Some(s) }.into()),
            None => conv_invalid!("Upsample-7 needs a 'scales' attribute"),
        }
    } else if c.has_input(1) {
        Ok(ResizeOp::Upsample { attrs, scales: None }.into())
    } else {
        conv_invalid!("Upsample-9 needs a scales input")
    }
}

pub fn register(r: &mut Registry) {
    r.add("Resize", 10, 19, resize);
    r.add("Upsample", 7, 9, upsample);
}
