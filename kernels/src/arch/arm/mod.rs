//! 32-bit ARM (armv7) micro-kernels.
//!
//! Compiled only with `--cfg floe_neon`, which the `rpi3-armv7` preset passes along
//! with `-C target-feature=+neon`: on stable Rust `cfg(target_feature = "neon")`
//! stays false on armv7 and the `core::arch::arm` NEON intrinsics are unstable, so
//! the kernels are written with `asm!` and gated on the project cfg instead.

mod gemm_neon_v7;

pub use gemm_neon_v7::NEON_V7;
