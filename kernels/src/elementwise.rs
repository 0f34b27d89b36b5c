//! Element-wise loops over f32 slices.

/// Binary arithmetic kinds with a same-shape fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out[i] = f(x[i])`.
pub fn map_f32(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// `out[i] = a[i] op b[i]` for equal-length slices.
pub fn binary_f32(kind: BinaryKind, a: &[f32], b: &[f32], out: &mut [f32]) {
    let it = out.iter_mut().zip(a.iter().zip(b));
    match kind {
        BinaryKind::Add => it.for_each(|(o, (x, y))| *o = x + y),
        BinaryKind::Sub => it.for_each(|(o, (x, y))| *o = x - y),
        BinaryKind::Mul => it.for_each(|(o, (x, y))| *o = x * y),
        BinaryKind::Div => it.for_each(|(o, (x, y))| *o = x / y),
    }
}

#[inline(always)]
fn apply(kind: BinaryKind, x: f32, y: f32) -> f32 {
    match kind {
        BinaryKind::Add => x + y,
        BinaryKind::Sub => x - y,
        BinaryKind::Mul => x * y,
        BinaryKind::Div => x / y,
    }
}

/// `out[i] = a[i] op s` (or `s op a[i]` when `scalar_first`).
pub fn binary_f32_scalar(kind: BinaryKind, a: &[f32], s: f32, scalar_first: bool, out: &mut [f32]) {
    macro_rules! run {
        ($k:expr) => {
            if scalar_first {
                out.iter_mut().zip(a).for_each(|(o, &x)| *o = apply($k, s, x))
            } else {
                out.iter_mut().zip(a).for_each(|(o, &x)| *o = apply($k, x, s))
            }
        };
    }
    // One monomorphic loop per kind so each vectorises.
    match kind {
        BinaryKind::Add => run!(BinaryKind::Add),
        BinaryKind::Sub => run!(BinaryKind::Sub),
        BinaryKind::Mul => run!(BinaryKind::Mul),
        BinaryKind::Div => run!(BinaryKind::Div),
    }
}

/// `out[i] = a[i] op b[i % b.len()]` (or `b[..] op a[i]` when `b_first`): a trailing
/// broadcast such as a bias `[N]` over `[..., N]`.
pub fn binary_f32_rows(kind: BinaryKind, a: &[f32], b: &[f32], b_first: bool, out: &mut [f32]) {
    if b.is_empty() {
        return;
    }
    for (orow, arow) in out.chunks_mut(b.len()).zip(a.chunks(b.len())) {
        macro_rules! run {
            ($k:expr) => {
                if b_first {
                    orow.iter_mut().zip(arow.iter().zip(b)).for_each(|(o, (&x, &y))| *o = apply($k, y, x))
                } else {
                    orow.iter_mut().zip(arow.iter().zip(b)).for_each(|(o, (&x, &y))| *o = apply($k, x, y))
                }
            };
        }
        match kind {
            BinaryKind::Add => run!(BinaryKind::Add),
            BinaryKind::Sub => run!(BinaryKind::Sub),
            BinaryKind::Mul => run!(BinaryKind::Mul),
            BinaryKind::Div => run!(BinaryKind::Div),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_and_row_broadcasts_match_the_definition() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let mut o = [0.0; 4];
        binary_f32_scalar(BinaryKind::Sub, &a, 1.0, true, &mut o);
        assert_eq!(o, [0.0, -1.0, -2.0, -3.0]);
        binary_f32_rows(BinaryKind::Div, &a, &[1.0, 2.0], false, &mut o);
        assert_eq!(o, [1.0, 1.0, 3.0, 2.0]);
        binary_f32_rows(BinaryKind::Sub, &a, &[10.0, 20.0], true, &mut o);
        assert_eq!(o, [9.0, 18.0, 7.0, 16.0]);
    }
}

/// Unary activations with an f32 loop of their own (computed in f32; the engine
/// falls back to an f64 definition for the rest). Exp, Tanh, Erf, Sigmoid, Gelu,
/// GeluTanh and Silu run on the vectorised [`crate::vecmath`] functions (accuracy documented there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Sqrt,
    Neg,
    Abs,
    Erf,
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (Gelu-20 `approximate = "tanh"`).
    GeluTanh,
    /// `x sigmoid(x)` (SiLU / swish).
    Silu,
}

/// `out[i] = f(x[i])` for one of the [`UnaryKind`]s, over the shorter of the two slices.
pub fn unary_f32(kind: UnaryKind, x: &[f32], out: &mut [f32]) {
    use crate::vecmath::{self, Func};
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    match kind {
        UnaryKind::Relu => map_f32(x, out, |v| v.max(0.0)),
        UnaryKind::Sqrt => map_f32(x, out, f32::sqrt),
        UnaryKind::Neg => map_f32(x, out, |v| -v),
        UnaryKind::Abs => map_f32(x, out, f32::abs),
        UnaryKind::Sigmoid => vecmath::selected().map(Func::Sigmoid, x, out),
        UnaryKind::Tanh => vecmath::selected().map(Func::Tanh, x, out),
        UnaryKind::Exp => vecmath::selected().map(Func::Exp, x, out),
        UnaryKind::Erf => vecmath::selected().map(Func::Erf, x, out),
        UnaryKind::Gelu => vecmath::selected().map(Func::Gelu, x, out),
        UnaryKind::GeluTanh => vecmath::selected().map(Func::GeluTanh, x, out),
        UnaryKind::Silu => vecmath::selected().map(Func::Silu, x, out),
    }
}

#[cfg(test)]
mod unary_tests {
    use super::*;

    #[test]
    fn f32_activations_match_f64_definitions() {
        let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
        let mut out = vec![0.0; x.len()];
        type Definition = (UnaryKind, fn(f64) -> f64);
        let defs: [Definition; 4] = [
            (UnaryKind::Sigmoid, |v| 1.0 / (1.0 + (-v).exp())),
            (UnaryKind::Tanh, f64::tanh),
            (UnaryKind::Erf, crate::math::erf_f64),
            (UnaryKind::Gelu, |v| 0.5 * v * (1.0 + crate::math::erf_f64(v / std::f64::consts::SQRT_2))),
        ];
        for (kind, f) in defs {
            unary_f32(kind, &x, &mut out);
            for (&v, &o) in x.iter().zip(&out) {
                let want = f(v as f64);
                assert!((o as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "{kind:?}({v}) = {o}, want {want}");
            }
        }
    }
}
