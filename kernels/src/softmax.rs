//! Softmax and log-softmax over one contiguous row, max-subtracted for stability
//! (ONNX Softmax-13 / LogSoftmax-13 along the last axis).
//!
//! Memory is read twice and written once: one pass for the maximum `m`, one fused
//! pass that writes `e^(x - m)` (the vector `exp` of [`crate::vecmath`]) and sums
//! it, then an in-cache scaling by `1 / sum`. Log-softmax needs no stored
//! exponentials: `x - m - ln(sum e^(x - m))`. The algorithms are written once over
//! [`Simd`](crate::vecmath::simd::Simd) and run on the instruction set chosen once by
//! [`crate::vecmath::selected`].
//!
//! A row holding NaN, or `+inf`, or only `-inf`, gives NaN everywhere (as the
//! definition does in any floating-point evaluation).

use crate::vecmath::driver::{load_padded, max, scale_in_place, store_partial};
use crate::vecmath::funcs::{exp, exp_weight};
use crate::vecmath::simd::Simd;

/// In-place softmax of one row: `e^(x_i - max) / sum_j e^(x_j - max)`.
pub fn softmax_f32(row: &mut [f32]) {
    crate::vecmath::selected().softmax_row(row)
}

/// In-place log-softmax of one row: `x_i - max - ln(sum_j e^(x_j - max))`.
pub fn log_softmax_f32(row: &mut [f32]) {
    crate::vecmath::selected().log_softmax_row(row)
}

/// Softmax of `row` in place, on instruction set `S`.
#[inline(always)]
pub(crate) fn softmax_row<S: Simd>(s: S, row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let m = s.splat(max(s, row));
    let mut acc = s.splat(0.0);
    let mut xs = row.chunks_exact_mut(S::LANES);
    for xv in &mut xs {
        let e = exp(s, s.sub(s.load(xv), m));
        s.store(e, xv);
        acc = s.add(acc, e);
    }
    let tail = xs.into_remainder();
    if !tail.is_empty() {
        // Padding with -inf adds e^-inf = 0 to the sum.
        let e = exp(s, s.sub(load_padded(s, tail, f32::NEG_INFINITY), m));
        store_partial(s, e, tail);
        acc = s.add(acc, e);
    }
    scale_in_place(s, row, 1.0 / s.reduce_sum(acc));
}

/// One online-softmax step of the tiled attention kernel, on instruction set `S`,
/// over a tile of scores held keys by queries: `tile` is `rows x width` row-major and
/// column `c` belongs to query `c`. With `m_c = max(max[c], max_r tile[r][c])` and
/// the shift `z_c = m_c` (0 while `m_c` is still `-inf`): `tile[r][c] = exp(tile[r][c]
/// - z_c)`, `corr_c = exp(max[c] - z_c)`, `sum[c] = sum[c] * corr_c + sum_r tile[r][c]`,
/// every `width`-wide row of `acc` is multiplied by `corr`, and `max[c] = m_c`. A
/// column that is all `-inf` so far gets zero weights and a zero correction.
///
/// # Panics
/// If `max` or `sum` is not `width` long, or `tile` or `acc` is not whole rows.
#[inline(always)]
pub(crate) fn online_softmax_cols<S: Simd>(
    s: S,
    tile: &mut [f32],
    width: usize,
    max: &mut [f32],
    sum: &mut [f32],
    acc: &mut [f32],
) {
    assert!(width > 0 && max.len() == width && sum.len() == width, "online softmax: column state is not {width} wide");
    assert!(
        tile.len().is_multiple_of(width) && acc.len().is_multiple_of(width),
        "online softmax: a tile of ragged rows"
    );
    let ninf = f32::NEG_INFINITY;
    for c0 in (0..width).step_by(S::LANES) {
        let n = S::LANES.min(width - c0);
        let ld = |x: &[f32], pad: f32| {
            if n == S::LANES {
                s.load(&x[c0..c0 + n])
            } else {
                load_padded(s, &x[c0..c0 + n], pad)
            }
        };
        let st = |v: S::F, x: &mut [f32]| {
            if n == S::LANES {
                s.store(v, &mut x[c0..c0 + n])
            } else {
                store_partial(s, v, &mut x[c0..c0 + n])
            }
        };
        let old = ld(max, ninf);
        // Four running maxima, so the loop is not one chain of dependent `max`es.
        let mut m4 = [old; 4];
        let mut rows4 = tile.chunks_exact(4 * width);
        for rows in &mut rows4 {
            for (m, row) in m4.iter_mut().zip(rows.chunks_exact(width)) {
                *m = s.max(*m, ld(row, ninf));
            }
        }
        for row in rows4.remainder().chunks_exact(width) {
            m4[0] = s.max(m4[0], ld(row, ninf));
        }
        let m = s.max(s.max(m4[0], m4[1]), s.max(m4[2], m4[3]));
        let shift = s.select(s.eq(m, s.splat(ninf)), s.splat(0.0), m);
        let corr = exp_weight(s, s.sub(old, shift));
        let mut total = s.splat(0.0);
        for row in tile.chunks_exact_mut(width) {
            let e = exp_weight(s, s.sub(ld(row, ninf), shift));
            st(e, row);
            total = s.add(total, e);
        }
        st(s.mul_add(ld(sum, 0.0), corr, total), sum);
        st(m, max);
        for row in acc.chunks_exact_mut(width) {
            st(s.mul(ld(row, 0.0), corr), row);
        }
    }
}

