//! Reductions, ArgMax/ArgMin, TopK, CumSum/CumProd. Axes became an input at
//! opset 13 for ReduceSum and at 18 for the other Reduce* ops.

use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::reduce::{ReduceKind, ReduceOp};
use floe_engine::Op;

fn reduce(c: &NodeCtx, kind: ReduceKind, axes_input_since: i64) -> ConvResult<Op> {
    let axes = if c.opset < axes_input_since { c.ints("axes")? } else { None };
    Ok(ReduceOp::Reduce {
        kind,
        axes,
        keepdims: c.int_or("keepdims", 1)? != 0,
        noop_with_empty_axes: c.int_or("noop_with_empty_axes", 0)? != 0,
    }
    .into())
}

pub fn register(r: &mut Registry) {
    r.add("ReduceSum", 1, 13, |c| reduce(c, ReduceKind::Sum, 13));
    r.add("ReduceMean", 1, 18, |c| reduce(c, ReduceKind::Mean, 18));
    r.add("ReduceMax", 1, 20, |c| reduce(c, ReduceKind::Max, 18));
    r.add("ReduceMin", 1, 20, |c| reduce(c, ReduceKind::Min, 18));
    r.add("ReduceProd", 1, 18, |c| reduce(c, ReduceKind::Prod, 18));
    r.add("ReduceL1", 1, 18, |c| reduce(c, ReduceKind::L1, 18));
    r.add("ReduceL2", 1, 18, |c| reduce(c, ReduceKind::L2, 18));
    r.add("ReduceLogSum", 1, 18, |c| reduce(c, ReduceKind::LogSum, 18));
    r.add("ReduceLogSumExp", 1, 18, |c| reduce(c, ReduceKind::LogSumExp, 18));
    r.add("ReduceSumSquare", 1, 18, |c| reduce(c, ReduceKind::SumSquare, 18));
    r.add("ArgMax", 1, 13, |c| {
        Ok(ReduceOp::ArgMax {
            axis: c.int_or("axis", 0)?,
            keepdims: c.int_or("keepdims", 1)? != 0,
            select_last_index: c.int_or("select_last_index", 0)? != 0,
        }
        .into())
    });
    r.add("ArgMin", 1, 13, |c| {
        Ok(ReduceOp::ArgMin {
            axis: c.int_or("axis", 0)?,
            keepdims: c.int_or("keepdims", 1)? != 0,
            select_last_index: c.int_or("select_last_index", 0)? != 0,
        }
        .into())
    });
    r.add("TopK", 1, 24, |c| {
        let k = if c.opset < 10 { c.int("k")? } else { None };
        Ok(ReduceOp::TopK {
            axis: c.int_or("axis", -1)?,
            largest: c.int_or("largest", 1)? != 0,
            sorted: c.int_or("sorted", 1)? != 0,
            k,
        }
        .into())
    });
    r.add("CumSum", 11, 14, |c| {
        Ok(ReduceOp::CumSum { exclusive: c.int_or("exclusive", 0)? != 0, reverse: c.int_or("reverse", 0)? != 0 }.into())
    });
    r.add("CumProd", 26, 26, |c| {
        Ok(ReduceOp::CumProd { exclusive: c.int_or("exclusive", 0)? != 0, reverse: c.int_or("reverse", 0)? != 0 }
            .into())
    });
}
