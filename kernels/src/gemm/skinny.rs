//! Skinny products (a few rows of A: the streaming case, one frame at a time).
//! Packing A and B would cost more than the product, so each row of B is read
//! once, straight from the source (or from its pre-packed panels), and
//! accumulated into the few output rows held in a per-thread buffer.

use super::driver::BSource;
use super::{CBlock, Epilogue, MatRef};
use std::cell::RefCell;

/// Columns accumulated at once (the output rows of one block stay in L1).
const JB: usize = 512;

thread_local! {
    static ACC: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `c = epilogue(alpha * a @ b + beta * c)` for a block with few rows.
pub(crate) fn gemm(alpha: f32, a: MatRef<'_>, b: BSource<'_>, beta: f32, c: &mut CBlock<'_>, epi: &Epilogue<'_>) {
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

#[inline]
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(c, &x)| *c += a * x);
}
