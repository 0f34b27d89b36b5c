//! Exact scaled-dot-product attention for one (batch, head), tiled with an online
//! softmax (the FlashAttention recurrence, Dao et al. 2022, on a CPU's caches).
//!
//! Queries go in blocks of [`BLOCK_Q`] rows and keys in blocks of [`BLOCK_K`]. For
//! each key block the `BLOCK_Q x BLOCK_K` scores come from one small GEMM; each row
//! keeps its running max `m` and sum `l`, and when the max grows the partial output
//! is rescaled by `exp(m_old - m_new)`; the block's `exp(s - m)` weights then meet
//! the values in a second GEMM that accumulates into the output tile. The `L x S`
//! score matrix never exists: memory is `O(BLOCK_Q * (BLOCK_K + dv))` per thread on
//! top of the operands. Key blocks no query of the block can see (causal, padding)
//! are skipped.
//!
//! `out_i = sum_j softmax_j(s_ij) v_j` over the keys query `i` sees ([`Visibility`]),
//! with `s_ij = scale * q_i . k_j`, then `softcap * tanh(s / softcap)` when
//! `softcap > 0`, then `+ bias_ij`. A query that sees no key gets NaN (the softmax
//! of an empty or all `-inf` row is undefined; ONNX's reference gives NaN too).

use super::{Rows, Visibility};
use crate::gemm::{self, BSource, Epilogue, MatRef};
use crate::vecmath::{self, Func};
use std::cell::RefCell;

/// Shapes and options of one head's attention.
#[derive(Clone, Copy, Debug)]
pub struct HeadParams {
    pub scale: f32,
    /// Off when `<= 0`.
    pub softcap: f32,
    pub visibility: Visibility,
}

/// Checks operand shapes; returns `(L, S, d, dv)`.
fn dims(q: &Rows, k: &Rows, v: &Rows, bias: Option<&Rows>, out_len: usize, out_stride: usize) -> (usize, usize, usize, usize) {
    let (l, s, d, dv) = (q.rows, k.rows, q.cols, v.cols);
    assert_eq!(k.cols, d, "q and k head sizes differ");
    assert_eq!(v.rows, s, "k and v lengths differ");
    assert!(q.in_bounds() && k.in_bounds() && v.in_bounds(), "an operand is shorter than its shape");
    if let Some(b) = bias {
        assert!(b.rows == l && b.cols >= s && b.in_bounds(), "bias must cover [L, S]");
    }
    assert!(l == 0 || (l - 1) * out_stride + dv <= out_len, "output too small");
    (l, s, d, dv)
}

/// Exact attention of one head, computed row by row in f64 (the yardstick the
/// tiled kernel is tested against). `out` row `i` starts at `i * out_stride`.
pub fn attention_head_naive(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    out: &mut [f32],
    out_stride: usize,
) {
    let (l, _s, _d, dv) = dims(&q, &k, &v, bias.as_ref(), out.len(), out_stride);
    for i in 0..l {
        let n = p.visibility.visible(i);
        let qi = q.row(i);
        let mut sc: Vec<f64> = (0..n)
            .map(|j| {
                let mut x = p.scale as f64 * qi.iter().zip(k.row(j)).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                if p.softcap > 0.0 {
                    x = p.softcap as f64 * (x / p.softcap as f64).tanh();
                }
                x + bias.map_or(0.0, |b| b.row(i)[j] as f64)
            })
            .collect();
        let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sc.iter_mut().for_each(|x| *x = (*x - m).exp());
        let total: f64 = sc.iter().sum();
        let o = &mut out[i * out_stride..i * out_stride + dv];
        for (c, slot) in o.iter_mut().enumerate() {
            let acc: f64 = sc.iter().enumerate().map(|(j, w)| w * v.row(j)[c] as f64).sum();
            *slot = (acc / total) as f32;
        }
    }
}

/// Query rows per tile.
pub const BLOCK_Q: usize = 64;
/// Key rows per tile.
pub const BLOCK_K: usize = 256;

