//! The vector-math algorithms, each written once over [`Simd`].
//!
//! Accuracy of every function, measured against f64 over all 2^32 inputs, is in
//! `docs/vector-math.md` and on the public wrappers in `vecmath/mod.rs`.
//!
//! - `exp`: Cephes `expf` (S. L. Moshier): `x = k ln2 + r`, `|r| <= ln2 / 2`, with a
//!   two-constant (Cody-Waite) `ln2`, a degree-5 minimax polynomial for `e^r`, and the
//!   scaling by `2^k` split in two factors so that results that are subnormal are
//!   rounded once (gradual underflow, no flush) and `2^128 * 0.99..` does not overflow.
//! - `tanh`: Cephes `tanhf` odd polynomial for `|x| < 0.625`, `(1 - e) / (1 + e)` with
//!   `e = exp(-2|x|)` above (saturates to exactly 1 once `e < 2^-25`).
//! - `sigmoid`: `1 / (1 + e)` for `x >= 0` and `e / (1 + e)` for `x < 0`, `e = exp(-|x|)`:
//!   no cancellation, relative accuracy down to the subnormal range.
//! - `erf` / `erfc`: an odd polynomial `x + x Q(x^2)` (degree 5 in `x^2`) on
//!   `|x| < 0.921875`; above, `erfc(t) = T exp(-t^2 + P(T))` with `T = 1 / (1 + t / 2)`
//!   and `P` of degree 8 (the Numerical Recipes `erfcc` form, refitted on
//!   `[0.921875, 10.5]` by weighted least squares towards minimax, f32 coefficients).
//! - `gelu` uses `1 + erf(u) = erfc(-u)` directly from the `erfc` form for `|u| >=
//!   0.921875`, so it keeps relative accuracy for negative `x` (no `1 - 1` cancellation).
//! - `gelu_tanh` uses `0.5 (1 + tanh(y)) = sigmoid(2 y)`, `silu` is `x sigmoid(x)`.

use super::simd::{Simd, ROUND_MAGIC};

/// One element-wise function: a name and the vector code (which, over the one-lane
/// [`super::simd::Scalar`], is also the scalar code).
pub trait VecOp {
    const NAME: &'static str;
    fn eval<S: Simd>(s: S, x: S::F) -> S::F;
}

/// `if x is NaN { x } else { r }`: restores NaN after a clamp lost it.
#[inline(always)]
fn keep_nan<S: Simd>(s: S, x: S::F, r: S::F) -> S::F {
    s.select(s.eq(x, x), r, x)
}

/// Horner's rule, highest coefficient first.
#[inline(always)]
fn poly<S: Simd, const N: usize>(s: S, x: S::F, c: [f32; N]) -> S::F {
    let mut p = s.splat(c[0]);
    for &ci in &c[1..] {
        p = s.mul_add(p, x, s.splat(ci));
    }
    p
}

/// Round to the nearest integer, for `|v| < 2^22`.
#[inline(always)]
fn round<S: Simd>(s: S, v: S::F) -> S::F {
    let m = s.splat(ROUND_MAGIC);
    s.sub(s.add(v, m), m)
}

/// `e^x`. Below -104 the result rounds to 0, above 89 it is +inf.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::F) -> S::F {
    const LN2_HI: f32 = 0.693_359_4; // 355 / 512: k * LN2_HI is exact for |k| < 2^15
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = s.min(s.max(x, s.splat(-104.0)), s.splat(89.0));
    let k = round(s, s.mul(xc, s.splat(std::f32::consts::LOG2_E))); // in [-150, 128]
    let r = s.mul_add(k, s.splat(-LN2_HI), xc);
    let r = s.mul_add(k, s.splat(-LN2_LO), r);
    let p = poly(s, r, [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_6e-1, 0.5]);
    let p = s.add(s.mul_add(p, s.mul(r, r), r), s.splat(1.0)); // e^r in [0.7, 1.42]
                                                               // 2^k = 2^k1 * 2^k2 with both halves in [-75, 64]: p * 2^k1 is exact, the second
                                                               // product rounds once, into the subnormals or to inf when it must.
    let k1 = round(s, s.mul(k, s.splat(0.5)));
    let k2 = s.sub(k, k1);
    let r = s.mul(s.mul(p, s.pow2i(k1)), s.pow2i(k2));
    keep_nan(s, x, r)
}

