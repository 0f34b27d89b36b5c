//! Attention (opsets 23-24) and RotaryEmbedding (opset 23).
//! Reference: ONNX spec, Attention-23/24 and RotaryEmbedding-23.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::attention::{AttentionOp, QkOutput};

/// A positive head count, or `None` when the attribute is absent (or 0, which the
/// spec's reference treats as absent).
fn heads(c: &NodeCtx, name: &str) -> ConvResult<Option<usize>> {
    match c.int(name)? {
        None | Some(0) => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(n) => conv_invalid!("{name} must be positive, got {n}"),
    }
}

fn attention(c: &NodeCtx) -> ConvResult<floe_engine::Op> {
    let qk_output = match c.int_or("qk_matmul_output_mode", 0)? {
        0 => QkOutput::Raw,
        1 => QkOutput::Softcapped,
        2 => QkOutput::Biased,
        3 => QkOutput::Softmax,
        m => conv_invalid!("qk_matmul_output_mode must be 0..=3, got {m}"),
    };
    // The engine computes the softmax in f64, at least as precise as any allowed choice.
    match c.int("softmax_precision")? {
        None | Some(1 | 10 | 11 | 16) => {}
        Some(p) => conv_invalid!("softmax_precision must be float, float16, double or bfloat16, got dtype {p}"),
    }
    if c.opset < 24 && c.has_input(6) {
        conv_invalid!("nonpad_kv_seqlen (input 6) needs opset 24, the model uses {}", c.opset);
    }
    Ok(AttentionOp::Attention {
        is_causal: c.int_or("is_causal", 0)? != 0,
        q_num_heads: heads(c, "q_num_heads")?,
        kv_num_heads: heads(c, "kv_num_heads")?,
        scale: c.float("scale")?,
        softcap: c.float_or("softcap", 0.0)?,
        qk_output,
    }
    .into())
}

fn rotary_embedding(c: &NodeCtx) -> ConvResult<floe_engine::Op> {
    let rotary_dim = match c.int_or("rotary_embedding_dim", 0)? {
        0 => None,
        d if d > 0 && d % 2 == 0 => Some(d as usize),
        d => conv_invalid!("rotary_embedding_dim must be even and positive, got {d}"),
    };
    Ok(AttentionOp::RotaryEmbedding {
        interleaved: c.int_or("interleaved", 0)? != 0,
        num_heads: heads(c, "num_heads")?,
        rotary_dim,
    }
    .into())
}

pub fn register(r: &mut Registry) {
    r.add("Attention", 23, 24, attention);
    r.add("RotaryEmbedding", 23, 23, rotary_embedding);
}
