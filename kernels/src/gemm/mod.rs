//! General matrix multiply, `c = alpha * a @ b + beta * c`, f32.
//!
//! One blocked driver ([`driver`]: pack A and B panels, cache blocking) and small
//! per-ISA micro-kernels (`arch/*`) that compute an `MR x NR` tile from packed
//! panels. The micro-kernel is chosen once per process ([`selected`]), from the
//! best the CPU supports: AVX-512F, then AVX2+FMA, then NEON (aarch64), then the
//! portable generic kernel. Skinny products (few rows, the streaming case) skip
//! packing and stream rows of B ([`reference::sgemm_rows`]).

mod driver;
pub mod reference;

pub use reference::MatRef;

use std::sync::OnceLock;

/// Computes one `mr x nr` tile: `out[i * nr + j] = sum_p a[p * mr + i] * b[p * nr + j]`
/// for `p < kc`, from packed panels (`a.len() >= kc * mr`, `b.len() >= kc * nr`,
/// `out.len() >= mr * nr`; implementations check this).
pub type MicroKernelFn = fn(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]);

/// A micro-kernel and its register tile.
#[derive(Clone, Copy, Debug)]
pub struct MicroKernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub run: MicroKernelFn,
}

/// Every micro-kernel this CPU can run, best first (the generic one always last).
pub fn available() -> Vec<MicroKernel> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(crate::arch::x86_64::AVX512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.push(crate::arch::x86_64::AVX2_FMA);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push(crate::arch::aarch64::NEON);
        }
    }
    // armv7 builds with `--cfg floe_neon` also pass `+neon`, so the whole binary
    // assumes NEON and there is nothing to detect at run time.
    #[cfg(all(target_arch = "arm", floe_neon))]
    v.push(crate::arch::arm::NEON_V7);
    v.push(crate::arch::generic::GENERIC);
    v
}

/// The micro-kernel used by [`sgemm`], decided once.
pub fn selected() -> MicroKernel {
    static K: OnceLock<MicroKernel> = OnceLock::new();
    *K.get_or_init(|| available()[0])
}

/// Rows at or below which a product streams B instead of packing it.
pub const SKINNY_ROWS: usize = 4;

/// `c = alpha * a @ b + beta * c` with `c` row-major `m x n` (contiguous), using
/// the selected micro-kernel.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    sgemm_with(selected(), alpha, a, b, beta, c)
}

/// [`sgemm`] with an explicit micro-kernel (tests compare every ISA path).
pub fn sgemm_with(kernel: MicroKernel, alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too small");
    if m <= SKINNY_ROWS && b.col_stride == 1 || k == 0 || m * n * k < 4096 {
        reference::sgemm(alpha, a, b, beta, c);
    } else {
        driver::gemm(kernel, alpha, a, b, beta, &mut c[..m * n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    /// A small deterministic generator (no test-only dependencies).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_isa_path_matches_naive_on_ragged_shapes() {
        // Property test over shapes that are not multiples of any tile (and some that are).
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (64, 64, 64),
            (13, 300, 47),
            (100, 7, 129),
            (5, 513, 3),
            (33, 17, 250),
        ];
        for kernel in available() {
            for (seed, &(m, k, n)) in shapes.iter().enumerate() {
                let a = values(m * k, seed as u64 + 1);
                let b = values(k * n, seed as u64 + 100);
                let want = naive(&a, &b, m, k, n);
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (2.0, -0.5)] {
                    let init = values(m * n, 7);
                    let mut c = init.clone();
                    driver::gemm(kernel, alpha, MatRef::new(&a, m, k), MatRef::new(&b, k, n), beta, &mut c);
                    for i in 0..m * n {
                        let w = alpha as f64 * want[i] + beta as f64 * init[i] as f64;
                        assert!(
                            (c[i] as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{} {m}x{k}x{n} [{i}]: {} vs {w}",
                            kernel.name,
                            c[i]
                        );
                    }
                }
                // transposed views of both operands
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let mut c = vec![0.0; m * n];
                driver::gemm(kernel, 1.0, MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t(), 0.0, &mut c);
                for i in 0..m * n {
                    assert!(
                        (c[i] as f64 - want[i]).abs() <= 1e-4 * (1.0 + want[i].abs()),
                        "{} transposed {m}x{k}x{n}",
                        kernel.name
                    );
                }
            }
        }
    }

    #[test]
    fn selected_kernel_is_the_first_available() {
        assert_eq!(selected().name, available()[0].name);
        assert_eq!(available().last().unwrap().name, "generic");
    }
}
