//! Einsum (opset 12, the only version). The equation is checked at import so a
//! malformed one is reported against the node rather than at run time.

use crate::conv_invalid;
use crate::onnx::registry::Registry;
use floe_engine::ops::einsum::{parse_equation, EinsumOp};

pub fn register(r: &mut Registry) {
    r.add("Einsum", 12, 12, |c| {
        let Some(equation) = c.string("equation")? else { conv_invalid!("Einsum needs an 'equation' attribute") };
        let eq = match parse_equation(&equation) {
            Ok(eq) => eq,
            Err(e) => conv_invalid!("{e}"),
        };
        if eq.inputs.len() != c.n_inputs() {
            conv_invalid!(
                "Einsum equation '{equation}' has {} input terms, the node {} inputs",
                eq.inputs.len(),
                c.n_inputs()
            );
        }
        Ok(EinsumOp::Einsum { equation }.into())
    });
}
