//! Exact scaled-dot-product attention for one (batch, head), tiled with an online
//! softmax (the FlashAttention recurrence, Dao et al. 2022, on a CPU's caches).
//!
//! Queries go a GEMM micro-kernel panel (`NR` queries: 32 on AVX-512) at a time and
//! keys a tile of about [`KEY_TILE`] at a time. Per tile, the micro-kernel writes the
//! transposed scores `K_tile (s Q_panel)^T` `MR` keys at a time into a buffer that is
//! already laid out as the packed right operand of the second product; one
//! vectorised pass per tile ([`crate::vecmath::Isa::online_softmax_cols`]) turns them
//! into `exp(s - m)` weights while updating each query's running max `m` and sum
//! `l` and rescaling its partial output by `exp(m_old - m_new)`; then the
//! micro-kernel accumulates `V_tile^T P^T` into the panel's output. No GEMM driver,
//! no copies between the two products, and the `L x S` score matrix never exists:
//! memory is `O((L + S) * d)` (the packed operands) plus one `KEY_TILE x NR` tile.
//! Key tiles no query of a panel can see (causal, padding) are skipped.
//!
//! `out_i = sum_j softmax_j(s_ij) v_j` over the keys query `i` sees ([`Visibility`]),
//! with `s_ij = scale * q_i . k_j`, then `softcap * tanh(s / softcap)` when
//! `softcap > 0`, then `+ bias_ij`. A query that sees no key gets NaN (the softmax
//! of an empty or all `-inf` row is undefined; ONNX's reference gives NaN too).

use super::rows::Keys;
use super::{Rows, Visibility};
use crate::gemm::{self, MatRef, MicroKernel, PackedA, PackedB, KC};
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

