//! floe's own ops, in ONNX domain `floe` (version 1): `floe::LMUMemory` and
//! `floe::LIF`, as emitted by `torch.onnx.ops.symbolic("floe::LMUMemory", ...)` or
//! `onnx.helper.make_node(..., domain="floe")`. Semantics and attributes:
//! `docs/custom-ops.md`; why they exist: ALGORITHMS.md 4.3.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::lif::LifOp;
use floe_engine::ops::lmu::{Discretizer, LmuMemoryOp};
use floe_engine::Op;

/// The ONNX domain of floe's custom ops.
pub const DOMAIN: &str = "floe";

/// A float attribute that must be finite and > 0.
fn positive(c: &NodeCtx, name: &str, default: Option<f32>) -> ConvResult<f32> {
    match c.float(name)?.or(default) {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => conv_invalid!("attribute '{name}' must be finite and > 0, got {v}"),
        None => conv_invalid!("missing required attribute '{name}'"),
    }
}

fn arity(c: &NodeCtx, inputs: usize, outputs: usize) -> ConvResult<()> {
    if !c.has_input(0) || c.n_inputs() > inputs {
        conv_invalid!("expects 1 to {inputs} inputs (the first required), got {}", c.n_inputs());
    }
    if c.n_outputs() == 0 || c.n_outputs() > outputs {
        conv_invalid!("expects 1 to {outputs} outputs, got {}", c.n_outputs());
    }
    Ok(())
}

fn lmu_memory(c: &NodeCtx) -> ConvResult<Op> {
    arity(c, 2, 2)?;
    let order = match c.int("order")? {
        Some(o) if o >= 1 => o as usize,
        Some(o) => conv_invalid!("attribute 'order' must be >= 1, got {o}"),
        None => conv_invalid!("missing required attribute 'order'"),
    };
    let theta = positive(c, "theta", None)?;
    let dt = positive(c, "dt", Some(1.0))?;
    let discretizer = match c.string("discretizer")?.as_deref().unwrap_or("zoh") {
        "zoh" => Discretizer::Zoh,
        "euler" => Discretizer::Euler,
        other => conv_invalid!("attribute 'discretizer' must be \"zoh\" or \"euler\", got \"{other}\""),
    };
    Ok(LmuMemoryOp { order, theta, discretizer, dt }.into())
}

fn lif(c: &NodeCtx) -> ConvResult<Op> {
    arity(c, 2, 2)?;
    let d = LifOp::default();
    let tau = positive(c, "tau", Some(d.tau))?;
    let finite = |name: &str, default: f32| -> ConvResult<f32> {
        match c.float(name)?.unwrap_or(default) {
            v if v.is_finite() => Ok(v),
            v => conv_invalid!("attribute '{name}' must be finite, got {v}"),
        }
    };
    let v_th = finite("v_th", d.v_th)?;
    let v_reset = finite("v_reset", d.v_reset)?;
    let decay_input = match c.int_or("decay_input", 1)? {
        0 => false,
        1 => true,
        other => conv_invalid!("attribute 'decay_input' must be 0 or 1, got {other}"),
    };
    let time_axis = c.int_or("time_axis", d.time_axis)?;
    if let Some(rank) = c.input_fact(0).shape.map(|s| s.rank() as i64) {
        if time_axis < -rank || time_axis >= rank || rank < 2 {
            conv_invalid!(
                "attribute 'time_axis' {time_axis} is out of range for input 0 of rank {rank} (rank >= 2 needed)"
            );
        }
    }
    Ok(LifOp { tau, v_th, v_reset, decay_input, time_axis }.into())
}

pub fn register(r: &mut Registry) {
    r.add_in(DOMAIN, "LMUMemory", 1, 1, lmu_memory);
    r.add_in(DOMAIN, "LIF", 1, 1, lif);
}
