//! NonMaxSuppression.

use crate::onnx::registry::Registry;
use floe_engine::ops::detection::DetectionOp;

pub fn register(r: &mut Registry) {
    r.add("NonMaxSuppression", 10, 11, |c| {
        Ok(DetectionOp::NonMaxSuppression { center_point_box: c.int_or("center_point_box", 0)? != 0 }.into())
    });
}
