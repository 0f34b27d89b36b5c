//! Vectorised f32 math: `exp`, `tanh`, `erf`, `sigmoid`, `silu`, `gelu` (erf form) and
//! `gelu_tanh` over slices, plus the SIMD seam the row kernels ([`crate::softmax`],
//! [`crate::norm`]) are written on.
//!
//! Each algorithm is written once ([`funcs`]) over a small SIMD trait ([`simd::Simd`])
//! implemented for AVX-512F, AVX2+FMA, aarch64 NEON and a one-lane scalar fallback.
//! The instruction set is detected once, at first use, and held ([`selected`]); each
//! is a table of plain function pointers ([`Isa`]) whose entries are thin
//! `#[target_feature]` wrappers around the generic code ([`dispatch`]). Slices of any
//! length work: the ragged tail runs as one padded vector, so results never depend on
//! where an element sits in the slice.
//!
//! Accuracy (max error against f64 over all 2^32 inputs, every path) is on each
//! function below and in `docs/vector-math.md`; `examples/vecmath_accuracy.rs`
//! re-measures it exhaustively. Subnormal inputs and outputs are handled (no flush
//! to zero).

mod dispatch;
pub(crate) mod driver;
pub mod funcs;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod reference;
pub mod simd;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use crate::attention::exact::HeadParams;
use crate::attention::rows::Keys;
use crate::attention::Rows;
use std::sync::OnceLock;

/// The element-wise functions of this module, for code that picks one at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Tanh,
    Erf,
    Sigmoid,
    /// `x sigmoid(x)`.
    Silu,
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    GeluTanh,
}

impl Func {
    pub const ALL: [Func; 7] =
        [Func::Exp, Func::Tanh, Func::Erf, Func::Sigmoid, Func::Silu, Func::Gelu, Func::GeluTanh];

    /// The lowercase name used in docs, benches and test messages.
    pub fn name(self) -> &'static str {
        use funcs::VecOp;
        match self {
            Func::Exp => funcs::Exp::NAME,
            Func::Tanh => funcs::Tanh::NAME,
            Func::Erf => funcs::Erf::NAME,
            Func::Sigmoid => funcs::Sigmoid::NAME,
            Func::Silu => funcs::Silu::NAME,
            Func::Gelu => funcs::Gelu::NAME,
            Func::GeluTanh => funcs::GeluTanh::NAME,
        }
    }
}

/// `attend_rows(q, keys, stride, v, bias, params, scores, out, out_stride)`.
type AttendFn = fn(Rows<'_>, Keys<'_>, usize, Rows<'_>, Option<Rows<'_>>, &HeadParams, &mut [f32], &mut [f32], usize);

/// `online_softmax_cols(tile, width, max, sum, acc)`.
type OnlineColsFn = fn(&mut [f32], usize, &mut [f32], &mut [f32], &mut [f32]);

/// `layer_norm_row(x, gamma, beta, eps, out)`.
type LayerNormFn = fn(&[f32], &[f32], Option<&[f32]>, f32, &mut [f32]);

/// Every vector kernel for one instruction set, as plain function pointers.
///
/// Only [`available`] and [`selected`] hand these out, after checking the CPU, which is
/// what makes calling the `#[target_feature]` code inside sound.
#[derive(Clone, Copy)]
pub struct Isa {
    name: &'static str,
    lanes: usize,
    map: fn(Func, &[f32], &mut [f32]),
    map_in_place: fn(Func, &mut [f32]),
    softmax: fn(&mut [f32]),
    log_softmax: fn(&mut [f32]),
    exp_shifted: fn(&mut [f32], f32) -> (f32, f32),
    online_cols: OnlineColsFn,
    mean_var: fn(&[f32]) -> (f32, f32),
    layer_norm: LayerNormFn,
    rms_norm: fn(&[f32], &[f32], f32, &mut [f32]),
    attend: AttendFn,
}

impl std::fmt::Debug for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isa").field("name", &self.name).field("lanes", &self.lanes).finish()
    }
}

