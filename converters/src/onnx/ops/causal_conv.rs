//! CausalConvWithState (opset 27). Reference: ONNX spec, CausalConvWithState-27.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::causal_conv::CausalConvOp;

fn causal_conv_with_state(c: &NodeCtx) -> ConvResult<floe_engine::Op> {
    let silu = match c.string("activation")?.as_deref().unwrap_or("none") {
        "none" => false,
        "silu" | "swish" => true,
        a => conv_invalid!("activation must be none, silu or swish, got '{a}'"),
    };
    Ok(CausalConvOp::CausalConvWithState { silu }.into())
}

pub fn register(r: &mut Registry) {
    r.add("CausalConvWithState", 27, 27, causal_conv_with_state);
}
