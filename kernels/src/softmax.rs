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
use crate::vecmath::funcs::exp;
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
