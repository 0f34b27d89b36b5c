//! Exact scaled-dot-product attention for one (batch, head), tiled with an online
//! softmax (the FlashAttention recurrence, Dao et al. 2022, on a CPU's caches).
//!
//! Queries go in blocks of [`BLOCK_Q`] rows and keys in blocks of [`BLOCK_K`]. For
//! each key block the transposed scores `K_blk Q_blk^T` of every query block come
//! from one small GEMM; each query keeps its running max `m` and sum `l`, and when
//! the max grows its partial output is rescaled by `exp(m_old - m_new)`; the block's
//! `exp(s - m)` weights then meet the values in a second GEMM that accumulates into
//! the output tile. The `L x S` score matrix never exists: memory is
//! `O(L * dv + BLOCK_Q * BLOCK_K)` per thread on top of the operands. Key blocks no
//! query of a block can see (causal, padding) are skipped.
//!
//! `out_i = sum_j softmax_j(s_ij) v_j` over the keys query `i` sees ([`Visibility`]),
//! with `s_ij = scale * q_i . k_j`, then `softcap * tanh(s / softcap)` when
//! `softcap > 0`, then `+ bias_ij`. A query that sees no key gets NaN (the softmax
//! of an empty or all `-inf` row is undefined; ONNX's reference gives NaN too).

