//! Portable micro-kernel: plain Rust the compiler can vectorise for any target
//! (it is also what armv7 runs, auto-vectorised under `+neon`).

use crate::gemm::MicroKernel;

const MR: usize = 4;
const NR: usize = 8;

fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (a, b, out) = (&a[..kc * MR], &b[..kc * NR], &mut out[..MR * NR]);
    let mut acc = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    for i in 0..MR {
        out[i * NR..(i + 1) * NR].copy_from_slice(&acc[i]);
    }
}

pub const GENERIC: MicroKernel =
    MicroKernel { name: "generic", mr: MR, nr: NR, run: kernel, run_rows: None, run_few: None };
