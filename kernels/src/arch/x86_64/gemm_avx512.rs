//! AVX-512F f32 micro-kernel: a 12 x 32 tile in 24 zmm accumulators; per step of
//! the inner dimension, two loads of B, twelve broadcasts of A, 24 FMAs.

use crate::gemm::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when avx512f is detected,
    // and the lengths were checked above.
    unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// avx512f must be available; `a` holds `kc * MR`, `b` `kc * NR` and `out` `MR * NR` floats.
#[target_feature(enable = "avx512f")]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    let mut c0 = [_mm512_setzero_ps(); MR];
    let mut c1 = [_mm512_setzero_ps(); MR];
    for p in 0..kc {
        // SAFETY (whole block): p < kc, so every offset is inside the checked panels.
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(p * NR));
            let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
            let ap = a.add(p * MR);
            for i in 0..MR {
                let av = _mm512_set1_ps(*ap.add(i));
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
        }
    }
    for i in 0..MR {
        // SAFETY: i < MR, so both stores stay inside the MR * NR output.
        unsafe {
            _mm512_storeu_ps(out.add(i * NR), c0[i]);
            _mm512_storeu_ps(out.add(i * NR + 16), c1[i]);
        }
    }
}

pub const AVX512: MicroKernel = MicroKernel { name: "avx512f-12x32", mr: MR, nr: NR, run: kernel };
