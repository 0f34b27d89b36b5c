//! AVX2+FMA f32 micro-kernel: a 6 x 16 tile in 12 ymm accumulators.

use crate::gemm::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when avx2 and fma are
    // detected, and the lengths were checked above.
    unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// avx2 and fma must be available; `a` holds `kc * MR`, `b` `kc * NR` and `out` `MR * NR` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    for p in 0..kc {
        // SAFETY (whole block): p < kc, so every offset is inside the checked panels.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            let ap = a.add(p * MR);
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*ap.add(i));
                c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
            }
        }
    }
    for i in 0..MR {
        // SAFETY: i < MR, so both stores stay inside the MR * NR output.
        unsafe {
            _mm256_storeu_ps(out.add(i * NR), c0[i]);
            _mm256_storeu_ps(out.add(i * NR + 8), c1[i]);
        }
    }
}

pub const AVX2_FMA: MicroKernel = MicroKernel { name: "avx2-fma-6x16", mr: MR, nr: NR, run: kernel };
