//! RNN, GRU and LSTM (opsets 7-22). `layout` arrived at 14; 22 only widened the
//! types (bfloat16, refused by the importer).

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::rnn::{Activation, Direction, RnnAttrs, RnnOp};
use floe_engine::Op;

fn attrs(c: &NodeCtx, per_direction: usize) -> ConvResult<RnnAttrs> {
    let direction = match c.string("direction")?.as_deref().unwrap_or("forward") {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => conv_invalid!("{} direction '{other}'", c.node.op_type),
    };
    let hidden_size = match c.int("hidden_size")? {
        Some(h) if h <= 0 => conv_invalid!("hidden_size must be positive, got {h}"),
        h => h.map(|h| h as usize),
    };
    let names = c.strings("activations")?.unwrap_or_default();
    let activations = match Activation::parse_list(
        &names,
        &c.floats("activation_alpha")?.unwrap_or_default(),
        &c.floats("activation_beta")?.unwrap_or_default(),
    ) {
        Ok(a) => a,
        Err(m) => conv_invalid!("{m}"),
    };
    let n = activations.len();
    if n != 0 && n != per_direction && n != per_direction * direction.count() {
        conv_invalid!(
            "{} expects {} activations per direction ({} directions), got {n}",
            c.node.op_type,
            per_direction,
            direction.count()
        );
    }
    let clip = match c.float("clip")? {
        Some(v) if v.is_nan() || v < 0.0 => conv_invalid!("clip must be >= 0, got {v}"),
        v => v,
    };
    let batch_first = match c.int_or("layout", 0)? {
        0 => false,
        1 => true,
        other => conv_invalid!("layout must be 0 or 1, got {other}"),
    };
    // Y and Y_h, plus Y_c for LSTM
    let max_outputs = if per_direction == 3 { 3 } else { 2 };
    if c.n_outputs() > max_outputs {
        conv_invalid!("{} declares {} outputs", c.node.op_type, c.n_outputs());
    }
    Ok(RnnAttrs { hidden_size, direction, activations, clip, batch_first })
}

fn rnn(c: &NodeCtx) -> ConvResult<Op> {
    Ok(RnnOp::Rnn(attrs(c, 1)?).into())
}

fn gru(c: &NodeCtx) -> ConvResult<Op> {
    Ok(RnnOp::Gru { attrs: attrs(c, 2)?, linear_before_reset: c.int_or("linear_before_reset", 0)? != 0 }.into())
}

fn lstm(c: &NodeCtx) -> ConvResult<Op> {
    Ok(RnnOp::Lstm { attrs: attrs(c, 3)?, input_forget: c.int_or("input_forget", 0)? != 0 }.into())
}

pub fn register(r: &mut Registry) {
    r.add("RNN", 7, 22, rnn);
    r.add("GRU", 7, 22, gru);
    r.add("LSTM", 7, 22, lstm);
}
