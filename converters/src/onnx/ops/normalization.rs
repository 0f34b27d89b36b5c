//! BatchNormalization, LayerNormalization, InstanceNormalization,
//! RMSNormalization, GroupNormalization, LpNormalization,
//! MeanVarianceNormalization, LRN.

use crate::conv_unsupported;
use crate::onnx::registry::Registry;
use floe_engine::ops::normalization::NormOp;

pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", 7, 15, |c| {
        if c.int_or("training_mode", 0)? != 0 || c.n_outputs() > 1 {
            conv_unsupported!("BatchNormalization in training mode (running statistics outputs)");
        }
        Ok(NormOp::BatchNorm { epsilon: c.float_or("epsilon", 1e-5)? }.into())
    });
    r.add("LayerNormalization", 17, 17, |c| {
        if c.int_or("stash_type", 1)? != 1 {
            conv_unsupported!("LayerNormalization stash_type other than float32");
        }
        Ok(NormOp::LayerNorm { axis: c.int_or("axis", -1)?, epsilon: c.float_or("epsilon", 1e-5)? }.into())
    });
    r.add(
        "InstanceNormalization",
        6,
        22,
        |c| Ok(NormOp::InstanceNorm { epsilon: c.float_or("epsilon", 1e-5)? }.into()),
    );
    r.add("RMSNormalization", 23, 23, |c| {
        Ok(NormOp::RmsNorm { axis: c.int_or("axis", -1)?, epsilon: c.float_or("epsilon", 1e-5)? }.into())
    });
    r.add("GroupNormalization", 18, 21, |c| {
        Ok(NormOp::GroupNorm {
            num_groups: c.int_or("num_groups", 0)?.max(0) as usize,
            epsilon: c.float_or("epsilon", 1e-5)?,
            per_channel_affine: c.opset >= 21,
        }
        .into())
    });
    r.add(
        "LpNormalization",
        1,
        22,
        |c| Ok(NormOp::LpNorm { axis: c.int_or("axis", -1)?, p: c.int_or("p", 2)? }.into()),
    );
    r.add("MeanVarianceNormalization", 9, 13, |c| {
        Ok(NormOp::MeanVarianceNorm { axes: c.ints("axes")?.unwrap_or(vec![0, 2, 3]) }.into())
    });
    r.add("LRN", 1, 13, |c| {
        Ok(NormOp::Lrn {
            alpha: c.float_or("alpha", 1e-4)?,
            beta: c.float_or("beta", 0.75)?,
            bias: c.float_or("bias", 1.0)?,
            size: c.int_or("size", 1)?.max(1) as usize,
        }
        .into())
    });
}
