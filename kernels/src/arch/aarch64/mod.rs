//! aarch64 micro-kernels.

mod gemm_neon;

pub use gemm_neon::NEON;
