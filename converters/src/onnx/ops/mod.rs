//! Converters from ONNX nodes to floe ops, one file per op family (mirroring
//! `floe_engine::ops`). Each file registers its ops with their opset ranges.

pub mod attention;
pub mod causal_conv;
pub mod constant;
pub mod contrib_attention;
pub mod control;
pub mod conv;
pub mod detection;
pub mod einsum;
pub mod elementwise;
pub mod floe_custom;
pub mod gather;
pub mod layout;
pub mod linear_attention;
pub mod loss;
pub mod matmul;
pub mod normalization;
pub mod pool;
pub mod quantize;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod signal;
pub mod softmax;

use super::registry::Registry;

/// Registers every family.
pub fn register_all(r: &mut Registry) {
    elementwise::register(r);
    layout::register(r);
    gather::register(r);
    reduce::register(r);
    softmax::register(r);
    matmul::register(r);
    conv::register(r);
    pool::register(r);
    normalization::register(r);
    rnn::register(r);
    resize::register(r);
    einsum::register(r);
    quantize::register(r);
    control::register(r);
    loss::register(r);
    attention::register(r);
    contrib_attention::register(r);
    signal::register(r);
    detection::register(r);
    floe_custom::register(r);
    linear_attention::register(r);
    causal_conv::register(r);
}
