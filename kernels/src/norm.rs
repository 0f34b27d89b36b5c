//! Row kernels for the normalisations: LayerNormalization-17, RMSNormalization-23
//! (ONNX spec), and the fused mean/variance they share.
//!
//! Each reads the row twice: one pass for the statistics, one that normalises and
//! applies the affine transform. Pure functions on slices, written once over
//! [`Simd`](crate::vecmath::simd::Simd) and run on the instruction set chosen once by
//! [`crate::vecmath::selected`].

use crate::vecmath::driver::{load_padded, store_partial};
use crate::vecmath::simd::Simd;

/// Mean and population variance (divided by `n`) of `x` in one pass; `(0, 0)` when
/// `x` is empty.
///
/// Sums `d = x - x[0]` and `d^2` (the "shifted data" algorithm, Chan, Golub & LeVeque
/// 1983) so that a large common offset does not cancel the variance away, as it would
/// in `E[x^2] - E[x]^2`; per-lane partial sums keep the rounding error near
/// `n / lanes` additions. Relative error against f64 is below `1e-5` for rows of a
/// few thousand elements unless the spread is many orders of magnitude below
/// `|x[0] - mean|`.
pub fn mean_var(x: &[f32]) -> (f32, f32) {
    crate::vecmath::selected().mean_var(x)
}

/// Mean and population variance of `x` accumulated in f64 (two passes, eight
/// independent partial sums so the adds pipeline and vectorise): exact to f64
/// rounding, for callers whose outputs cancel against a bias and need the
/// statistics correctly rounded to f32. `(0, 0)` when `x` is empty.
pub fn mean_var_f64(x: &[f32]) -> (f64, f64) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let n = x.len() as f64;
    let mean = lanes_sum(x, |v| v as f64) / n;
    let var = lanes_sum(x, |v| (v as f64 - mean) * (v as f64 - mean)) / n;
    (mean, var)
}

/// `sum f(x_i)` in f64 over eight independent partial sums.
#[inline]
fn lanes_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail
}

/// `out = (x - mean) / sqrt(var + eps) * gamma + beta` over one row (LayerNormalization
/// with the normalised axes flattened into the row).
///
/// # Panics
/// If `gamma`, `beta` (when given) or `out` differ in length from `x`.
pub fn layer_norm_row(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    crate::vecmath::selected().layer_norm_row(x, gamma, beta, eps, out)
}

/// `out = x / sqrt(mean(x^2) + eps) * gamma` over one row (RMSNormalization).
///
/// # Panics
/// If `gamma` or `out` differ in length from `x`.
pub fn rms_norm_row(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    crate::vecmath::selected().rms_norm_row(x, gamma, eps, out)
}

/// [`mean_var`] on instruction set `S`.
#[inline(always)]
pub(crate) fn mean_var_row<S: Simd>(s: S, x: &[f32]) -> (f32, f32) {
    let (shift, mean_d, var) = shifted_stats(s, x);
    (shift + mean_d, var)
}

/// `(k, mean - k, variance)` with `k = x[0]`; keeping `mean - k` apart lets callers
/// form `x - mean` as `(x - k) - (mean - k)`, exact to f32 rounding even when the
/// spread is far below the ulp of the mean.
#[inline(always)]
fn shifted_stats<S: Simd>(s: S, x: &[f32]) -> (f32, f32, f32) {
    let Some(&shift) = x.first() else { return (0.0, 0.0, 0.0) };
    let k = s.splat(shift);
    let (mut s1, mut s2) = (s.splat(0.0), s.splat(0.0));
    let mut xs = x.chunks_exact(S::LANES);
    for xv in &mut xs {
        let d = s.sub(s.load(xv), k);
        s1 = s.add(s1, d);
        s2 = s.mul_add(d, d, s2);
    }
    if !xs.remainder().is_empty() {
        // Padding with the shift itself adds d = 0 to both sums.
        let d = s.sub(load_padded(s, xs.remainder(), shift), k);
        s1 = s.add(s1, d);
        s2 = s.mul_add(d, d, s2);
    }
    let n = x.len() as f32;
    let mean_d = s.reduce_sum(s1) / n;
    let var = (s.reduce_sum(s2) / n - mean_d * mean_d).max(0.0);
    (shift, mean_d, var)
}

