//! x86_64 implementations of [`Simd`]: AVX2+FMA (8 lanes) and AVX-512F (16 lanes).
//!
//! Each token is made by `new()`, which checks the CPU features, or by `new_unchecked()`
//! in code reachable only after that check (`dispatch.rs`), so every
//! intrinsic call below runs on a CPU that has it.

use super::simd::{Simd, ROUND_MAGIC};
use std::arch::x86_64::*;

/// Proof that AVX2 and FMA are available.
#[derive(Clone, Copy, Debug)]
pub struct Avx2Fma(());

impl Avx2Fma {
    /// # Safety
    /// The CPU must have the features this token stands for.
    pub(crate) unsafe fn new_unchecked() -> Self {
        Self(())
    }

    /// The token, if this CPU has the features.
    pub fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Self(()))
    }
}

/// Proof that AVX-512F is available.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU must have the features this token stands for.
    pub(crate) unsafe fn new_unchecked() -> Self {
        Self(())
    }

    /// The token, if this CPU has the features.
    pub fn new() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Self(()))
    }
}

/// Implements the arithmetic shared in shape by both x86 paths; `$p` is the intrinsic
/// prefix (`_mm256` or `_mm512`). Only the per-ISA differences (masks, loads) are
/// written out in each impl.
macro_rules! x86_arith {
    ($add:ident, $sub:ident, $mul:ident, $div:ident, $fma:ident, $min:ident, $max:ident, $set1:ident) => {
        #[inline(always)]
        fn splat(self, v: f32) -> Self::F {
            // SAFETY: the token proves the feature (see the type's constructor).
            unsafe { $set1(v) }
        }
        #[inline(always)]
        fn add(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $add(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $sub(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $mul(a, b) }
        }
        #[inline(always)]
        fn div(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $div(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $fma(a, b, c) }
        }
        #[inline(always)]
        fn min(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $min(a, b) }
        }
        #[inline(always)]
        fn max(self, a: Self::F, b: Self::F) -> Self::F {
            // SAFETY: as for `splat`.
            unsafe { $max(a, b) }
        }
    };
}

impl Simd for Avx2Fma {
    const LANES: usize = 8;
    type F = __m256;
    type M = __m256;

    x86_arith!(
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_div_ps,
        _mm256_fmadd_ps,
        _mm256_min_ps,
        _mm256_max_ps,
        _mm256_set1_ps
    );

    #[inline(always)]
    fn load(self, src: &[f32]) -> __m256 {
        assert!(src.len() >= 8);
        // SAFETY: the token proves avx; 8 floats are readable (checked above).
        unsafe { _mm256_loadu_ps(src.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m256, dst: &mut [f32]) {
        assert!(dst.len() >= 8);
        // SAFETY: the token proves avx; 8 floats are writable (checked above).
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn and(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx.
        unsafe { _mm256_and_ps(a, b) }
    }
    #[inline(always)]
    fn or(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx.
        unsafe { _mm256_or_ps(a, b) }
    }
    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn eq(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx.
        unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __m256, t: __m256, f: __m256) -> __m256 {
        // SAFETY: the token proves avx.
        unsafe { _mm256_blendv_ps(f, t, m) }
    }
    #[inline(always)]
    fn pow2i(self, k: __m256) -> __m256 {
        // SAFETY: the token proves avx2.
        unsafe {
            let biased = _mm256_add_ps(k, _mm256_set1_ps(ROUND_MAGIC + 127.0));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(biased)))
        }
    }
}

impl Simd for Avx512 {
    const LANES: usize = 16;
    type F = __m512;
    type M = __mmask16;

    x86_arith!(
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_div_ps,
        _mm512_fmadd_ps,
        _mm512_min_ps,
        _mm512_max_ps,
        _mm512_set1_ps
    );

    #[inline(always)]
    fn load(self, src: &[f32]) -> __m512 {
        assert!(src.len() >= 16);
        // SAFETY: the token proves avx512f; 16 floats are readable (checked above).
        unsafe { _mm512_loadu_ps(src.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m512, dst: &mut [f32]) {
        assert!(dst.len() >= 16);
        // SAFETY: the token proves avx512f; 16 floats are writable (checked above).
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn and(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (the _ps form needs avx512dq, hence the casts).
        unsafe { _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))) }
    }
    #[inline(always)]
    fn or(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: as for `and`.
        unsafe { _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))) }
    }
    #[inline(always)]
    fn lt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the token proves avx512f.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn eq(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the token proves avx512f.
        unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __mmask16, t: __m512, f: __m512) -> __m512 {
        // SAFETY: the token proves avx512f. The blend takes its second operand where m is set.
        unsafe { _mm512_mask_blend_ps(m, f, t) }
    }
    #[inline(always)]
    fn pow2i(self, k: __m512) -> __m512 {
        // SAFETY: the token proves avx512f.
        unsafe {
            let biased = _mm512_add_ps(k, _mm512_set1_ps(ROUND_MAGIC + 127.0));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(biased)))
        }
    }
}
