//! Exact attention of one head a query at a time, for products too small for the
//! tiled kernel's packing to pay off: a few dozen keys (a short encoder window or a
//! streaming step), or a few queries over many keys (a decode step over a KV
//! cache). With few keys, they are held transposed (`d x S`, padded to whole
//! vectors), so a query's scores are `d` vector FMAs per `LANES` keys with no
//! horizontal sums; with few queries, the keys are read in place, one dot product
//! per (query, key), as transposing or packing them would cost more than the dots.
//! Then the softmax over the visible keys and a weighted sum of the value rows,
//! both in full vectors.
//!
//! The result is the one [`super::exact::attention_head`] defines (same visibility,
//! softcap, bias and NaN rules); only the order of the additions differs.

use super::exact::HeadParams;
use super::Rows;
use crate::vecmath::driver::{load_padded, store_partial};
use crate::vecmath::funcs::{exp, tanh};
use crate::vecmath::simd::Simd;

/// Lane indices, for masking the lanes of a vector past the last key.
const IOTA: [f32; 16] = [0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.];

/// Keys `k` (`S x d`) transposed into `kt` (`d` rows of `stride >= S` values, zero
/// past `S`).
pub(crate) fn transpose_keys(k: &Rows<'_>, stride: usize, kt: &mut [f32]) {
    let (s, d) = (k.rows, k.cols);
    assert!(stride >= s && kt.len() >= d * stride, "key buffer too small");
    for (c, row) in kt.chunks_exact_mut(stride).take(d).enumerate() {
        for (j, slot) in row[..s].iter_mut().enumerate() {
            *slot = k.data[j * k.stride + c];
        }
        row[s..].fill(0.0);
    }
}

/// Where [`attend`] reads the keys from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keys<'a> {
    /// Transposed by [`transpose_keys`]: `d` rows of a stride that is a multiple of
    /// the vector width.
    Transposed(&'a [f32], usize),
    /// In place, `S x d`.
    Rows(Rows<'a>),
}

/// Queries computed together: their independent FMA and `exp` chains interleave,
/// and each key and value vector loaded serves all of them.
const QB: usize = 4;

/// Floats of `scores` scratch [`attend`] needs for `l` queries and key stride `stride`.
pub(crate) fn scores_len(l: usize, stride: usize) -> usize {
    let rows = l.div_ceil(QB) * QB;
    rows * stride + rows
}

/// Attention of every query of `q` against `keys`, values `v`, optional additive
/// `bias`; `kt_stride` (a multiple of `S::LANES`, at least the keys any query
/// sees) is the transposed keys' stride and the row stride of the weights in
/// `scores`, which holds at least [`scores_len`] floats. Output row `i` at
/// `i * out_stride`.
///
/// Two phases: every query's softmax weights first, then the weighted sums, so the
/// weights are read back long after they were stored (a scalar load right behind a
/// vector store of the same bytes stalls store-to-load forwarding).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn attend<S: Simd>(
    s: S,
    q: Rows<'_>,
    keys: Keys<'_>,
    kt_stride: usize,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    scores: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let (l, dv) = (q.rows, v.cols);
    let lanes = S::LANES;
    assert!(lanes <= IOTA.len() && kt_stride.is_multiple_of(lanes), "bad key stride");
    assert!(scores.len() >= scores_len(l, kt_stride), "buffers too small");
    match keys {
        Keys::Transposed(kt, stride) => assert!(stride == kt_stride && kt.len() >= q.cols * kt_stride, "bad keys"),
        Keys::Rows(k) => assert!(k.in_bounds() && k.cols == q.cols && k.rows >= v.rows, "bad keys"),
    }
    let (weights, inv_total) = scores.split_at_mut(l.div_ceil(QB) * QB * kt_stride);
    let scale = s.splat(p.scale);
    let (cap, inv_cap) = (s.splat(p.softcap), s.splat(1.0 / p.softcap));
    let neg_inf = s.splat(f32::NEG_INFINITY);
    let iota = s.load(&IOTA[..lanes]);
    // A short last block repeats its last query; the copies are not stored.
    let block = |i0: usize| -> [usize; QB] { std::array::from_fn(|r| (i0 + r).min(l - 1)) };
    let seen = |i: usize| p.visibility.visible(i).min(v.rows);
    for i0 in (0..l).step_by(QB) {
        let rows = block(i0);
        let n_max = rows.iter().map(|&i| seen(i)).max().unwrap_or(0);
        let padded = n_max.div_ceil(lanes) * lanes;
        let qs = rows.map(|i| q.row(i));
        let w = &mut weights[i0 * kt_stride..(i0 + QB) * kt_stride];
        // Scores in whole vectors; lanes past a query's last key become -inf.
        let mut vmax = [neg_inf; QB];
        for j0 in (0..padded).step_by(lanes) {
            let acc = match keys {
                Keys::Transposed(kt, _) => {
                    let mut acc = [s.splat(0.0); QB];
                    for c in 0..q.cols {
                        let kv = s.load(&kt[c * kt_stride + j0..]);
                        for r in 0..QB {
                            acc[r] = s.mul_add(s.splat(qs[r][c]), kv, acc[r]);
                        }
                    }
                    acc
                }
                Keys::Rows(k) => {
                    // One dot per (query, key); keys past the last one score 0
                    // (masked below).
                    // A short last block computes its real queries only.
                    let mut dots = [[0.0f32; 16]; QB];
                    let real = QB.min(l - i0);
                    for (jj, j) in (j0..(j0 + lanes).min(n_max)).enumerate() {
                        let key = k.row(j);
                        if real == 1 {
                            dots[0][jj] = dot(s, qs[0], key);
                        } else {
                            let d = dot4(s, &qs, key);
                            for r in 0..QB {
                                dots[r][jj] = d[r];
                            }
                        }
                    }
                    for r in real..QB {
                        dots[r] = dots[real - 1];
                    }
                    dots.map(|row| s.load(&row[..lanes]))
                }
            };
            for r in 0..QB {
                let mut x = s.mul(acc[r], scale);
                if p.softcap > 0.0 {
                    x = s.mul(cap, tanh(s, s.mul(x, inv_cap)));
                }
                if let Some(b) = &bias {
                    let row = &b.data[rows[r] * b.stride..];
                    let bv = if row.len() >= j0 + lanes {
                        s.load(&row[j0..])
                    } else {
                        load_padded(s, &row[j0..n_max.min(row.len())], 0.0)
                    };
                    x = s.add(x, bv);
                }
                let n = seen(rows[r]);
                if j0 + lanes > n {
                    x = s.select(s.lt(iota, s.splat(n as f32 - j0 as f32)), x, neg_inf);
                }
                vmax[r] = s.max(vmax[r], x);
                s.store(x, &mut w[r * kt_stride + j0..]);
            }
        }
        let m = vmax.map(|v| s.splat(s.reduce_max(v)));
        let mut total = [s.splat(0.0); QB];
        for j0 in (0..padded).step_by(lanes) {
            for r in 0..QB {
                let at = r * kt_stride + j0;
                let e = exp(s, s.sub(s.load(&w[at..]), m[r]));
                total[r] = s.add(total[r], e);
                s.store(e, &mut w[at..]);
            }
        }
        for r in 0..QB {
            // No visible key: 0 / 0, the NaN the reference gives.
            inv_total[i0 + r] = if seen(rows[r]) == 0 { f32::NAN } else { 1.0 / s.reduce_sum(total[r]) };
        }
    }
    for i0 in (0..l).step_by(QB) {
        let n_max = block(i0).iter().map(|&i| seen(i)).max().unwrap_or(0);
        let w = &weights[i0 * kt_stride..(i0 + QB) * kt_stride];
        let inv: [S::F; QB] = std::array::from_fn(|r| s.splat(inv_total[i0 + r]));
        let mut c0 = 0;
        while c0 < dv {
            let full = c0 + lanes <= dv;
            let mut acc = [s.splat(0.0); QB];
            for j in 0..n_max {
                let vrow = &v.data[j * v.stride..];
                let vv = if full { s.load(&vrow[c0..]) } else { load_padded(s, &vrow[c0..dv], 0.0) };
                for r in 0..QB {
                    acc[r] = s.mul_add(s.splat(w[r * kt_stride + j]), vv, acc[r]);
                }
            }
            for r in 0..QB.min(l - i0) {
                let o = &mut out[(i0 + r) * out_stride..][..dv];
                let y = s.mul(acc[r], inv[r]);
                if full {
                    s.store(y, &mut o[c0..]);
                } else {
                    store_partial(s, y, &mut o[c0..]);
                }
            }
            c0 += lanes;
        }
    }
}