impl Isa {
    /// `"avx512f"`, `"avx2-fma"`, `"neon"` or `"scalar"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// f32 lanes per vector.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// `out[i] = f(x[i])`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn map(&self, f: Func, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), out.len(), "{}: input and output lengths differ", f.name());
        (self.map)(f, x, out)
    }

    /// `x[i] = f(x[i])`.
    pub fn map_in_place(&self, f: Func, x: &mut [f32]) {
        (self.map_in_place)(f, x)
    }

    /// [`crate::softmax::softmax_f32`] on this instruction set.
    pub fn softmax_row(&self, row: &mut [f32]) {
        (self.softmax)(row)
    }

    /// [`crate::softmax::log_softmax_f32`] on this instruction set.
    pub fn log_softmax_row(&self, row: &mut [f32]) {
        (self.log_softmax)(row)
    }

    /// One online-softmax step: with `m = max(prev_max, max(row))`, `row = exp(row - m)`;
    /// returns `(m, sum(row))` (`(-inf, 0)` and zeros when everything is `-inf`).
    pub fn exp_shifted_row(&self, row: &mut [f32], prev_max: f32) -> (f32, f32) {
        (self.exp_shifted)(row, prev_max)
    }

    /// One online-softmax step over a tile of scores held keys by queries
    /// (`tile` is `rows x width`, column `c` is query `c`): `tile = exp(tile - m)`
    /// per column with `m` the running column max, `sum` and `max` updated, and the
    /// rows of `acc` (`width` wide) rescaled by `exp(old max - m)` (the attention
    /// kernel's partial outputs, held transposed).
    pub fn online_softmax_cols(
        &self,
        tile: &mut [f32],
        width: usize,
        max: &mut [f32],
        sum: &mut [f32],
        acc: &mut [f32],
    ) {
        (self.online_cols)(tile, width, max, sum, acc)
    }

    /// [`crate::norm::mean_var`] on this instruction set.
    pub fn mean_var(&self, x: &[f32]) -> (f32, f32) {
        (self.mean_var)(x)
    }

    /// One head's exact attention a query at a time (`crate::attention::rows`;
    /// `attention::exact::attention_head` picks it for small products and for a
    /// few queries over many keys, as in decoding).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend_rows(
        &self,
        q: Rows<'_>,
        keys: Keys<'_>,
        stride: usize,
        v: Rows<'_>,
        bias: Option<Rows<'_>>,
        p: &HeadParams,
        scores: &mut [f32],
        out: &mut [f32],
        out_stride: usize,
    ) {
        (self.attend)(q, keys, stride, v, bias, p, scores, out, out_stride)
    }

    /// [`crate::norm::layer_norm_row`] on this instruction set.
    pub fn layer_norm_row(&self, x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
        (self.layer_norm)(x, gamma, beta, eps, out)
    }

    /// [`crate::norm::rms_norm_row`] on this instruction set.
    pub fn rms_norm_row(&self, x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
        (self.rms_norm)(x, gamma, eps, out)
    }
}

/// Every instruction set this CPU can run, best first; the scalar one always last.
pub fn available() -> Vec<Isa> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::Avx512::new().is_some() {
            v.push(dispatch::avx512::TABLE);
        }
        if x86::Avx2Fma::new().is_some() {
            v.push(dispatch::avx2::TABLE);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if neon::Neon::new().is_some() {
            v.push(dispatch::neon::TABLE);
        }
    }
    v.push(dispatch::scalar::TABLE);
    v
}

/// The portable one-lane path (the same algorithms in plain f32 arithmetic).
pub fn scalar() -> Isa {
    dispatch::scalar::TABLE
}

/// The instruction set every function of this crate uses, detected once.
pub fn selected() -> &'static Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    ISA.get_or_init(|| available()[0])
}

macro_rules! public_fns {
    ($($f:ident $f_in_place:ident $variant:ident, $doc:literal;)*) => {$(
        #[doc = $doc]
        ///
        /// # Panics
        /// If `x` and `out` differ in length.
        pub fn $f(x: &[f32], out: &mut [f32]) {
            selected().map(Func::$variant, x, out)
        }

        #[doc = concat!("In-place [`", stringify!($f), "`].")]
        pub fn $f_in_place(x: &mut [f32]) {
            selected().map_in_place(Func::$variant, x)
        }
    )*};
}