thread_local! {
    /// Tile scratch of this thread: scores, output accumulator, row max, row sum.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Exact attention of one head, tiled (see the module doc). `out` row `i` starts at
/// `i * out_stride`. Runs on the calling thread; callers parallelise over heads and
/// query blocks (pass `q.slice_rows(..)` and a visibility shifted by the block's
/// first row, see [`Visibility::causal`]). Allocation-free after a thread's first
/// call.
///
/// # Panics
/// If an operand is shorter than its shape claims or shapes disagree.
pub fn attention_head(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    out: &mut [f32],
    out_stride: usize,
) {
    let (l, s, _d, dv) = dims(&q, &k, &v, bias.as_ref(), out.len(), out_stride);
    let valid = p.visibility.valid_keys.min(s);
    let vis = Visibility { valid_keys: valid, ..p.visibility };
    crate::parallel::serial(|| {
        SCRATCH.with_borrow_mut(|(sc, acc, mx, sum)| {
            let sc = grow(sc, BLOCK_Q * BLOCK_K);
            let acc = grow(acc, BLOCK_Q * dv);
            let (mx, sum) = (grow(mx, BLOCK_Q), grow(sum, BLOCK_Q));
            for i0 in (0..l).step_by(BLOCK_Q) {
                let bq = BLOCK_Q.min(l - i0);
                let tile = Tile { i0, bq, dv, vis };
                tile.run(&q, &k, &v, bias.as_ref(), p, sc, acc, mx, sum);
                for r in 0..bq {
                    let o = &mut out[(i0 + r) * out_stride..][..dv];
                    // l = 0 (no visible key) gives 0/0 = NaN, the documented result.
                    let inv = 1.0 / sum[r];
                    for (o, a) in o.iter_mut().zip(&acc[r * dv..(r + 1) * dv]) {
                        *o = a * inv;
                    }
                }
            }
        })
    })
}

/// One block of query rows `i0 .. i0 + bq`.
struct Tile {
    i0: usize,
    bq: usize,
    dv: usize,
    vis: Visibility,
}

impl Tile {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        q: &Rows<'_>,
        k: &Rows<'_>,
        v: &Rows<'_>,
        bias: Option<&Rows<'_>>,
        p: &HeadParams,
        sc: &mut [f32],
        acc: &mut [f32],
        mx: &mut [f32],
        sum: &mut [f32],
    ) {
        let (i0, bq, dv) = (self.i0, self.bq, self.dv);
        let d = q.cols;
        let acc = &mut acc[..bq * dv];
        acc.fill(0.0);
        mx[..bq].fill(f32::NEG_INFINITY);
        sum[..bq].fill(0.0);
        // Visibility is a prefix growing with the query index: the last row sees most.
        let reach = self.vis.visible(i0 + bq - 1);
        let kernel = gemm::selected();
        let qm = MatRef { data: &q.data[i0 * q.stride..], rows: bq, cols: d, row_stride: q.stride, col_stride: 1 };
        let isa = vecmath::selected();
        for j0 in (0..reach).step_by(BLOCK_K) {
            let bk = BLOCK_K.min(reach - j0);
            let kt = MatRef { data: &k.data[j0 * k.stride..], rows: bk, cols: d, row_stride: k.stride, col_stride: 1 }.t();
            let sc = &mut sc[..bq * bk];
            gemm::sgemm_ex(kernel, p.scale, qm, BSource::Mat(kt), 0.0, sc, &Epilogue::NONE);
            if p.softcap > 0.0 {
                let c = p.softcap;
                sc.iter_mut().for_each(|x| *x /= c);
                isa.map_in_place(Func::Tanh, sc);
                sc.iter_mut().for_each(|x| *x *= c);
            }
            for r in 0..bq {
                let row = &mut sc[r * bk..(r + 1) * bk];
                if let Some(b) = bias {
                    for (x, y) in row.iter_mut().zip(&b.row(i0 + r)[j0..j0 + bk]) {
                        *x += y;
                    }
                }
                let seen = self.vis.visible(i0 + r).saturating_sub(j0).min(bk);
                row[seen..].fill(f32::NEG_INFINITY);
                let m_new = row[..seen].iter().copied().fold(mx[r], f32::max);
                if m_new == f32::NEG_INFINITY {
                    // Nothing visible yet in this row: contributes nothing.
                    row.fill(0.0);
                    continue;
                }
                let corr = (mx[r] - m_new).exp();
                mx[r] = m_new;
                row.iter_mut().for_each(|x| *x -= m_new);
                isa.map_in_place(Func::Exp, row);
                sum[r] = sum[r] * corr + sum_f32(row);
                if corr != 1.0 {
                    acc[r * dv..(r + 1) * dv].iter_mut().for_each(|a| *a *= corr);
                }
            }
            let pm = MatRef::new(sc, bq, bk);
            let vm = MatRef { data: &v.data[j0 * v.stride..], rows: bk, cols: dv, row_stride: v.stride, col_stride: 1 };
            gemm::sgemm_ex(kernel, 1.0, pm, BSource::Mat(vm), 1.0, acc, &Epilogue::NONE);
        }
    }
}