use super::{Rows, Visibility};
use crate::gemm::{self, BSource, Epilogue, MatRef, PackedA, PackedB};
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
fn dims(
    q: &Rows,
    k: &Rows,
    v: &Rows,
    bias: Option<&Rows>,
    out_len: usize,
    out_stride: usize,
) -> (usize, usize, usize, usize) {
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
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread working memory, kept between calls (no allocation once warm).
#[derive(Default)]
struct Scratch {
    /// One tile of transposed scores / weights, `BLOCK_K x BLOCK_Q` (keys by queries).
    scores: Vec<f32>,
    /// Unnormalised transposed output per query block, `[block][dv][bq]`.
    acc: Vec<f32>,
    /// Running max and sum of every query, then per-tile column max / sum / correction.
    max: Vec<f32>,
    sum: Vec<f32>,
    col: Vec<f32>,
    /// The current key block as the left operand of both products (`K_blk` and
    /// `V_blk^T`), packed once and reused by every query block.
    k: PackedA,
    vt: PackedA,
    /// Every query block transposed (`Q_blk^T`), packed once per call.
    qt: Vec<PackedB>,
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Products whose queries see at most this many keys run a query at a time
/// ([`super::rows`]): packing tiles would cost more than it saves.
pub const ROWS_MAX_KEYS: usize = 128;

/// Exact attention of one head. `out` row `i` starts at `i * out_stride`. Queries
/// that see few keys (at most [`ROWS_MAX_KEYS`]) run a query at a time against
/// transposed keys, the rest through [`attention_head_tiled`]. Runs on the calling
/// thread; allocation-free after a thread's first call of this size.
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
    let (l, s, d, _) = dims(&q, &k, &v, bias.as_ref(), out.len(), out_stride);
    if l == 0 {
        return;
    }
    let reach = p.visibility.visible(l - 1).min(s);
    if reach > ROWS_MAX_KEYS {
        return attention_head_tiled(q, k, v, bias, p, out, out_stride);
    }
    let isa = vecmath::selected();
    let stride = reach.div_ceil(isa.lanes()).max(1) * isa.lanes();
    ROWS_SCRATCH.with_borrow_mut(|(kt, scores)| {
        let (kt, scores) = (grow(kt, d * stride), grow(scores, super::rows::scores_len(l, stride)));
        super::rows::transpose_keys(&k.slice_rows(0..reach), stride, kt);
        let vis = Visibility { valid_keys: p.visibility.valid_keys.min(reach), ..p.visibility };
        let p = HeadParams { visibility: vis, ..*p };
        isa.attend_rows(q, kt, stride, v.slice_rows(0..reach), bias, &p, scores, out, out_stride);
    })
}

thread_local! {
    /// Transposed keys and one row of scores for [`attention_head`]'s row path.
    static ROWS_SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Exact attention of one head, tiled (see the module doc). `out` row `i` starts at
/// `i * out_stride`. Runs on the calling thread; callers parallelise over heads and
/// query blocks (pass `q.slice_rows(..)` and a visibility shifted by the block's
/// first row, see [`Visibility::causal`]). Allocation-free after a thread's first
/// call of this size.
///
/// The tiles are computed transposed (`S^T = K_blk Q_blk^T`, `O^T += V_blk^T P^T`):
/// both left operands belong to the key block and are packed once for all query
/// blocks, the weights feed the second product as a row-major right operand without
/// reshuffling, and the online-softmax bookkeeping runs along rows, across queries,
/// in full vectors.
///
/// # Panics
/// If an operand is shorter than its shape claims or shapes disagree.
pub fn attention_head_tiled(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    out: &mut [f32],
    out_stride: usize,
) {
    let (l, s, d, dv) = dims(&q, &k, &v, bias.as_ref(), out.len(), out_stride);
    if l == 0 {
        return;
    }
    let vis = Visibility { valid_keys: p.visibility.valid_keys.min(s), ..p.visibility };
    let kernel = gemm::selected();
    let isa = vecmath::selected();
    let blocks = l.div_ceil(BLOCK_Q);
    crate::parallel::serial(|| {
        SCRATCH.with_borrow_mut(|sc| {
            let Scratch { scores, acc, max, sum, col, k: kp, vt, qt } = sc;
            let scores = grow(scores, BLOCK_Q * BLOCK_K);
            let acc = grow(acc, blocks * BLOCK_Q * dv);
            acc.fill(0.0);
            let (max, sum) = (grow(max, l), grow(sum, l));
            max.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            let col = grow(col, 3 * BLOCK_Q);
            if qt.len() < blocks {
                qt.resize_with(blocks, || PackedB::new(kernel, MatRef::new(&[], 0, 0)));
            }
            for (b, packed) in qt[..blocks].iter_mut().enumerate() {
                let (i0, bq) = (b * BLOCK_Q, BLOCK_Q.min(l - b * BLOCK_Q));
                let qm =
                    MatRef { data: &q.data[i0 * q.stride..], rows: bq, cols: d, row_stride: q.stride, col_stride: 1 };
                packed.repack(kernel, qm.t());
            }
            // Visibility is a prefix growing with the query index: the last query sees most.
            let reach = vis.visible(l - 1);
            for j0 in (0..reach).step_by(BLOCK_K) {
                let bk = BLOCK_K.min(reach - j0);
                kp.repack(
                    kernel,
                    MatRef { data: &k.data[j0 * k.stride..], rows: bk, cols: d, row_stride: k.stride, col_stride: 1 },
                );
                vt.repack(
                    kernel,
                    MatRef { data: &v.data[j0 * v.stride..], rows: bk, cols: dv, row_stride: v.stride, col_stride: 1 }
                        .t(),
                );
                for (b, qb) in qt[..blocks].iter().enumerate() {
                    let (i0, bq) = (b * BLOCK_Q, BLOCK_Q.min(l - b * BLOCK_Q));
                    if vis.visible(i0 + bq - 1) <= j0 {
                        continue; // no query of this block sees key block j0
                    }
                    let st = &mut scores[..bk * bq];
                    gemm::sgemm_a_packed(kernel, p.scale, kp, BSource::Packed(qb, 0), 0.0, st, &Epilogue::NONE);
                    let tile = TileT { i0, bq, j0, vis };
                    tile.weights(st, bias.as_ref(), p.softcap, &mut max[i0..i0 + bq], &mut sum[i0..i0 + bq], col, isa);
                    let acc_blk = &mut acc[b * BLOCK_Q * dv..][..dv * bq];
                    let corr = &col[2 * BLOCK_Q..2 * BLOCK_Q + bq];
                    if corr.iter().any(|&c| c != 1.0) {
                        for row in acc_blk.chunks_exact_mut(bq) {
                            row.iter_mut().zip(corr).for_each(|(a, c)| *a *= c);
                        }
                    }
                    gemm::sgemm_a_packed(
                        kernel,
                        1.0,
                        vt,
                        BSource::Mat(MatRef::new(st, bk, bq)),
                        1.0,
                        acc_blk,
                        &Epilogue::NONE,
                    );
                }
            }
            for b in 0..blocks {
                let (i0, bq) = (b * BLOCK_Q, BLOCK_Q.min(l - b * BLOCK_Q));
                let acc_blk = &acc[b * BLOCK_Q * dv..][..dv * bq];
                for r in 0..bq {
                    // sum = 0 (no visible key) gives 0/0 = NaN, the documented result.
                    let inv = 1.0 / sum[i0 + r];
                    let o = &mut out[(i0 + r) * out_stride..][..dv];
                    o.iter_mut().enumerate().for_each(|(c, o)| *o = acc_blk[c * bq + r] * inv);
                }
            }
        })
    })
}

/// One transposed tile: keys `j0 .. j0 + rows` by queries `i0 .. i0 + bq`.
struct TileT {
    i0: usize,
    bq: usize,
    j0: usize,
    vis: Visibility,
}

impl TileT {
    /// Turns the scores `st` (`bk x bq`) into online-softmax weights in place,
    /// updating the queries' running `max` and `sum`; leaves each query's output
    /// correction `exp(old max - new max)` in `col[2 * BLOCK_Q..]`.
    #[allow(clippy::too_many_arguments)]
    fn weights(
        &self,
        st: &mut [f32],
        bias: Option<&Rows<'_>>,
        softcap: f32,
        max: &mut [f32],
        sum: &mut [f32],
        col: &mut [f32],
        isa: &vecmath::Isa,
    ) {
        let (i0, bq, j0) = (self.i0, self.bq, self.j0);
        if softcap > 0.0 {
            st.iter_mut().for_each(|x| *x /= softcap);
            isa.map_in_place(Func::Tanh, st);
            st.iter_mut().for_each(|x| *x *= softcap);
        }
        for (j, row) in st.chunks_exact_mut(bq).enumerate() {
            let key = j0 + j;
            if let Some(b) = bias {
                if b.stride == 0 {
                    let add = b.row(0)[key];
                    row.iter_mut().for_each(|x| *x += add);
                } else {
                    row.iter_mut().enumerate().for_each(|(r, x)| *x += b.data[(i0 + r) * b.stride + key]);
                }
            }
            // Queries before `first` do not see this key (causal): a prefix of the row.
            let first = match self.vis.causal_past {
                Some(past) => key.saturating_sub(past).saturating_sub(i0).min(bq),
                None => 0,
            };
            row[..first].fill(f32::NEG_INFINITY);
        }
        let (m_new, rest) = col.split_at_mut(BLOCK_Q);
        let (col_sum, corr) = rest.split_at_mut(BLOCK_Q);
        let (m_new, col_sum, corr) = (&mut m_new[..bq], &mut col_sum[..bq], &mut corr[..bq]);
        m_new.copy_from_slice(max);
        for row in st.chunks_exact(bq) {
            m_new.iter_mut().zip(row).for_each(|(m, &x)| *m = m.max(x));
        }
        // A query with nothing visible yet keeps max -inf; shifting by 0 then gives
        // exp(-inf) = 0 weights and a zero correction of its (zero) partial sums.
        for r in 0..bq {
            let shift = if m_new[r] == f32::NEG_INFINITY { 0.0 } else { m_new[r] };
            corr[r] = (max[r] - shift).exp();
            max[r] = m_new[r];
            m_new[r] = shift;
        }
        for row in st.chunks_exact_mut(bq) {
            row.iter_mut().zip(m_new.iter()).for_each(|(x, m)| *x -= m);
        }
        isa.map_in_place(Func::Exp, st);
        col_sum.fill(0.0);
        for row in st.chunks_exact(bq) {
            col_sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
        for r in 0..bq {
            sum[r] = sum[r] * corr[r] + col_sum[r];
        }
    }
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

    type HeadFn = fn(Rows<'_>, Rows<'_>, Rows<'_>, Option<Rows<'_>>, &HeadParams, &mut [f32], usize);

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() }).fold(0.0, f32::max)
    }

    #[test]
    fn tiled_matches_the_f64_reference_on_ragged_shapes_masks_and_strides() {
        let mut rng = Lcg(7);
        // (L, S, d, dv): below, at and across the tile sizes
        for &(l, s, d, dv) in &[
            (1usize, 1usize, 4usize, 4usize),
            (3, 5, 8, 3),
            (24, 24, 16, 16),
            (9, 128, 16, 20),
            (40, 97, 24, 33),
            (65, 300, 16, 8),
            (130, 513, 32, 40),
            (64, 256, 64, 64),
        ] {
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
                    attention_head_naive(qr, kr, vr, br, &p, &mut want, 2 * dv);
                    for (path, f) in [("dispatch", attention_head as HeadFn), ("tiled", attention_head_tiled)] {
                        got.fill(7.0);
                        f(qr, kr, vr, br, &p, &mut got, 2 * dv);
                        let e = max_err(&got, &want);
                        assert!(
                            e < 2e-5,
                            "{path}: L {l} S {s} d {d} dv {dv} causal {causal:?} valid {valid}: error {e}"
                        );
                        // the other head's slots are untouched
                        assert!(got.chunks(dv).skip(1).step_by(2).all(|c| c.iter().all(|&x| x == 7.0)));
                    }
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
