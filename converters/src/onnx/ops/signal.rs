//! DFT, STFT, window functions and MelWeightMatrix. DFT's axis moved from an
//! attribute (opset 17, default 1) to an input (opset 20, default -2).

use crate::conv_unsupported;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use crate::onnx::tensor::dtype_from_onnx;
use floe_engine::ops::signal::{SignalOp, WindowKind};
use floe_engine::{DType, Op};

fn out_dtype(c: &NodeCtx) -> ConvResult<DType> {
    match dtype_from_onnx(c.int_or("output_datatype", 1)? as i32) {
        Ok(d) => Ok(d),
        Err(m) => conv_unsupported!("output_datatype {m}"),
    }
}

fn window(c: &NodeCtx, kind: WindowKind) -> ConvResult<Op> {
    Ok(SignalOp::Window { kind, periodic: c.int_or("periodic", 1)? != 0, dtype: out_dtype(c)? }.into())
}

pub fn register(r: &mut Registry) {
    r.add("DFT", 17, 20, |c| {
        let axis = if c.opset < 20 { Some(c.int_or("axis", 1)?) } else { None };
        Ok(SignalOp::Dft { inverse: c.int_or("inverse", 0)? != 0, onesided: c.int_or("onesided", 0)? != 0, axis }
            .into())
    });
    r.add("STFT", 17, 17, |c| Ok(SignalOp::Stft { onesided: c.int_or("onesided", 1)? != 0 }.into()));
    r.add("HannWindow", 17, 17, |c| window(c, WindowKind::Hann));
    r.add("HammingWindow", 17, 17, |c| window(c, WindowKind::Hamming));
    r.add("BlackmanWindow", 17, 17, |c| window(c, WindowKind::Blackman));
    r.add("MelWeightMatrix", 17, 17, |c| Ok(SignalOp::MelWeightMatrix { dtype: out_dtype(c)? }.into()));
}