/// One step of an online softmax on instruction set `S`: with `m = max(prev_max,
/// max(row))`, replaces `row` by `exp(row - m)` and returns `(m, sum(row))`. A row of
/// only `-inf` under `prev_max = -inf` becomes zeros and returns `(-inf, 0)`.
#[inline(always)]
pub(crate) fn exp_shifted_row<S: Simd>(s: S, row: &mut [f32], prev_max: f32) -> (f32, f32) {
    let m = if row.is_empty() { prev_max } else { max(s, row).max(prev_max) };
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return (m, 0.0);
    }
    let mv = s.splat(m);
    let mut acc = s.splat(0.0);
    let mut xs = row.chunks_exact_mut(S::LANES);
    for xv in &mut xs {
        let e = exp(s, s.sub(s.load(xv), mv));
        s.store(e, xv);
        acc = s.add(acc, e);
    }
    let tail = xs.into_remainder();
    if !tail.is_empty() {
        let e = exp(s, s.sub(load_padded(s, tail, f32::NEG_INFINITY), mv));
        store_partial(s, e, tail);
        acc = s.add(acc, e);
    }
    (m, s.reduce_sum(acc))
}

/// Log-softmax of `row` in place, on instruction set `S`.
#[inline(always)]
pub(crate) fn log_softmax_row<S: Simd>(s: S, row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let m = s.splat(max(s, row));
    let mut acc = s.splat(0.0);
    let mut xs = row.chunks_exact(S::LANES);
    for xv in &mut xs {
        acc = s.add(acc, exp(s, s.sub(s.load(xv), m)));
    }
    if !xs.remainder().is_empty() {
        acc = s.add(acc, exp(s, s.sub(load_padded(s, xs.remainder(), f32::NEG_INFINITY), m)));
    }
    let l = s.splat(s.reduce_sum(acc).ln());
    let mut xs = row.chunks_exact_mut(S::LANES);
    for xv in &mut xs {
        s.store(s.sub(s.sub(s.load(xv), m), l), xv);
    }
    let tail = xs.into_remainder();
    if !tail.is_empty() {
        let v = s.sub(s.sub(load_padded(s, tail, 0.0), m), l);
        store_partial(s, v, tail);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_matches_definition() {
        let mut r = [1.0f32, 2.0, 3.0];
        super::softmax_f32(&mut r);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        for (a, b) in r.iter().zip(e) {
            assert!((*a as f64 - b / s).abs() < 1e-6);
        }
    }
}
