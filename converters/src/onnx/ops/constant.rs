//! `Constant` nodes: their value becomes a constant in the graph (no op is kept).

use crate::onnx::registry::{ConvError, ConvResult};
use crate::onnx::tensor::{tensor_from_proto, TensorError};
use floe_engine::Tensor;
use tract_onnx::pb::NodeProto;

/// The tensor a `Constant` node defines (value, value_float(s), value_int(s)).
pub fn constant_value(node: &NodeProto) -> ConvResult<Tensor> {
    let a = node.attribute.first().ok_or_else(|| ConvError::Invalid("Constant without a value attribute".into()))?;
    let inv = |e: floe_engine::Error| ConvError::Invalid(e.to_string());
    match a.name.as_str() {
        "value" => {
            let t = a.t.as_ref().ok_or_else(|| ConvError::Invalid("Constant 'value' holds no tensor".into()))?;
            tensor_from_proto(t, None).map_err(|e| match e {
                TensorError::Unsupported(m) => ConvError::Unsupported(m),
                other => ConvError::Invalid(format!("{other:?}")),
            })
        }
        "value_float" => Ok(Tensor::scalar(a.f)),
        "value_floats" => Tensor::from_slice(&[a.floats.len()], &a.floats).map_err(inv),
        "value_int" => Ok(Tensor::scalar(a.i)),
        "value_ints" => Tensor::from_slice(&[a.ints.len()], &a.ints).map_err(inv),
        other => Err(ConvError::Unsupported(format!("Constant with attribute '{other}'"))),
    }
}
