//! NEON f32 micro-kernel: an 8 x 8 tile in 16 q-register accumulators, A
//! broadcast by lane (`fmla v.4s, v.4s, v.s[i]`).

use crate::gemm::MicroKernel;
use std::arch::aarch64::*;

const MR: usize = 8;
const NR: usize = 8;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: `gemm::available()` lists this kernel only when neon is detected, and
    // the lengths were checked above.
    unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
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

pub const NEON: MicroKernel =
    MicroKernel { name: "neon-8x8", mr: MR, nr: NR, run: kernel, run_rows: None, run_few: None };
