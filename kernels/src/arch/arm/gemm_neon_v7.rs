//! armv7 NEON f32 micro-kernel: a 6 x 8 tile in 12 q-register accumulators
//! (q4-q15), B row in q2-q3, A column in d0-d2, multiply-accumulate by scalar
//! (`vmla.f32 q, q, d[lane]`). The same register-tile scheme as the aarch64
//! kernel, sized for armv7's 16 q registers (OpenBLAS and ruy use 4x8 / 6x8 tiles
//! on 32-bit ARM for the same reason).
//!
//! Written with `asm!` because the 32-bit NEON intrinsics are unstable on stable
//! Rust. `vmla` rounds the product before the add (NEON on armv7 has no by-scalar
//! fused form); the tests bound the difference to the generic kernel accordingly.

use crate::gemm::MicroKernel;
use core::arch::asm;

const MR: usize = 6;
const NR: usize = 8;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && out.len() >= MR * NR, "packed panels too short");
    // SAFETY: the lengths were checked above, and this module is compiled only for
    // builds with NEON enabled (`floe_neon` comes with `-C target-feature=+neon`).
    unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// The CPU has NEON; `a` holds `kc * MR`, `b` `kc * NR` and `out` `MR * NR` floats.
unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    // SAFETY: the loop reads exactly kc * 6 floats from `a` and kc * 8 from `b`, and
    // the stores write exactly 48 floats to `out`, all inside the ranges the caller
    // guarantees. Every register written is declared as clobbered (d8-d15 are
    // callee-saved, so the compiler saves them); no stack is used. `vld1`/`vst1`
    // without an alignment qualifier accept any address.
    unsafe {
        asm!(
            "vmov.i32 q4, #0",
            "vmov.i32 q5, #0",
            "vmov.i32 q6, #0",
            "vmov.i32 q7, #0",
            "vmov.i32 q8, #0",
            "vmov.i32 q9, #0",
            "vmov.i32 q10, #0",
            "vmov.i32 q11, #0",
            "vmov.i32 q12, #0",
            "vmov.i32 q13, #0",
            "vmov.i32 q14, #0",
            "vmov.i32 q15, #0",
            "cmp {kc}, #0",
            "beq 2f",
            "1:",
            // a[p][0..6] -> d0[0], d0[1], d1[0], d1[1], d2[0], d2[1]; b[p][0..8] -> q2, q3
            "vld1.32 {{d0, d1, d2}}, [{a}]!",
            "vld1.32 {{d4, d5, d6, d7}}, [{b}]!",
            "vmla.f32 q4, q2, d0[0]",
            "vmla.f32 q5, q3, d0[0]",
            "vmla.f32 q6, q2, d0[1]",
            "vmla.f32 q7, q3, d0[1]",
            "vmla.f32 q8, q2, d1[0]",
            "vmla.f32 q9, q3, d1[0]",
            "vmla.f32 q10, q2, d1[1]",
            "vmla.f32 q11, q3, d1[1]",
            "vmla.f32 q12, q2, d2[0]",
            "vmla.f32 q13, q3, d2[0]",
            "vmla.f32 q14, q2, d2[1]",
            "vmla.f32 q15, q3, d2[1]",
            "subs {kc}, {kc}, #1",
            "bne 1b",
            "2:",
            // Row i of the tile is q(4 + 2i), q(5 + 2i) = d(8 + 4i) .. d(11 + 4i).
            "vst1.32 {{d8, d9, d10, d11}}, [{out}]!",
            "vst1.32 {{d12, d13, d14, d15}}, [{out}]!",
            "vst1.32 {{d16, d17, d18, d19}}, [{out}]!",
            "vst1.32 {{d20, d21, d22, d23}}, [{out}]!",
            "vst1.32 {{d24, d25, d26, d27}}, [{out}]!",
            "vst1.32 {{d28, d29, d30, d31}}, [{out}]!",
            kc = inout(reg) kc => _,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            out = inout(reg) out => _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            out("q4") _, out("q5") _, out("q6") _, out("q7") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _,
            out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack),
        );
    }
}

pub const NEON_V7: MicroKernel =
    MicroKernel { name: "neon-armv7-6x8", mr: MR, nr: NR, run: kernel, run_rows: None, run_few: None };
