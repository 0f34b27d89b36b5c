//! floe-kernels: the compute of floe as pure functions on slices.
//!
//! The engine calls only the functions exported here; which implementation runs
//! (scalar today, per-ISA SIMD micro-kernels as they land) is decided inside this
//! crate, once, so faster kernels drop in without touching the executor.

pub mod arch;
pub mod attention;
pub mod causal_conv;
pub mod elementwise;
pub mod gemm;
pub mod linear_attention;
pub mod math;
pub mod norm;
pub mod parallel;
pub mod softmax;
pub mod transpose;
pub mod vecmath;
