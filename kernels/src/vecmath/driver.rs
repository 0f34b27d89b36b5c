//! Loops over slices shared by every vector kernel: full vectors first, then the
//! ragged tail as one padded vector, so each element of a row goes through the same
//! instructions whatever its position (an ISA path is bit-for-bit independent of the
//! slice length and alignment).

use super::funcs::VecOp;
use super::simd::{Simd, MAX_LANES};

/// Loads `tail` (shorter than a vector) with the missing lanes set to `pad`.
#[inline(always)]
pub fn load_padded<S: Simd>(s: S, tail: &[f32], pad: f32) -> S::F {
    let mut buf = [pad; MAX_LANES];
    buf[..tail.len()].copy_from_slice(tail);
    s.load(&buf[..S::LANES])
}

/// Stores the first `dst.len()` (fewer than a vector) lanes of `v`.
#[inline(always)]
pub fn store_partial<S: Simd>(s: S, v: S::F, dst: &mut [f32]) {
    let mut buf = [0.0; MAX_LANES];
    s.store(v, &mut buf[..S::LANES]);
    dst.copy_from_slice(&buf[..dst.len()]);
}

/// `out[i] = Op(x[i])`; the lengths must match.
#[inline(always)]
pub fn map<S: Simd, Op: VecOp>(s: S, x: &[f32], out: &mut [f32]) {
    let mut xs = x.chunks_exact(S::LANES);
    let mut os = out.chunks_exact_mut(S::LANES);
    for (xv, ov) in (&mut xs).zip(&mut os) {
        s.store(Op::eval(s, s.load(xv)), ov);
    }
    let tail = xs.remainder();
    if !tail.is_empty() {
        store_partial(s, Op::eval(s, load_padded(s, tail, 0.0)), os.into_remainder());
    }
}

/// `x[i] = Op(x[i])`.
#[inline(always)]
pub fn map_in_place<S: Simd, Op: VecOp>(s: S, x: &mut [f32]) {
    let mut xs = x.chunks_exact_mut(S::LANES);
    for xv in &mut xs {
        s.store(Op::eval(s, s.load(xv)), xv);
    }
    let tail = xs.into_remainder();
    if !tail.is_empty() {
        let v = Op::eval(s, load_padded(s, tail, 0.0));
        store_partial(s, v, tail);
    }
}

/// The largest element (`-inf` for an empty slice; NaN handling unspecified).
#[inline(always)]
pub fn max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut xs = x.chunks_exact(S::LANES);
    for xv in &mut xs {
        acc = s.max(acc, s.load(xv));
    }
    if !xs.remainder().is_empty() {
        acc = s.max(acc, load_padded(s, xs.remainder(), f32::NEG_INFINITY));
    }
    s.reduce_max(acc)
}

/// `x[i] *= c`.
#[inline(always)]
pub fn scale_in_place<S: Simd>(s: S, x: &mut [f32], c: f32) {
    let c = s.splat(c);
    let mut xs = x.chunks_exact_mut(S::LANES);
    for xv in &mut xs {
        s.store(s.mul(s.load(xv), c), xv);
    }
    let tail = xs.into_remainder();
    if !tail.is_empty() {
        let v = s.mul(load_padded(s, tail, 0.0), c);
        store_partial(s, v, tail);
    }
}
