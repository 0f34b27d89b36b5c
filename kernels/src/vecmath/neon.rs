//! aarch64 NEON implementation of [`Simd`] (4 lanes).
//!
//! The token is made by `new()`, which checks the CPU feature, or by `new_unchecked()`
//! in code reachable only after that check (`dispatch.rs`), so every
//! intrinsic call below runs on a CPU that has it.

use super::simd::{Simd, ROUND_MAGIC};
use std::arch::aarch64::*;

/// Proof that NEON (Advanced SIMD) is available.
#[derive(Clone, Copy, Debug)]
pub struct Neon(());

impl Neon {
    /// # Safety
    /// The CPU must have the features this token stands for.
    pub(crate) unsafe fn new_unchecked() -> Self {
        Self(())
    }

    /// The token, if this CPU has the features.
    pub fn new() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Self(()))
    }
}

impl Simd for Neon {
    const LANES: usize = 4;
    type F = float32x4_t;
    type M = uint32x4_t;

    #[inline(always)]
    fn splat(self, v: f32) -> float32x4_t {
        // SAFETY (this and every method below): the token proves neon.
        unsafe { vdupq_n_f32(v) }
    }
    #[inline(always)]
    fn load(self, src: &[f32]) -> float32x4_t {
        assert!(src.len() >= 4);
        // SAFETY: neon (token); 4 floats are readable (checked above).
        unsafe { vld1q_f32(src.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: float32x4_t, dst: &mut [f32]) {
        assert!(dst.len() >= 4);
        // SAFETY: neon (token); 4 floats are writable (checked above).
        unsafe { vst1q_f32(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token). vfmaq_f32(c, a, b) = c + a * b, fused.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    fn and(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b))) }
    }
    #[inline(always)]
    fn or(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b))) }
    }
    #[inline(always)]
    fn lt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: neon (token).
        unsafe { vcltq_f32(a, b) }
    }
    #[inline(always)]
    fn eq(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: neon (token).
        unsafe { vceqq_f32(a, b) }
    }
    #[inline(always)]
    fn select(self, m: uint32x4_t, t: float32x4_t, f: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe { vbslq_f32(m, t, f) }
    }
    #[inline(always)]
    fn pow2i(self, k: float32x4_t) -> float32x4_t {
        // SAFETY: neon (token).
        unsafe {
            let biased = vaddq_f32(k, vdupq_n_f32(ROUND_MAGIC + 127.0));
            vreinterpretq_f32_u32(vshlq_n_u32::<23>(vreinterpretq_u32_f32(biased)))
        }
    }
}
