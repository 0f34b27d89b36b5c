//! MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool.

use super::conv::conv_attrs;
use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::pool::{PoolKind, PoolOp};
use floe_engine::Op;

fn pool(c: &NodeCtx, kind: PoolKind) -> ConvResult<Op> {
    let attrs = conv_attrs(c)?;
    if attrs.kernel_shape.is_empty() || attrs.kernel_shape.contains(&0) {
        conv_invalid!("pooling needs a positive kernel_shape");
    }
    Ok(PoolOp::Pool {
        kind,
        attrs,
        ceil_mode: c.int_or("ceil_mode", 0)? != 0,
        storage_order: c.int_or("storage_order", 0)?.max(0) as usize,
    }
    .into())
}

pub fn register(r: &mut Registry) {
    r.add("MaxPool", 1, 22, |c| pool(c, PoolKind::Max));
    r.add("AveragePool", 1, 22, |c| {
        pool(c, PoolKind::Average { count_include_pad: c.int_or("count_include_pad", 0)? != 0 })
    });
    r.add("LpPool", 2, 22, |c| pool(c, PoolKind::Lp { p: c.int_or("p", 2)? as f32 }));
    r.add("GlobalAveragePool", 1, 22, |_| Ok(PoolOp::GlobalAverage.into()));
    r.add("GlobalMaxPool", 1, 22, |_| Ok(PoolOp::GlobalMax.into()));
}
