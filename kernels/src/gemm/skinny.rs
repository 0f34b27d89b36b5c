//! Skinny products (a few rows of A: the streaming case, one frame at a time).
//! Packing A would cost more than the product. Against pre-packed B panels the
//! micro-kernel's few-rows entry ([`FewRowsFn`]) keeps up to [`SKINNY_ROWS`]
//! output rows of one panel in registers and reads A in place; otherwise each row
//! of B is read once, straight from the source, and accumulated into the few
//! output rows held in a per-thread buffer.

use super::driver::{BSource, PackedB, KC};
use super::{CBlock, Epilogue, FewRowsFn, MatRef, SKINNY_ROWS};
use std::cell::RefCell;

/// Columns accumulated at once (the output rows of one block stay in L1).
const JB: usize = 512;

thread_local! {
    static ACC: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `c = epilogue(alpha * a @ b + beta * c)` for a block with few rows.
pub(crate) fn gemm(alpha: f32, a: MatRef<'_>, b: BSource<'_>, beta: f32, c: &mut CBlock<'_>, epi: &Epilogue<'_>) {
    if let BSource::Packed(pb, jp0) = b {
        if let (Some(few), 1..) = (pb.kernel().run_few, a.cols) {
            return packed_few(few, alpha, a, pb, jp0, beta, c, epi);
        }
    }
    let (m, k, n) = (c.rows, a.cols, c.cols);
    c.scale(beta);
    let jb = match b {
        BSource::Packed(p, _) => p.kernel().nr * (JB / p.kernel().nr).max(1),
        BSource::Mat(_) => JB,
    };
    ACC.with_borrow_mut(|(acc, brow)| {
        acc.resize(m * jb, 0.0);
        brow.resize(jb, 0.0);
        for j0 in (0..n).step_by(jb) {
            let w = jb.min(n - j0);
            for i in 0..m {
                acc[i * jb..i * jb + w].copy_from_slice(&c.row_mut(i)[j0..j0 + w]);
            }
            for p in 0..k {
                let row: &[f32] = match b {
                    BSource::Mat(bm) if bm.col_stride == 1 => &bm.data[p * bm.row_stride + j0..][..w],
                    BSource::Packed(pb, jp0) => {
                        // Each panel's row is contiguous: accumulate straight from it.
                        let nr = pb.kernel().nr;
                        let mut j = 0;
                        while j < w {
                            let col = j0 + j;
                            let (panel, within) = (jp0 + col / nr, col % nr);
                            let take = (nr - within).min(w - j);
                            let seg = &pb.panel_row(p, panel)[within..within + take];
                            for i in 0..m {
                                axpy(&mut acc[i * jb + j..i * jb + j + take], alpha * a.at(i, p), seg);
                            }
                            j += take;
                        }
                        continue;
                    }
                    _ => {
                        b.row(p, j0, w, brow);
                        &brow[..w]
                    }
                };
                for i in 0..m {
                    let av = alpha * a.at(i, p);
                    axpy(&mut acc[i * jb..i * jb + w], av, row);
                }
            }
            let ld = c.ld;
            for i in 0..m {
                let crow = &mut c.row_mut(i)[j0..j0 + w];
                let t = &mut acc[i * jb..i * jb + w];
                if epi.is_none() {
                    crow.copy_from_slice(t);
                } else {
                    epi.finish(i, j0, ld, t, crow);
                }
            }
        }
    });
}

/// [`gemm`] against pre-packed panels with the few-rows micro-kernel: per group
/// of up to [`SKINNY_ROWS`] rows and per panel, one tile per `KC` slice, summed.
#[allow(clippy::too_many_arguments)]
fn packed_few(
    few: FewRowsFn,
    alpha: f32,
    a: MatRef<'_>,
    pb: &PackedB,
    jp0: usize,
    beta: f32,
    c: &mut CBlock<'_>,
    epi: &Epilogue<'_>,
) {
    let (m, k, n, nr) = (c.rows, a.cols, c.cols, pb.kernel().nr);
    c.scale(beta);
    ACC.with_borrow_mut(|(sum, buf)| {
        // A's rows in place when they are contiguous, else copied once
        let (data, lda) = if a.col_stride == 1 {
            (a.data, a.row_stride)
        } else {
            buf.clear();
            buf.extend((0..m).flat_map(|i| (0..k).map(move |p| (i, p))).map(|(i, p)| a.at(i, p)));
            (&buf[..], k)
        };
        sum.resize(2 * SKINNY_ROWS * nr, 0.0);
        let (sum, tile) = sum.split_at_mut(SKINNY_ROWS * nr);
        let ld = c.ld;
        for i0 in (0..m).step_by(SKINNY_ROWS) {
            let rows = SKINNY_ROWS.min(m - i0);
            for jl in 0..n.div_ceil(nr) {
                let (j0, w) = (jl * nr, nr.min(n - jl * nr));
                for p0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - p0);
                    let panel = &pb.panels(p0, kc, jp0 + jl)[..kc * nr];
                    let out = if p0 == 0 { &mut sum[..rows * nr] } else { &mut tile[..rows * nr] };
                    few(rows, kc, &data[i0 * lda + p0..], lda, panel, out);
                    if p0 > 0 {
                        sum.iter_mut().zip(&tile[..rows * nr]).for_each(|(s, t)| *s += t);
                    }
                }
                for i in 0..rows {
                    let crow = &mut c.row_mut(i0 + i)[j0..j0 + w];
                    let t = &mut sum[i * nr..i * nr + w];
                    t.iter_mut().zip(crow.iter()).for_each(|(t, &cv)| *t = cv + alpha * *t);
                    if epi.is_none() {
                        crow.copy_from_slice(t);
                    } else {
                        epi.finish(i0 + i, j0, ld, t, crow);
                    }
                }
            }
        }
    });
}

#[inline]
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(c, &x)| *c += a * x);
}