public_fns! {
    exp exp_in_place Exp, "`out[i] = e^x[i]`.\n\n\
        Cephes-style range reduction and degree-5 polynomial. Max error against f64 over \
        all 2^32 inputs: 1.01 ulp (relative 8.5e-8), subnormal results included (rounded \
        once, not flushed). Overflows to `+inf` exactly where the rounded result does \
        (`x > 88.72283`), underflows to `0` below `-103.972`; NaN -> NaN, `-inf -> 0`, \
        `+inf -> +inf`.";
    tanh tanh_in_place Tanh, "`out[i] = tanh(x[i])`.\n\n\
        Odd polynomial for `|x| < 0.625`, `(1 - e^-2|x|) / (1 + e^-2|x|)` above. \
        Max error against f64 over all 2^32 inputs: 1.51 ulp, absolute 9.0e-8, relative \
        1.5e-7. Exactly `±1` for `|x| >= 9`, `±inf -> ±1`, `tanh(±0) = ±0`, NaN -> NaN.";
    erf erf_in_place Erf, "`out[i] = erf(x[i])`.\n\n\
        Odd polynomial for `|x| < 0.921875`, `1 - T e^(-x^2 + P(T))`, `T = 1 / (1 + |x| / 2)` \
        above. Max error against f64 over all 2^32 inputs: 1.74 ulp (1.65 on the SIMD paths), \
        absolute 1.04e-7, worst just above the hand-over at 0.921875. Exactly `±1` for \
        `|x| >= 3.92`, `±inf -> ±1`, `erf(±0) = ±0`, NaN -> NaN.";
    sigmoid sigmoid_in_place Sigmoid, "`out[i] = 1 / (1 + e^-x[i])`.\n\n\
        `1 / (1 + e^-|x|)`, or `e^-|x| / (1 + e^-|x|)` for `x < 0` (no cancellation). Max error \
        against f64 over all 2^32 inputs: 2.83 ulp, absolute 8.9e-8, relative 2.1e-7, down \
        to subnormal results. Exactly `1` for `x >= 17.33`, `0` below `-103.97`, \
        `+inf -> 1`, `-inf -> 0`, NaN -> NaN.";
    silu silu_in_place Silu, "`out[i] = x[i] sigmoid(x[i])` (SiLU, swish).\n\n\
        Max error against f64 over all 2^32 inputs: 3.65 ulp for `x >= -10` (relative \
        2.5e-7, absolute 1.3e-6 near `x = 13.8`); for `x < -87.3`, where `e^x` is subnormal \
        and `|silu(x)| < 1e-35`, up to 52 ulp (relative 5.5e-6). `+inf -> +inf`, \
        `-inf -> -0`, NaN -> NaN.";
    gelu gelu_in_place Gelu, "`out[i] = 0.5 x (1 + erf(x / sqrt 2))` (exact GELU, ONNX Gelu-20 default).\n\n\
        Uses `1 + erf(u) = erfc(-u)` from the `erfc` form, so negative inputs keep relative \
        accuracy. Max error against f64 over all 2^32 inputs: 2.7 ulp for `x >= -1`, absolute \
        3.9e-7 everywhere; for `x < -1` the `-x^2 / 2` in the exponent costs \
        `~x^2 / 2` ulp: 16 ulp on `[-4, -1]` (`|gelu| > 1.2e-4`), 66 on `[-10, -4]`, \
        130 below (relative 8e-6, `|gelu| < 1e-22`). `+inf -> +inf`, `-inf -> -0`, NaN -> NaN.";
    gelu_tanh gelu_tanh_in_place GeluTanh,
        "`out[i] = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (ONNX Gelu-20 \
        `approximate = \"tanh\"`), computed as `x sigmoid(2 y)`.\n\n\
        Max error against f64 over all 2^32 inputs: 3.65 ulp for `x >= -1`, absolute 5.2e-7 \
        everywhere; for `x < -1`, `e^(2y)` amplifies the rounding of `2y` (`~|2y|` ulp): \
        23 ulp on `[-4, -1]`, 215 below `-4` (relative 1.4e-5, `|gelu_tanh| < 7e-5`). \
        `+inf -> +inf`, `-inf -> -0`, NaN -> NaN.";
}
