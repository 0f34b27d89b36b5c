//! Per-ISA micro-kernels. Each exports `MicroKernel` constants; the shared driver
//! in `gemm::driver` does everything else.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(all(target_arch = "arm", floe_neon))]
pub mod arm;
pub mod generic;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
