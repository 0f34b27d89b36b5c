//! (converters for this op family not written yet)

use crate::onnx::registry::Registry;

pub fn register(_r: &mut Registry) {}