/// Keys per tile, before rounding down to a multiple of the micro-kernel's `MR`
/// (one packing slice deep, so a tile's value panels are contiguous).
const KEY_TILE: usize = 256;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread working memory, kept between calls (no allocation once warm).
#[derive(Default)]
struct Scratch {
    /// The queries times the scale, row-major, before packing.
    qs: Vec<f32>,
    /// `(scale Q)^T`, packed in `NR`-wide panels: the right operand of `S^T = K Q^T`.
    qt: Option<PackedB>,
    /// Per key tile: its keys (left operand of `S^T`) and its values transposed
    /// (left operand of `O^T += V^T P^T`), both in `MR`-tall panels.
    k: Vec<PackedA>,
    vt: Vec<PackedA>,
    /// One tile of transposed scores, then weights: `KEY_TILE x NR`, laid out as one
    /// packed right-operand panel of the second product.
    scores: Vec<f32>,
    /// One micro-kernel tile (`MR x NR`).
    tile: Vec<f32>,
    /// The current query panel's unnormalised output, transposed (`dv x NR`), and
    /// its queries' running max and sum.
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Products whose queries see at most this many keys run a query at a time
/// ([`super::rows`]): packing tiles would cost more than it saves...
pub const ROWS_MAX_KEYS: usize = 128;

/// ... unless both the queries and the keys number at least this many: then the
/// tiled kernel wins (one AVX-512 core, L = S = 128: 44 against 64 us; at 64 the
/// row path is still ahead, 17 against 19 us).
const TILED_MIN: usize = 64;

/// At most this many queries over more than [`ROWS_MAX_KEYS`] keys (a decode step
/// over a KV cache) also run a query at a time, with the keys read in place: a
/// tile of queries would be mostly padding, and packing the keys would cost more
/// than the dot products (`DECODE_MAX_QUERIES` chosen from `attention_decode`
/// in benches/attention.rs).
pub const DECODE_MAX_QUERIES: usize = 8;

/// Exact attention of one head. `out` row `i` starts at `i * out_stride`. Queries
/// that see few keys (at most [`ROWS_MAX_KEYS`], or fewer than `TILED_MIN` queries
/// or keys) run a query at a time against transposed keys, at most
/// [`DECODE_MAX_QUERIES`] queries over more keys a query at a time against the
/// keys in place, the rest through [`attention_head_tiled`]. Runs on the calling
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
    let in_place = reach > ROWS_MAX_KEYS && l <= DECODE_MAX_QUERIES;
    if !in_place && (reach > ROWS_MAX_KEYS || (l >= TILED_MIN && reach > TILED_MIN)) {
        return attention_head_tiled(q, k, v, bias, p, out, out_stride);
    }
    let isa = vecmath::selected();
    let stride = reach.div_ceil(isa.lanes()).max(1) * isa.lanes();
    let vis = Visibility { valid_keys: p.visibility.valid_keys.min(reach), ..p.visibility };
    let p = HeadParams { visibility: vis, ..*p };
    let (k, v) = (k.slice_rows(0..reach), v.slice_rows(0..reach));
    ROWS_SCRATCH.with_borrow_mut(|(kt, scores)| {
        let scores = grow(scores, super::rows::scores_len(l, stride));
        let keys = if in_place {
            Keys::Rows(k)
        } else {
            let kt = grow(kt, d * stride);
            super::rows::transpose_keys(&k, stride, kt);
            Keys::Transposed(kt, stride)
        };
        isa.attend_rows(q, keys, stride, v, bias, &p, scores, out, out_stride);
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
/// Queries go a micro-kernel panel (`NR` of them) at a time, keys a tile of about
/// [`KEY_TILE`] at a time, and the tiles are computed transposed, straight from the
/// GEMM micro-kernel (no driver, no copies): `S^T = K_tile (s Q_panel)^T` lands
/// `MR` keys at a time in a buffer that *is* the packed right operand of `O^T +=
/// V_tile^T P^T`; the online-softmax step runs along its rows, across queries, in
/// full vectors. Keys, transposed values and queries are packed once per call, so
/// memory is `O((L + S) * d)`.
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
    let (mr, nr) = (kernel.mr, kernel.nr);
    let bk = (KEY_TILE / mr).max(1) * mr;
    debug_assert!(bk <= KC);
    // Visibility is a prefix growing with the query index: the last query sees most.
    let reach_all = vis.visible(l - 1);
    let tiles = reach_all.div_ceil(bk);
    crate::parallel::serial(|| {
        SCRATCH.with_borrow_mut(|sc| {
            let Scratch { qs, qt, k: kp, vt, scores, tile, acc, max, sum } = sc;
            let qs = grow(qs, l * d);
            for (i, dst) in qs.chunks_exact_mut(d).enumerate() {
                dst.iter_mut().zip(q.row(i)).for_each(|(o, &x)| *o = x * p.scale);
            }
            let qt = qt.get_or_insert_with(|| PackedB::new(kernel, MatRef::new(&[], 0, 0)));
            qt.repack(kernel, MatRef::new(qs, l, d).t());
            if kp.len() < tiles {
                kp.resize_with(tiles, PackedA::default);
                vt.resize_with(tiles, PackedA::default);
            }
            for (t, (kt, vtt)) in kp.iter_mut().zip(vt.iter_mut()).take(tiles).enumerate() {
                let (j0, n) = (t * bk, bk.min(reach_all - t * bk));
                kt.repack(
                    kernel,
                    MatRef { data: &k.data[j0 * k.stride..], rows: n, cols: d, row_stride: k.stride, col_stride: 1 },
                );
                let vm =
                    MatRef { data: &v.data[j0 * v.stride..], rows: n, cols: dv, row_stride: v.stride, col_stride: 1 };
                vtt.repack(kernel, vm.t());
            }
            let scores = grow(scores, bk * nr);
            let tile = grow(tile, mr * nr);
            let acc = grow(acc, dv * nr);
            let (max, sum) = (grow(max, nr), grow(sum, nr));
            for (jp, i0) in (0..l).step_by(nr).enumerate() {
                let w = nr.min(l - i0);
                acc.fill(0.0);
                max.fill(f32::NEG_INFINITY);
                sum.fill(0.0);
                let reach = vis.visible(i0 + w - 1);
                for t in 0..reach.div_ceil(bk) {
                    let (j0, n) = (t * bk, bk.min(reach - t * bk));
                    let st = &mut scores[..n.div_ceil(mr) * mr * nr];
                    key_scores(kernel, &kp[t], qt, jp, d, st, tile);
                    let st = &mut st[..n * nr];
                    let panel = Panel { i0, w, j0, vis };
                    panel.adjust(st, nr, bias.as_ref(), p.softcap, isa);
                    isa.online_softmax_cols(st, nr, max, sum, acc);
                    let vtt = &vt[t];
                    let kc = vtt.cols();
                    for (ip, rows) in acc.chunks_mut(mr * nr).enumerate() {
                        (kernel.run)(n, &vtt.panels(ip * mr, 0, kc)[..n * mr], st, tile);
                        rows.iter_mut().zip(tile.iter()).for_each(|(a, t)| *a += t);
                    }
                }
                for c in 0..w {
                    // sum = 0 (no visible key) gives 0/0 = NaN, the documented result.
                    let inv = 1.0 / sum[c];
                    let o = &mut out[(i0 + c) * out_stride..][..dv];
                    o.iter_mut().enumerate().for_each(|(ch, o)| *o = acc[ch * nr + c] * inv);
                }
            }
        })
    })
}

/// `st = K_tile (s Q_panel)^T` for query panel `jp`, written `MR` keys at a time by
/// the micro-kernel straight into `st` (`keys x NR`, rows past the tile's keys
/// hold scores of zero padding); head sizes above one packing slice add up slices
/// through `tile`.
fn key_scores(kernel: MicroKernel, kt: &PackedA, qt: &PackedB, jp: usize, d: usize, st: &mut [f32], tile: &mut [f32]) {
    let (mr, nr) = (kernel.mr, kernel.nr);
    for p0 in (0..d).step_by(KC) {
        let kc = KC.min(d - p0);
        let b = &qt.panels(p0, kc, jp)[..kc * nr];
        for (ip, rows) in st.chunks_exact_mut(mr * nr).enumerate() {
            let a = &kt.panels(ip * mr, p0, kc)[..kc * mr];
            if p0 == 0 {
                (kernel.run)(kc, a, b, rows);
            } else {
                (kernel.run)(kc, a, b, tile);
                rows.iter_mut().zip(tile.iter()).for_each(|(r, t)| *r += t);
            }
        }
    }
}

/// One tile of transposed scores: keys `j0 ..` by the `NR` queries `i0 ..` of a
/// panel, of which the first `w` exist.
struct Panel {
    i0: usize,
    w: usize,
    j0: usize,
    vis: Visibility,
}

impl Panel {
    /// Softcap, bias and the causal mask, in place on the scaled scores `st`
    /// (`keys x width`).
    fn adjust(&self, st: &mut [f32], width: usize, bias: Option<&Rows<'_>>, softcap: f32, isa: &vecmath::Isa) {
        let (i0, w, j0) = (self.i0, self.w, self.j0);
        if softcap > 0.0 {
            st.iter_mut().for_each(|x| *x /= softcap);
            isa.map_in_place(Func::Tanh, st);
            st.iter_mut().for_each(|x| *x *= softcap);
        }
        let first_masked = self.vis.visible(i0);
        for (j, row) in st.chunks_exact_mut(width).enumerate() {
            let key = j0 + j;
            if let Some(b) = bias {
                if b.stride == 0 {
                    let add = b.row(0)[key];
                    row.iter_mut().for_each(|x| *x += add);
                } else {
                    row[..w].iter_mut().enumerate().for_each(|(r, x)| *x += b.data[(i0 + r) * b.stride + key]);
                }
            }
            // Queries before `first` do not see this key (causal): a prefix of the row.
            if let (Some(past), true) = (self.vis.causal_past, key >= first_masked) {
                let first = key.saturating_sub(past).saturating_sub(i0).min(width);
                row[..first].fill(f32::NEG_INFINITY);
            }
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
            // a head size above one packing slice (the score tiles add up slices)
            (70, 200, 300, 16),
            // decode: a few queries over many keys, read in place by the row path
            // (head sizes off the vector width, short last blocks of queries)
            (1, 300, 16, 8),
            (3, 700, 19, 7),
            (8, 513, 64, 64),
            (5, 200, 40, 33),
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
