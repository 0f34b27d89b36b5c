//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::loss::{LossOp, LossReduction};

fn reduction(c: &NodeCtx) -> ConvResult<LossReduction> {
    Ok(match c.string("reduction")?.as_deref().unwrap_or("mean") {
        "none" => LossReduction::None,
        "sum" => LossReduction::Sum,
        "mean" => LossReduction::Mean,
        other => conv_invalid!("reduction '{other}'"),
    })
}

pub fn register(r: &mut Registry) {
    r.add("NegativeLogLikelihoodLoss", 12, 22, |c| {
        Ok(LossOp::NegativeLogLikelihood { reduction: reduction(c)?, ignore_index: c.int("ignore_index")? }.into())
    });
    r.add("SoftmaxCrossEntropyLoss", 12, 13, |c| {
        Ok(LossOp::SoftmaxCrossEntropy { reduction: reduction(c)?, ignore_index: c.int("ignore_index")? }.into())
    });
}