/// [`layer_norm_row`] on instruction set `S`.
#[inline(always)]
pub(crate) fn layer_norm<S: Simd>(s: S, x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(gamma.len() == n && out.len() == n, "layer_norm_row: x {n}, gamma {}, out {}", gamma.len(), out.len());
    if let Some(b) = beta {
        assert_eq!(b.len(), n, "layer_norm_row: beta length differs from x");
    }
    let (shift, mean_d, var) = shifted_stats(s, x);
    let (k, mean_d, inv) = (s.splat(shift), s.splat(mean_d), s.splat(1.0 / (var + eps).sqrt()));
    let l = S::LANES;
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let b = match beta {
            Some(b) => s.load(&b[i..]),
            None => s.splat(0.0),
        };
        s.store(affine(s, s.load(&x[i..]), k, mean_d, inv, s.load(&gamma[i..]), b), &mut out[i..]);
        i += l;
    }
    if full < n {
        let b = match beta {
            Some(b) => load_padded(s, &b[full..], 0.0),
            None => s.splat(0.0),
        };
        let v = affine(s, load_padded(s, &x[full..], 0.0), k, mean_d, inv, load_padded(s, &gamma[full..], 0.0), b);
        store_partial(s, v, &mut out[full..]);
    }
}

/// `((x - k) - mean_d) * inv * g + b`, i.e. `(x - mean) / std * g + b`.
#[inline(always)]
fn affine<S: Simd>(s: S, x: S::F, k: S::F, mean_d: S::F, inv: S::F, g: S::F, b: S::F) -> S::F {
    s.mul_add(s.mul(s.sub(s.sub(x, k), mean_d), inv), g, b)
}

/// [`rms_norm_row`] on instruction set `S`.
#[inline(always)]
pub(crate) fn rms_norm<S: Simd>(s: S, x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(gamma.len() == n && out.len() == n, "rms_norm_row: x {n}, gamma {}, out {}", gamma.len(), out.len());
    if n == 0 {
        return;
    }
    let mut acc = s.splat(0.0);
    let mut xs = x.chunks_exact(S::LANES);
    for xv in &mut xs {
        let v = s.load(xv);
        acc = s.mul_add(v, v, acc);
    }
    if !xs.remainder().is_empty() {
        let v = load_padded(s, xs.remainder(), 0.0);
        acc = s.mul_add(v, v, acc);
    }
    let inv = s.splat(1.0 / (s.reduce_sum(acc) / n as f32 + eps).sqrt());
    let l = S::LANES;
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        s.store(s.mul(s.mul(s.load(&x[i..]), inv), s.load(&gamma[i..])), &mut out[i..]);
        i += l;
    }
    if full < n {
        let v = s.mul(s.mul(load_padded(s, &x[full..], 0.0), inv), load_padded(s, &gamma[full..], 0.0));
        store_partial(s, v, &mut out[full..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_statistics_match_a_serial_f64_reference() {
        for n in [1usize, 7, 8, 9, 64, 1000] {
            // a large common offset and a small spread, the case f32 sums get wrong
            let x: Vec<f32> = (0..n).map(|i| 1000.0 + ((i * 37 % 11) as f32 - 5.0) * 1e-3).collect();
            let mean: f64 = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var: f64 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = mean_var_f64(&x);
            assert!((m - mean).abs() <= 1e-12 * mean.abs(), "n {n}: mean {m} vs {mean}");
            assert!((v - var).abs() <= 1e-9 * var.max(1e-30), "n {n}: var {v} vs {var}");
        }
        assert_eq!(mean_var_f64(&[]), (0.0, 0.0));
    }
}
