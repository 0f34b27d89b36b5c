//! BatchNormalization, LayerNormalization, InstanceNormalization,
//! RMSNormalization, GroupNormalization, LpNormalization,
//! MeanVarianceNormalization, LRN (engine side: `floe_engine::ops::normalization`).

use crate::onnx::registry::{NodeCtx, Registry};
use crate::{conv_invalid, conv_unsupported};
use floe_engine::ops::normalization::NormOp;

/// True if any output after the first is wired (not an empty name).
fn uses_extra_outputs(c: &NodeCtx) -> bool {
    c.node.output.iter().skip(1).any(|o| !o.is_empty())
}

pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", 7, 15, |c| {
        if c.int_or("training_mode", 0)? != 0 || uses_extra_outputs(c) {
            conv_unsupported!("BatchNormalization in training mode (batch statistics and running mean/var outputs)");
        }
        // opset 7-8: spatial = 0 normalises per activation with [C, D1, ...] statistics
        if c.opset < 9 && c.int_or("spatial", 1)? == 0 {
            conv_unsupported!("BatchNormalization with spatial = 0 (per-activation statistics)");
        }
        Ok(NormOp::BatchNorm { epsilon: c.float_or("epsilon", 1e-5)? }.into())
    });
    r.add("LayerNormalization", 17, 17, |c| {
        // stash_type only sets the precision of the statistics (floe uses f64) and
        // the type of the Mean/InvStdDev outputs, which floe produces as float32
        let stash = c.int_or("stash_type", 1)?;
        if stash != 1 && uses_extra_outputs(c) {
            conv_unsupported!("LayerNormalization Mean/InvStdDev outputs with stash_type {stash} (only 1, float32)");
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
        let Some(num_groups) = c.int("num_groups")? else { conv_invalid!("GroupNormalization needs num_groups") };
        if num_groups < 1 {
            conv_invalid!("GroupNormalization num_groups must be positive, got {num_groups}");
        }
        Ok(NormOp::GroupNorm {
            num_groups: num_groups as usize,
            epsilon: c.float_or("epsilon", 1e-5)?,
            per_channel_affine: c.opset >= 21,
        }
        .into())
    });
    r.add("LpNormalization", 1, 22, |c| {
        let p = c.int_or("p", 2)?;
        if p != 1 && p != 2 {
            conv_invalid!("LpNormalization p must be 1 or 2, got {p}");
        }
        Ok(NormOp::LpNorm { axis: c.int_or("axis", -1)?, p }.into())
    });
    r.add("MeanVarianceNormalization", 9, 13, |c| {
        Ok(NormOp::MeanVarianceNorm { axes: c.ints("axes")?.unwrap_or(vec![0, 2, 3]) }.into())
    });
    r.add("LRN", 1, 13, |c| {
        let Some(size) = c.int("size")? else { conv_invalid!("LRN needs size") };
        if size < 1 {
            conv_invalid!("LRN size must be positive, got {size}");
        }
        Ok(NormOp::Lrn {
            alpha: c.float_or("alpha", 1e-4)?,
            beta: c.float_or("beta", 0.75)?,
            bias: c.float_or("bias", 1.0)?,
            size: size as usize,
        }
        .into())
    });
}
