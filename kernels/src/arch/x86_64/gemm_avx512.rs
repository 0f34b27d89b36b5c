//! AVX-512F f32 micro-kernel: a 12 x 32 tile in 24 zmm accumulators; per step of
//! the inner dimension, two loads of B, twelve broadcasts of A, 24 FMAs. A comes
//! packed (`[p][i]` panels) or straight from a row-major matrix (small products,
//! where packing A would cost as much as the product).

use crate::gemm::{MicroKernel, SKINNY_ROWS};
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when avx512f is detected,
    // and the lengths were checked above (packed A: element (i, p) at p * MR + i).
    unsafe { tile::<false, MR>(kc, a.as_ptr(), 0, b.as_ptr(), out.as_mut_ptr()) }
}

fn kernel_rows(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]) {
    assert!(kc > 0 && a.len() >= (MR - 1) * lda + kc, "A rows too short");
    assert!(b.len() >= kc * NR && out.len() >= MR * NR, "packed panel too short");
    // SAFETY: as in `kernel`; row-major A: element (i, p) at i * lda + p, and the
    // last one, (MR - 1) * lda + kc - 1, is inside `a` (checked above).
    unsafe { tile::<true, MR>(kc, a.as_ptr(), lda, b.as_ptr(), out.as_mut_ptr()) }
}

few_rows_entry!(kernel_few, NR, tile, true);

/// The first `R` rows of the tile (`R <= MR`; `out` row stride `NR`).
///
/// # Safety
/// avx512f must be available; `b` holds `kc * NR` and `out` `R * NR` floats; `a`
/// holds element (i, p) for every i < R, p < kc at `i * lda + p` when `ROWS`,
/// else at `p * MR + i`.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const ROWS: bool, const R: usize>(kc: usize, a: *const f32, lda: usize, b: *const f32, out: *mut f32) {
    let (rs, cs) = if ROWS { (lda, 1) } else { (1, MR) };
    let mut c0 = [_mm512_setzero_ps(); R];
    let mut c1 = [_mm512_setzero_ps(); R];
    // With few rows, odd steps go to a second set of accumulators so that enough
    // independent FMAs are in flight (one set would wait on FMA latency).
    let mut d0 = [_mm512_setzero_ps(); R];
    let mut d1 = [_mm512_setzero_ps(); R];
    let pairs = if R <= SKINNY_ROWS { kc / 2 } else { 0 };
    // One step of the inner dimension into the accumulators `$c0`, `$c1` (a
    // macro, not a closure: the intrinsics must inline into this function).
    macro_rules! step {
        ($p:expr, $c0:ident, $c1:ident) => {
            let p = $p;
            // SAFETY: p < kc and i < R, so every offset is inside the operands the
            // caller vouched for.
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(p * NR));
                let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
                let ap = a.add(p * cs);
                for i in 0..R {
                    let av = _mm512_set1_ps(*ap.add(i * rs));
                    $c0[i] = _mm512_fmadd_ps(av, b0, $c0[i]);
                    $c1[i] = _mm512_fmadd_ps(av, b1, $c1[i]);
                }
            }
        };
    }
    for pp in 0..pairs {
        step!(2 * pp, c0, c1);
        step!(2 * pp + 1, d0, d1);
    }
    for p in 2 * pairs..kc {
        step!(p, c0, c1);
    }
    for i in 0..R {
        if pairs > 0 {
            c0[i] = _mm512_add_ps(c0[i], d0[i]);
            c1[i] = _mm512_add_ps(c1[i], d1[i]);
        }
        // SAFETY: i < R, so both stores stay inside the R * NR output.
        unsafe {
            _mm512_storeu_ps(out.add(i * NR), c0[i]);
            _mm512_storeu_ps(out.add(i * NR + 16), c1[i]);
        }
    }
}

pub const AVX512: MicroKernel = MicroKernel {
    name: "avx512f-12x32",
    mr: MR,
    nr: NR,
    run: kernel,
    run_rows: Some(kernel_rows),
    run_few: Some(kernel_few),
};
