//! If, Loop, Scan. Bodies are imported as graphs whose trailing inputs are the
//! values they capture from enclosing scopes (the importer appends the same
//! captures to the node's inputs).

use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use crate::{conv_invalid, conv_unsupported};
use floe_engine::ops::control::ControlOp;
use floe_engine::Op;

fn formal_inputs(c: &NodeCtx, name: &str) -> usize {
    c.attr(name).and_then(|a| a.g.as_ref()).map_or(0, |g| g.input.len())
}

fn scan(c: &NodeCtx) -> ConvResult<Op> {
    if c.opset < 9 {
        conv_unsupported!("Scan before opset 9 (batched form with sequence_lens)");
    }
    let body = c.graph("body")?;
    let n_captures = body.inputs.len() - formal_inputs(c, "body");
    let m = match c.int("num_scan_inputs")? {
        Some(m) if m >= 0 => m as usize,
        _ => conv_invalid!("Scan needs num_scan_inputs"),
    };
    let dirs = |name: &str| -> ConvResult<Vec<bool>> {
        Ok(c.ints(name)?.unwrap_or_default().iter().map(|&d| d != 0).collect())
    };
    Ok(ControlOp::Scan {
        n_captures,
        num_scan_inputs: m,
        input_axes: c.ints("scan_input_axes")?.unwrap_or_default(),
        input_reverse: dirs("scan_input_directions")?,
        output_axes: c.ints("scan_output_axes")?.unwrap_or_default(),
        output_reverse: dirs("scan_output_directions")?,
        body: Box::new(body),
    }
    .into())
}

pub fn register(r: &mut Registry) {
    r.add("If", 1, 24, |c| {
        let then_branch = c.graph("then_branch")?;
        let else_branch = c.graph("else_branch")?;
        Ok(ControlOp::If { then_branch: Box::new(then_branch), else_branch: Box::new(else_branch) }.into())
    });
    r.add("Loop", 1, 24, |c| {
        let body = c.graph("body")?;
        let n_captures = body.inputs.len() - formal_inputs(c, "body");
        Ok(ControlOp::Loop { body: Box::new(body), n_captures }.into())
    });
    r.add("Scan", 9, 24, scan);
}
