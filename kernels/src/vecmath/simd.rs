//! The small SIMD vocabulary every vector-math algorithm is written in.
//!
//! An algorithm (`exp`, `erf`, softmax, layer norm, ...) is written once, generic over
//! [`Simd`]; each instruction set implements the trait on a zero-sized *token* whose
//! only constructor checks the CPU feature, so holding a token is the proof that its
//! intrinsics may run. Every method is `#[inline(always)]`: the generic code is
//! meant to be inlined into a `#[target_feature]` entry point (see `dispatch.rs`),
//! where the intrinsics compile to single instructions.
//!
//! The scalar implementation ([`Scalar`], one lane) is the portable fallback and the
//! reference the vector paths are tested against: it runs the very same algorithm.

/// One instruction set's f32 vector and the operations the algorithms need.
///
/// NaN behaviour of [`Simd::min`] and [`Simd::max`] is unspecified (x86 returns the
/// second operand, NEON the NaN, scalar the number); algorithms that clamp restore
/// NaN inputs explicitly.
pub trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// A vector of `LANES` f32.
    type F: Copy;
    /// A per-lane boolean, as produced by the comparisons.
    type M: Copy;

    fn splat(self, v: f32) -> Self::F;
    /// Loads `src[..LANES]` (panics if `src` is shorter).
    fn load(self, src: &[f32]) -> Self::F;
    /// Stores into `dst[..LANES]` (panics if `dst` is shorter).
    fn store(self, v: Self::F, dst: &mut [f32]);
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, fused where the instruction set has FMA (every SIMD path here),
    /// two roundings in the scalar fallback. No algorithm relies on the fusion.
    fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    /// Bitwise and of the f32 bit patterns.
    fn and(self, a: Self::F, b: Self::F) -> Self::F;
    /// Bitwise or of the f32 bit patterns.
    fn or(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a < b` (false if either is NaN).
    fn lt(self, a: Self::F, b: Self::F) -> Self::M;
    /// `a == b` (false if either is NaN, so `eq(x, x)` is "x is not NaN").
    fn eq(self, a: Self::F, b: Self::F) -> Self::M;
    /// Per lane `if m { t } else { f }`.
    fn select(self, m: Self::M, t: Self::F, f: Self::F) -> Self::F;
    /// `2^k` for integral `k` in `[-126, 127]` (held as f32), built from the bits
    /// `(k + 127) << 23`: the float -> int bit trick of every Cephes-style `exp`.
    fn pow2i(self, k: Self::F) -> Self::F;

    /// `|v|` (clears the sign bit, so NaN stays NaN).
    #[inline(always)]
    fn abs(self, v: Self::F) -> Self::F {
        self.and(v, self.splat(f32::from_bits(0x7fff_ffff)))
    }

    /// The sign bit of `v` (as a float bit pattern: `-0.0` or `+0.0`).
    #[inline(always)]
    fn sign_bit(self, v: Self::F) -> Self::F {
        self.and(v, self.splat(-0.0))
    }

    /// Sum of the lanes (rarely used: once per row).
    #[inline(always)]
    fn reduce_sum(self, v: Self::F) -> f32 {
        let mut buf = [0.0f32; MAX_LANES];
        self.store(v, &mut buf[..Self::LANES]);
        buf[..Self::LANES].iter().sum()
    }

    /// Maximum of the lanes (rarely used: once per row).
    #[inline(always)]
    fn reduce_max(self, v: Self::F) -> f32 {
        let mut buf = [0.0f32; MAX_LANES];
        self.store(v, &mut buf[..Self::LANES]);
        buf[..Self::LANES].iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

/// The widest vector of any implementation (AVX-512: 16 f32), for stack buffers.
pub const MAX_LANES: usize = 16;

/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below `2^22`
/// to the nearest integer (ties to even) without a float -> int conversion.
pub const ROUND_MAGIC: f32 = 12_582_912.0;

/// The portable one-lane implementation: plain f32 arithmetic.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type F = f32;
    type M = bool;

    #[inline(always)]
    fn splat(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn load(self, src: &[f32]) -> f32 {
        src[0]
    }
    #[inline(always)]
    fn store(self, v: f32, dst: &mut [f32]) {
        dst[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        // Unfused on purpose: `f32::mul_add` is a libm call on targets without FMA.
        a * b + c
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        a.min(b)
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    fn and(self, a: f32, b: f32) -> f32 {
        f32::from_bits(a.to_bits() & b.to_bits())
    }
    #[inline(always)]
    fn or(self, a: f32, b: f32) -> f32 {
        f32::from_bits(a.to_bits() | b.to_bits())
    }
    #[inline(always)]
    fn lt(self, a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    fn eq(self, a: f32, b: f32) -> bool {
        a == b
    }
    #[inline(always)]
    fn select(self, m: bool, t: f32, f: f32) -> f32 {
        if m {
            t
        } else {
            f
        }
    }
    #[inline(always)]
    fn pow2i(self, k: f32) -> f32 {
        f32::from_bits((k + (ROUND_MAGIC + 127.0)).to_bits() << 23)
    }
}
