//! AVX2+FMA f32 micro-kernel: a 6 x 16 tile in 12 ymm accumulators. A comes
//! packed (`[p][i]` panels) or straight from a row-major matrix.

use crate::gemm::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when avx2 and fma are
    // detected, and the lengths were checked above (packed A: (i, p) at p * MR + i).
    unsafe { tile::<false>(kc, a.as_ptr(), 0, b.as_ptr(), out.as_mut_ptr()) }
}

fn kernel_rows(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]) {
    assert!(kc > 0 && a.len() >= (MR - 1) * lda + kc, "A rows too short");
    assert!(b.len() >= kc * NR && out.len() >= MR * NR, "packed panel too short");
    // SAFETY: as in `kernel`; row-major A: element (i, p) at i * lda + p, and the
    // last one, (MR - 1) * lda + kc - 1, is inside `a` (checked above).
    unsafe { tile::<true>(kc, a.as_ptr(), lda, b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// avx2 and fma must be available; `b` holds `kc * NR` and `out` `MR * NR` floats;
/// `a` holds element (i, p) for every i < MR, p < kc at `i * lda + p` when `ROWS`,
/// else at `p * MR + i`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const ROWS: bool>(kc: usize, a: *const f32, lda: usize, b: *const f32, out: *mut f32) {
    let (rs, cs) = if ROWS { (lda, 1) } else { (1, MR) };
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    for p in 0..kc {
        // SAFETY (whole block): p < kc and i < MR, so every offset is inside the
        // operands the caller vouched for.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            let ap = a.add(p * cs);
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*ap.add(i * rs));
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

pub const AVX2_FMA: MicroKernel =
    MicroKernel { name: "avx2-fma-6x16", mr: MR, nr: NR, run: kernel, run_rows: Some(kernel_rows) };
