//! The blocked GEMM driver shared by every ISA (BLIS loop order): for each
//! `NC`-wide block of columns and `KC`-deep slice of the inner dimension, B is
//! packed into `NR`-wide panels; for each `MC`-tall block of rows, A is packed
//! into `MR`-tall panels; the micro-kernel then computes each `MR x NR` tile and
//! the driver adds it into C. Packing zero-pads ragged edges, so micro-kernels
//! only ever see full tiles.

use super::{MatRef, MicroKernel};

/// Depth of a packed slice (the A panel `MR x KC` and B panel `KC x NR` stay in L1).
const KC: usize = 256;
/// Rows of A packed at once (an `MC x KC` block stays in L2).
const MC: usize = 144;
/// Columns of B packed at once.
const NC: usize = 2048;

/// Packs rows `i0..i0+mc`, depth `p0..p0+kc` of A into `MR`-tall panels,
/// each laid out `[p][i]` (zero rows past the edge).
fn pack_a(a: MatRef<'_>, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, out: &mut Vec<f32>) {
    out.clear();
    for ir in (0..mc).step_by(mr) {
        for p in 0..kc {
            for i in 0..mr {
                let row = ir + i;
                out.push(if row < mc { a.at(i0 + row, p0 + p) } else { 0.0 });
            }
        }
    }
}

/// Packs depth `p0..p0+kc`, columns `j0..j0+nc` of B into `NR`-wide panels,
/// each laid out `[p][j]` (zero columns past the edge).
fn pack_b(b: MatRef<'_>, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, out: &mut Vec<f32>) {
    out.clear();
    for jr in (0..nc).step_by(nr) {
        let w = nr.min(nc - jr);
        for p in 0..kc {
            if b.col_stride == 1 {
                let start = (p0 + p) * b.row_stride + j0 + jr;
                out.extend_from_slice(&b.data[start..start + w]);
            } else {
                out.extend((0..w).map(|j| b.at(p0 + p, j0 + jr + j)));
            }
            out.extend(std::iter::repeat_n(0.0, nr - w));
        }
    }
}

/// `c = alpha * a @ b + beta * c` (`c` row-major `m x n`, exactly `m * n` long).
pub fn gemm(kernel: MicroKernel, alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (mr, nr) = (kernel.mr, kernel.nr);
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
    if k == 0 {
        return;
    }
    let mc_max = MC / mr * mr;
    let mut pa = Vec::with_capacity(mc_max.max(mr) * KC);
    let mut pb = Vec::with_capacity(NC.div_ceil(nr) * nr * KC);
    let mut tile = vec![0f32; mr * nr];
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            pack_b(b, p0, kc, j0, nc, nr, &mut pb);
            for i0 in (0..m).step_by(mc_max.max(mr)) {
                let mc = mc_max.max(mr).min(m - i0);
                pack_a(a, i0, mc, p0, kc, mr, &mut pa);
                for (jp, jr) in (0..nc).step_by(nr).enumerate() {
                    let bp = &pb[jp * kc * nr..(jp + 1) * kc * nr];
                    let w = nr.min(nc - jr);
                    for (ip, ir) in (0..mc).step_by(mr).enumerate() {
                        let ap = &pa[ip * kc * mr..(ip + 1) * kc * mr];
                        (kernel.run)(kc, ap, bp, &mut tile);
                        let h = mr.min(mc - ir);
                        for i in 0..h {
                            let crow = &mut c[(i0 + ir + i) * n + j0 + jr..][..w];
                            for (cv, tv) in crow.iter_mut().zip(&tile[i * nr..i * nr + w]) {
                                *cv += alpha * tv;
                            }
                        }
                    }
                }
            }
        }
    }
}
