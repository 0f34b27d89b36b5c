//! MatMul, Gemm, MatMulInteger.

use crate::onnx::registry::Registry;
use floe_engine::ops::matmul::MatMulOp;

pub fn register(r: &mut Registry) {
    r.add("MatMul", 1, 13, |_| Ok(MatMulOp::MatMul.into()));
    r.add("Gemm", 6, 13, |c| {
        Ok(MatMulOp::Gemm {
            alpha: c.float_or("alpha", 1.0)?,
            beta: c.float_or("beta", 1.0)?,
            trans_a: c.int_or("transA", 0)? != 0,
            trans_b: c.int_or("transB", 0)? != 0,
        }
        .into())
    });
    r.add("MatMulInteger", 10, 10, |_| Ok(MatMulOp::MatMulInteger.into()));
    r.add("Det", 11, 22, |_| Ok(MatMulOp::Det.into()));
}
