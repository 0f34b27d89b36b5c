//! MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, GlobalLpPool,
//! MaxUnpool (engine side: `floe_engine::ops::pool`).

use super::conv::{conv_attrs, usizes};
use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::pool::{PoolKind, PoolOp};
use floe_engine::Op;

fn kernel_shape(c: &NodeCtx) -> ConvResult<Vec<usize>> {
    let k = usizes(c, "kernel_shape")?;
    if k.is_empty() || k.contains(&0) {
        conv_invalid!("pooling needs a positive kernel_shape, got {k:?}");
    }
    Ok(k)
}

fn pool(c: &NodeCtx, kind: PoolKind) -> ConvResult<Op> {
    let attrs = conv_attrs(c)?;
    kernel_shape(c)?;
    let storage_order = c.int_or("storage_order", 0)?;
    if !(0..=1).contains(&storage_order) {
        conv_invalid!("storage_order must be 0 (row major) or 1 (column major), got {storage_order}");
    }
    Ok(PoolOp::Pool { kind, attrs, ceil_mode: c.int_or("ceil_mode", 0)? != 0, storage_order: storage_order as usize }
        .into())
}

fn lp_p(c: &NodeCtx) -> ConvResult<f32> {
    let p = c.int_or("p", 2)?;
    if p < 1 {
        conv_invalid!("LpPool p must be at least 1, got {p}");
    }
    Ok(p as f32)
}

pub fn register(r: &mut Registry) {
    r.add("MaxPool", 1, 22, |c| pool(c, PoolKind::Max));
    r.add("AveragePool", 1, 22, |c| {
        pool(c, PoolKind::Average { count_include_pad: c.int_or("count_include_pad", 0)? != 0 })
    });
    // LpPool-1 had a float `p`; from opset 2 it is an int
    r.add("LpPool", 2, 22, |c| pool(c, PoolKind::Lp { p: lp_p(c)? }));
    r.add("GlobalAveragePool", 1, 22, |_| Ok(PoolOp::GlobalAverage.into()));
    r.add("GlobalMaxPool", 1, 22, |_| Ok(PoolOp::GlobalMax.into()));
    r.add("GlobalLpPool", 2, 22, |c| Ok(PoolOp::GlobalLp { p: lp_p(c)? }.into()));
    r.add("MaxUnpool", 9, 22, |c| {
        let pads = usizes(c, "pads")?;
        let kernel_shape = kernel_shape(c)?;
        if !pads.is_empty() && pads.len() != 2 * kernel_shape.len() {
            conv_invalid!("MaxUnpool pads {pads:?} do not match kernel_shape {kernel_shape:?}");
        }
        Ok(PoolOp::MaxUnpool { kernel_shape, pads, strides: usizes(c, "strides")? }.into())
    });
}