/// `e^x` for softmax weights, `x <= 0` (a score minus its row's max): [`exp`]'s
/// reduction and polynomial with a single scaling by `2^k`, and results below
/// `e^-87` (about `1.6e-38`) flushed to 0, so about a third fewer instructions.
/// `-inf` gives exactly 0, NaN stays NaN; `x > 88` is out of contract.
#[inline(always)]
pub fn exp_weight<S: Simd>(s: S, x: S::F) -> S::F {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const FLOOR: f32 = -87.0; // 2^k stays a normal float: k >= -126
    let xc = s.max(x, s.splat(FLOOR));
    let k = round(s, s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    let r = s.mul_add(k, s.splat(-LN2_HI), xc);
    let r = s.mul_add(k, s.splat(-LN2_LO), r);
    let p = poly(s, r, [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_6e-1, 0.5]);
    let p = s.add(s.mul_add(p, s.mul(r, r), r), s.splat(1.0));
    let e = s.select(s.lt(x, s.splat(FLOOR)), s.splat(0.0), s.mul(p, s.pow2i(k)));
    keep_nan(s, x, e)
}

/// `tanh(x)`, computed on `|x|` and given the sign of `x` (so `tanh(-0) = -0`).
#[inline(always)]
pub fn tanh<S: Simd>(s: S, x: S::F) -> S::F {
    let a = s.abs(x);
    let z = s.mul(a, a);
    let p = poly(s, z, [-5.704_988_7e-3, 2.063_908_8e-2, -5.373_971_5e-2, 1.333_144_2e-1, -3.333_328e-1]);
    let small = s.mul_add(s.mul(p, z), a, a);
    let e = exp(s, s.mul(a, s.splat(-2.0))); // NaN stays NaN
    let one = s.splat(1.0);
    let large = s.div(s.sub(one, e), s.add(one, e));
    s.or(s.select(s.lt(a, s.splat(0.625)), small, large), s.sign_bit(x))
}

/// `(e^-|x|, 1 / (1 + e^-|x|))`, shared by the logistic family.
#[inline(always)]
fn sigmoid_parts<S: Simd>(s: S, x: S::F) -> (S::F, S::F) {
    let e = exp(s, s.sub(s.splat(0.0), s.abs(x)));
    (e, s.div(s.splat(1.0), s.add(s.splat(1.0), e)))
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid<S: Simd>(s: S, x: S::F) -> S::F {
    let (e, r) = sigmoid_parts(s, x);
    s.select(s.lt(x, s.splat(0.0)), s.mul(e, r), r)
}

/// `x` with `-inf` replaced by `-f32::MAX`, so that `x * 0` is `-0` rather than NaN
/// where an activation decays to zero for `x -> -inf`.
#[inline(always)]
fn finite_below<S: Simd>(s: S, x: S::F) -> S::F {
    s.max(x, s.splat(-f32::MAX))
}

/// Where the `erf` polynomial hands over to the `erfc` form.
const ERF_SPLIT: f32 = 0.921_875;

/// `erf(x) - x` over `x` for `|x| < ERF_SPLIT`, as `Q(x^2)`.
#[inline(always)]
fn erf_small<S: Simd>(s: S, x: S::F) -> S::F {
    let z = s.mul(x, x);
    let q = poly(s, z, [-5.990_848e-4, 4.993_179e-3, -2.676_661_5e-2, 1.128_181_6e-1, -3.761_249_5e-1, 1.283_791_5e-1]);
    s.mul_add(x, q, x)
}

/// `erfc(t)` for `t >= ERF_SPLIT` (meaningless below), given `t` and `t2 = t^2` (which
/// GELU computes as `x^2 / 2`, one rounding fewer than squaring `x / sqrt 2`); exactly 0
/// for `t > 10.5`, where even `0.5 t sqrt(2) erfc(t)` (the GELU tail) is below the
/// smallest subnormal.
#[inline(always)]
fn erfc_large<S: Simd>(s: S, t: S::F, t2: S::F) -> S::F {
    let t = s.min(t, s.splat(10.5));
    let t2 = s.min(t2, s.splat(10.5 * 10.5));
    let tt = s.div(s.splat(1.0), s.mul_add(t, s.splat(0.5), s.splat(1.0)));
    let p = poly(
        s,
        tt,
        [
            -2.262_918e-1,
            6.001_007e-1,
            -3.912_512_4e-1,
            -1.090_527_4e-1,
            -5.382_615_3e-2,
            6.650_843e-2,
            3.786_524_5e-1,
            9.996_117_4e-1,
            -1.265_495_7,
        ],
    );
    s.mul(tt, exp(s, s.sub(p, t2)))
}

/// `erf(x)`.
#[inline(always)]
pub fn erf<S: Simd>(s: S, x: S::F) -> S::F {
    let a = s.abs(x);
    let large = s.or(s.sub(s.splat(1.0), erfc_large(s, a, s.mul(x, x))), s.sign_bit(x));
    let r = s.select(s.lt(a, s.splat(ERF_SPLIT)), erf_small(s, x), large);
    keep_nan(s, x, r)
}

/// `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu<S: Simd>(s: S, x: S::F) -> S::F {
    let u = s.mul(x, s.splat(std::f32::consts::FRAC_1_SQRT_2));
    let a = s.abs(u);
    let e = erfc_large(s, a, s.mul(s.mul(x, x), s.splat(0.5)));
    // 1 + erf(u) = erfc(-u): e for u < 0, 2 - e for u > 0.
    let large = s.select(s.lt(u, s.splat(0.0)), e, s.sub(s.splat(2.0), e));
    let small = s.add(s.splat(1.0), erf_small(s, u));
    let h = s.select(s.lt(a, s.splat(ERF_SPLIT)), small, large);
    let r = s.mul(s.mul(finite_below(s, x), s.splat(0.5)), h);
    keep_nan(s, x, r)
}

/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`, computed as `x sigmoid(2 y)`.
#[inline(always)]
pub fn gelu_tanh<S: Simd>(s: S, x: S::F) -> S::F {
    const TWO_C: f32 = 1.595_769_2; // 2 sqrt(2 / pi)
    const TWO_C_A: f32 = 7.135_481_4e-2; // 2 sqrt(2 / pi) 0.044715
    let z = s.mul(x, s.mul_add(s.mul(x, x), s.splat(TWO_C_A), s.splat(TWO_C)));
    s.mul(finite_below(s, x), sigmoid(s, z))
}

/// `x sigmoid(x)` (SiLU, swish).
#[inline(always)]
pub fn silu<S: Simd>(s: S, x: S::F) -> S::F {
    s.mul(finite_below(s, x), sigmoid(s, x))
}

macro_rules! ops {
    ($($ty:ident $name:literal $f:ident;)*) => {$(
        #[doc = concat!("The `", $name, "` element-wise function.")]
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;
        impl VecOp for $ty {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn eval<S: Simd>(s: S, x: S::F) -> S::F {
                $f(s, x)
            }
        }
    )*};
}

ops! {
    Exp "exp" exp;
    Tanh "tanh" tanh;
    Erf "erf" erf;
    Sigmoid "sigmoid" sigmoid;
    Silu "silu" silu;
    Gelu "gelu" gelu;
    GeluTanh "gelu_tanh" gelu_tanh;
}
