//! The per-ISA entry points: thin `#[target_feature]` wrappers that monomorphise the
//! generic algorithms for one [`Simd`] token, gathered into one [`Isa`] table per
//! instruction set. Only these wrappers carry target features; everything they call
//! is `#[inline(always)]`, so the whole algorithm compiles inside them.

// `attend` forwards a whole attention head's operands.
#![allow(clippy::too_many_arguments)]

use super::driver::{map, map_in_place};
use super::funcs::{Erf, Exp, Gelu, GeluTanh, Sigmoid, Silu, Tanh};
use super::simd::Simd;
use super::{Func, Isa};
use crate::attention::exact::HeadParams;
use crate::attention::rows::Keys;
use crate::attention::Rows;

/// `out = f(x)` with the function picked by `f` (a predictable branch per call).
#[inline(always)]
fn map_func<S: Simd>(s: S, f: Func, x: &[f32], out: &mut [f32]) {
    match f {
        Func::Exp => map::<S, Exp>(s, x, out),
        Func::Tanh => map::<S, Tanh>(s, x, out),
        Func::Erf => map::<S, Erf>(s, x, out),
        Func::Sigmoid => map::<S, Sigmoid>(s, x, out),
        Func::Silu => map::<S, Silu>(s, x, out),
        Func::Gelu => map::<S, Gelu>(s, x, out),
        Func::GeluTanh => map::<S, GeluTanh>(s, x, out),
    }
}

#[inline(always)]
fn map_func_in_place<S: Simd>(s: S, f: Func, x: &mut [f32]) {
    match f {
        Func::Exp => map_in_place::<S, Exp>(s, x),
        Func::Tanh => map_in_place::<S, Tanh>(s, x),
        Func::Erf => map_in_place::<S, Erf>(s, x),
        Func::Sigmoid => map_in_place::<S, Sigmoid>(s, x),
        Func::Silu => map_in_place::<S, Silu>(s, x),
        Func::Gelu => map_in_place::<S, Gelu>(s, x),
        Func::GeluTanh => map_in_place::<S, GeluTanh>(s, x),
    }
}

/// One safe entry point `$name` running `$generic` on token `$tok`; with features, via
/// an inner `#[target_feature]` function.
macro_rules! entry {
    ($tok:ty, $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? = $generic:path) => {
        fn $name($($a: $t),*) $(-> $r)? {
            $generic(<$tok>::default(), $($a),*)
        }
    };
    ($tok:ty, $features:literal, $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? = $generic:path) => {
        fn $name($($a: $t),*) $(-> $r)? {
            /// # Safety
            /// The CPU must have the features of `$tok`.
            #[target_feature(enable = $features)]
            unsafe fn inner($($a: $t),*) $(-> $r)? {
                // SAFETY: our caller guarantees the features.
                let s = unsafe { <$tok>::new_unchecked() };
                $generic(s, $($a),*)
            }
            // SAFETY: this function is reachable only through the `Isa` table of its
            // instruction set, which `vecmath::available()` hands out only after
            // detecting the features.
            unsafe { inner($($a),*) }
        }
    };
}

/// A module `$m` holding the entry points of one instruction set and its table `TABLE`.
macro_rules! isa_table {
    ($m:ident, $label:literal, $tok:ty $(, $features:literal)?) => {
        pub mod $m {
            use super::*;
            entry!($tok $(, $features)?, map(f: Func, x: &[f32], out: &mut [f32]) = map_func);
            entry!($tok $(, $features)?, map_ip(f: Func, x: &mut [f32]) = map_func_in_place);
            entry!($tok $(, $features)?, softmax(row: &mut [f32]) = crate::softmax::softmax_row);
            entry!($tok $(, $features)?, log_softmax(row: &mut [f32]) = crate::softmax::log_softmax_row);
            entry!($tok $(, $features)?, exp_shifted(row: &mut [f32], m: f32) -> (f32, f32) = crate::softmax::exp_shifted_row);
            entry!($tok $(, $features)?,
                online_cols(t: &mut [f32], w: usize, m: &mut [f32], sum: &mut [f32], acc: &mut [f32])
                    = crate::softmax::online_softmax_cols);
            entry!($tok $(, $features)?, mean_var(x: &[f32]) -> (f32, f32) = crate::norm::mean_var_row);
            entry!($tok $(, $features)?,
                layer_norm(x: &[f32], g: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) = crate::norm::layer_norm);
            entry!($tok $(, $features)?, rms_norm(x: &[f32], g: &[f32], eps: f32, out: &mut [f32]) = crate::norm::rms_norm);
            entry!($tok $(, $features)?,
                attend(q: Rows<'_>, keys: Keys<'_>, stride: usize, v: Rows<'_>, bias: Option<Rows<'_>>, p: &HeadParams,
                    scores: &mut [f32], out: &mut [f32], out_stride: usize) = crate::attention::rows::attend);

            pub const TABLE: Isa = Isa {
                name: $label,
                lanes: <$tok as Simd>::LANES,
                map,
                map_in_place: map_ip,
                softmax,
                log_softmax,
                exp_shifted,
                online_cols,
                mean_var,
                layer_norm,
                rms_norm,
                attend,
            };
        }
    };
}

isa_table!(scalar, "scalar", super::super::simd::Scalar);
#[cfg(target_arch = "x86_64")]
isa_table!(avx512, "avx512f", super::super::x86::Avx512, "avx512f");
#[cfg(target_arch = "x86_64")]
isa_table!(avx2, "avx2-fma", super::super::x86::Avx2Fma, "avx2,fma");
#[cfg(target_arch = "aarch64")]
isa_table!(neon, "neon", super::super::neon::Neon, "neon");
