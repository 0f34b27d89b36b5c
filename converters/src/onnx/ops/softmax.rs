//! Softmax family: before opset 13 the input is coerced to 2-D at `axis` (default
//! 1); from 13 on the op normalises along `axis` (default -1).

use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::softmax::{SoftmaxKind, SoftmaxOp};
use floe_engine::Op;

fn softmax(c: &NodeCtx, kind: SoftmaxKind) -> ConvResult<Op> {
    let legacy = c.opset < 13;
    let axis = c.int_or("axis", if legacy { 1 } else { -1 })?;
    Ok(SoftmaxOp { kind, axis, legacy }.into())
}

pub fn register(r: &mut Registry) {
    r.add("Softmax", 1, 13, |c| softmax(c, SoftmaxKind::Softmax));
    r.add("LogSoftmax", 1, 13, |c| softmax(c, SoftmaxKind::LogSoftmax));
    r.add("Hardmax", 1, 13, |c| softmax(c, SoftmaxKind::Hardmax));
}
