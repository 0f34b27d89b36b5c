//! Gather/Scatter family.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::gather::{GatherOp, Reduction};
use floe_engine::Op;

fn reduction(c: &NodeCtx) -> ConvResult<Reduction> {
    Ok(match c.string("reduction")?.as_deref().unwrap_or("none") {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        other => conv_invalid!("reduction '{other}'"),
    })
}

fn g(op: GatherOp) -> ConvResult<Op> {
    Ok(op.into())
}

pub fn register(r: &mut Registry) {
    r.add("Gather", 1, 13, |c| g(GatherOp::Gather { axis: c.int_or("axis", 0)? }));
    r.add("GatherElements", 11, 13, |c| g(GatherOp::GatherElements { axis: c.int_or("axis", 0)? }));
    r.add("GatherND", 11, 13, |c| g(GatherOp::GatherND { batch_dims: c.int_or("batch_dims", 0)?.max(0) as usize }));
    r.add("ScatterND", 11, 18, |c| g(GatherOp::ScatterND { reduction: reduction(c)? }));
    r.add("ScatterElements", 11, 18, |c| {
        g(GatherOp::ScatterElements { axis: c.int_or("axis", 0)?, reduction: reduction(c)? })
    });
    r.add("TensorScatter", 24, 24, |c| {
        let circular = match c.string("mode")?.as_deref().unwrap_or("linear") {
            "linear" => false,
            "circular" => true,
            other => conv_invalid!("TensorScatter mode '{other}'"),
        };
        g(GatherOp::TensorScatter { axis: c.int_or("axis", -2)?, circular })
    });
    r.add("Scatter", 9, 10, |c| {
        g(GatherOp::ScatterElements { axis: c.int_or("axis", 0)?, reduction: Reduction::None })
    });
}
