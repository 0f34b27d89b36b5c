//! NEON f32 micro-kernel: an 8 x 8 tile in 16 q-register accumulators, packed A
//! broadcast by lane (`fmla v.4s, v.4s, v.s[i]`). A row-major A is read in place
//! ([`tile_rows`], one broadcast load per row and step): for small products, where
//! packing A costs about as much as the product, and for tiles of a few rows.

use crate::gemm::{MicroKernel, SKINNY_ROWS};
use std::arch::aarch64::*;

const MR: usize = 8;
const NR: usize = 8;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when neon is detected, and
    // the lengths were checked above.
    unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
}

fn kernel_rows(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]) {
    assert!(kc > 0 && a.len() >= (MR - 1) * lda + kc, "A rows too short");
    assert!(b.len() >= kc * NR && out.len() >= MR * NR, "packed panel too short");
    // SAFETY: as in `kernel`; row-major A: element (i, p) at i * lda + p, and the
    // last one, (MR - 1) * lda + kc - 1, is inside `a` (checked above).
    unsafe { tile_rows::<MR>(kc, a.as_ptr(), lda, b.as_ptr(), out.as_mut_ptr()) }
}

few_rows_entry!(kernel_few, NR, tile_rows);

/// `R` rows of the tile from a row-major A (`out` row stride `NR`).
///
/// # Safety
/// neon must be available; `b` holds `kc * NR` and `out` `R * NR` floats; `a`
/// holds element (i, p) at `i * lda + p` for every i < R, p < kc.
#[target_feature(enable = "neon")]
unsafe fn tile_rows<const R: usize>(kc: usize, a: *const f32, lda: usize, b: *const f32, out: *mut f32) {
    let mut c = [[vdupq_n_f32(0.0); 2]; R];
    // With few rows, odd steps go to a second set of accumulators so that enough
    // independent FMAs are in flight.
    let mut d = [[vdupq_n_f32(0.0); 2]; R];
    let pairs = if R <= SKINNY_ROWS { kc / 2 } else { 0 };
    macro_rules! step {
        ($p:expr, $c:ident) => {
            let p = $p;
            // SAFETY: p < kc and i < R, so every offset is inside the operands the
            // caller vouched for.
            unsafe {
                let b0 = vld1q_f32(b.add(p * NR));
                let b1 = vld1q_f32(b.add(p * NR + 4));
                for i in 0..R {
                    let av = vld1q_dup_f32(a.add(i * lda + p));
                    $c[i][0] = vfmaq_f32($c[i][0], b0, av);
                    $c[i][1] = vfmaq_f32($c[i][1], b1, av);
                }
            }
        };
    }
    for pp in 0..pairs {
        step!(2 * pp, c);
        step!(2 * pp + 1, d);
    }
    for p in 2 * pairs..kc {
        step!(p, c);
    }
    for i in 0..R {
        if pairs > 0 {
            c[i][0] = vaddq_f32(c[i][0], d[i][0]);
            c[i][1] = vaddq_f32(c[i][1], d[i][1]);
        }
        // SAFETY: i < R, so both stores stay inside the R * NR output.
        unsafe {
            vst1q_f32(out.add(i * NR), c[i][0]);
            vst1q_f32(out.add(i * NR + 4), c[i][1]);
        }
    }
}

/// # Safety
/// neon must be available; `a` holds `kc * MR`, `b` `kc * NR` and `out` `MR * NR` floats.
#[target_feature(enable = "neon")]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    let mut c = [[vdupq_n_f32(0.0); 2]; MR];
    for p in 0..kc {
        // SAFETY (whole block): p < kc, so every offset is inside the checked panels.
        unsafe {
            let b0 = vld1q_f32(b.add(p * NR));
            let b1 = vld1q_f32(b.add(p * NR + 4));
            let a0 = vld1q_f32(a.add(p * MR));
            let a1 = vld1q_f32(a.add(p * MR + 4));
            macro_rules! row {
                ($i:expr, $v:ident, $lane:expr) => {
                    c[$i][0] = vfmaq_laneq_f32(c[$i][0], b0, $v, $lane);
                    c[$i][1] = vfmaq_laneq_f32(c[$i][1], b1, $v, $lane);
                };
            }
            row!(0, a0, 0);
            row!(1, a0, 1);
            row!(2, a0, 2);
            row!(3, a0, 3);
            row!(4, a1, 0);
            row!(5, a1, 1);
            row!(6, a1, 2);
            row!(7, a1, 3);
        }
    }
    for (i, r) in c.iter().enumerate() {
        // SAFETY: i < MR, so both stores stay inside the MR * NR output.
        unsafe {
            vst1q_f32(out.add(i * NR), r[0]);
            vst1q_f32(out.add(i * NR + 4), r[1]);
        }
    }
}

pub const NEON: MicroKernel = MicroKernel {
    name: "neon-8x8",
    mr: MR,
    nr: NR,
    run: kernel,
    run_rows: Some(kernel_rows),
    run_few: Some(kernel_few),
};