/// `QB` dot products of `key` with the queries `qs` (each at least `key.len()` long),
/// sharing every key vector load.
#[inline(always)]
fn dot4<S: Simd>(s: S, qs: &[&[f32]; QB], key: &[f32]) -> [f32; QB] {
    let (d, lanes) = (key.len(), S::LANES);
    let mut acc = [s.splat(0.0); QB];
    let mut c = 0;
    while c + lanes <= d {
        let kv = s.load(&key[c..]);
        for r in 0..QB {
            acc[r] = s.mul_add(s.load(&qs[r][c..]), kv, acc[r]);
        }
        c += lanes;
    }
    let mut out = acc.map(|a| s.reduce_sum(a));
    for (r, o) in out.iter_mut().enumerate() {
        *o += qs[r][c..d].iter().zip(&key[c..]).map(|(a, b)| a * b).sum::<f32>();
    }
    out
}

/// `q . key` (`q` at least `key.len()` long).
#[inline(always)]
fn dot<S: Simd>(s: S, q: &[f32], key: &[f32]) -> f32 {
    let (d, lanes) = (key.len(), S::LANES);
    let (mut a0, mut a1) = (s.splat(0.0), s.splat(0.0));
    let mut c = 0;
    while c + 2 * lanes <= d {
        a0 = s.mul_add(s.load(&q[c..]), s.load(&key[c..]), a0);
        a1 = s.mul_add(s.load(&q[c + lanes..]), s.load(&key[c + lanes..]), a1);
        c += 2 * lanes;
    }
    if c + lanes <= d {
        a0 = s.mul_add(s.load(&q[c..]), s.load(&key[c..]), a0);
        c += lanes;
    }
    s.reduce_sum(s.add(a0, a1)) + q[c..d].iter().zip(&key[c..]).map(|(a, b)| a * b).sum::<f32>()
}
