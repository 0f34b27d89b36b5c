//! LinearAttention (opset 27). Reference: ONNX spec, LinearAttention-27.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::linear_attention::{LinearAttentionOp, Rule};

/// A required, positive head count.
fn heads(c: &NodeCtx, name: &str) -> ConvResult<usize> {
    match c.int(name)? {
        Some(n) if n > 0 => Ok(n as usize),
        Some(n) => conv_invalid!("{name} must be positive, got {n}"),
        None => conv_invalid!("{name} is required"),
    }
}

fn linear_attention(c: &NodeCtx) -> ConvResult<floe_engine::Op> {
    let name = c.string("update_rule")?.unwrap_or_else(|| "gated_delta".into());
    let Some(rule) = Rule::parse(&name) else {
        conv_invalid!("update_rule must be linear, gated, delta or gated_delta, got '{name}'")
    };
    let (q_num_heads, kv_num_heads) = (heads(c, "q_num_heads")?, heads(c, "kv_num_heads")?);
    if q_num_heads % kv_num_heads != 0 {
        conv_invalid!("q_num_heads ({q_num_heads}) must be a multiple of kv_num_heads ({kv_num_heads})");
    }
    let chunk_size = match c.int_or("chunk_size", 64)? {
        n if n > 0 => n as usize,
        n => conv_invalid!("chunk_size must be positive, got {n}"),
    };
    Ok(LinearAttentionOp::LinearAttention {
        rule,
        q_num_heads,
        kv_num_heads,
        scale: c.float("scale")?.filter(|&s| s != 0.0),
        chunk_size,
    }
    .into())
}

pub fn register(r: &mut Registry) {
    r.add("LinearAttention", 27, 27, linear_attention);
}