/// Sum with eight partial sums (vectorises, and rounds better than one running sum).
fn sum_f32(x: &[f32]) -> f32 {
    let mut part = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (p, v) in part.iter_mut().zip(c) {
            *p += v;
        }
    }
    part.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
            (0..n).map(|_| self.next() * amp).collect()
        }
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() }).fold(0.0, f32::max)
    }

    #[test]
    fn tiled_matches_the_f64_reference_on_ragged_shapes_masks_and_strides() {
        let mut rng = Lcg(7);
        // (L, S, d, dv): below, at and across the tile sizes
        for &(l, s, d, dv) in &[(1usize, 1usize, 4usize, 4usize), (3, 5, 8, 3), (65, 300, 16, 8), (130, 513, 32, 40), (64, 256, 64, 64)] {
            for causal in [None, Some(0), Some(s.saturating_sub(l))] {
                for (valid, softcap, with_bias) in [(s, 0.0, false), (s - s / 3, 0.0, true), (s, 2.5, true)] {
                    // strided operands: q and out interleave two heads
                    let q = rng.vec(l * 2 * d, 2.0);
                    let (kk, vv) = (rng.vec(s * d, 2.0), rng.vec(s * dv, 1.0));
                    let b = rng.vec(l * s, 1.0);
                    let qr = Rows { data: &q, rows: l, cols: d, stride: 2 * d };
                    let (kr, vr) = (Rows::new(&kk, s, d), Rows::new(&vv, s, dv));
                    let br = with_bias.then_some(Rows::new(&b, l, s));
                    let vis = Visibility { valid_keys: valid, causal_past: causal };
                    let p = HeadParams { scale: 0.3, softcap, visibility: vis };
                    let (mut got, mut want) = (vec![7.0; l * 2 * dv], vec![7.0; l * 2 * dv]);
                    attention_head(qr, kr, vr, br, &p, &mut got, 2 * dv);
                    attention_head_naive(qr, kr, vr, br, &p, &mut want, 2 * dv);
                    let e = max_err(&got, &want);
                    assert!(e < 2e-5, "L {l} S {s} d {d} dv {dv} causal {causal:?} valid {valid}: error {e}");
                    // the other head's slots are untouched
                    assert!(got.chunks(dv).skip(1).step_by(2).all(|c| c.iter().all(|&x| x == 7.0)));
                }
            }
        }
    }

    #[test]
    fn a_query_that_sees_no_key_is_nan_and_large_scores_do_not_overflow() {
        let (q, k, v) = ([100.0f32; 4], [100.0f32; 6], [1.0f32, 2.0, 3.0]);
        let p = HeadParams { scale: 1.0, softcap: 0.0, visibility: Visibility::all(0) };
        let mut out = [0.0; 2];
        attention_head(Rows::new(&q, 2, 2), Rows::new(&k, 3, 2), Rows::new(&v, 3, 1), None, &p, &mut out, 1);
        assert!(out.iter().all(|x| x.is_nan()));
        let p = HeadParams { visibility: Visibility::causal(3, 0), ..p };
        attention_head(Rows::new(&q, 2, 2), Rows::new(&k, 3, 2), Rows::new(&v, 3, 1), None, &p, &mut out, 1);
        // scores of 20000 everywhere: query 0 sees key 0, query 1 averages keys 0 and 1
        assert_eq!(out, [1.0, 1.5]);
    }
}
