//! x86_64 micro-kernels (AVX-512F 12x32, AVX2+FMA 6x16). Callers reach them only
//! through `gemm::available()`, which checks the CPU features first.

mod gemm_avx2;
mod gemm_avx512;

pub use gemm_avx2::AVX2_FMA;
pub use gemm_avx512::AVX512;
