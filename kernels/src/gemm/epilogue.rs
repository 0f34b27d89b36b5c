//! What a GEMM does to each finished row of C before storing it, so a Linear or a
//! convolution with its bias, activation and residual add is one pass over the
//! output: `c = act(alpha * a @ b + beta * c + bias) + residual`.

use crate::elementwise::{unary_f32, UnaryKind};

/// An activation applied to each output element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Sigmoid,
    Tanh,
    /// `x * 0.5 * (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    /// Applies the activation to `x`, writing `out` (same length).
    pub fn apply(self, x: &[f32], out: &mut [f32]) {
        match self {
            Activation::None => out.copy_from_slice(x),
            Activation::Relu => unary_f32(UnaryKind::Relu, x, out),
            Activation::Sigmoid => unary_f32(UnaryKind::Sigmoid, x, out),
            Activation::Tanh => unary_f32(UnaryKind::Tanh, x, out),
            Activation::Gelu => unary_f32(UnaryKind::Gelu, x, out),
            Activation::Silu => unary_f32(UnaryKind::Silu, x, out),
        }
    }
}

impl Activation {
    /// Applies the activation to `x` in place.
    pub fn apply_in_place(self, x: &mut [f32]) {
        use crate::vecmath::{selected, Func};
        match self {
            Activation::None => {}
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Sigmoid => selected().map_in_place(Func::Sigmoid, x),
            Activation::Tanh => selected().map_in_place(Func::Tanh, x),
            Activation::Gelu => selected().map_in_place(Func::Gelu, x),
            Activation::Silu => selected().map_in_place(Func::Silu, x),
        }
    }
}

/// A bias broadcast over the output.
#[derive(Clone, Copy, Debug, Default)]
pub enum Bias<'a> {
    #[default]
    None,
    /// One value per output column (a Linear layer: `n` values).
    Cols(&'a [f32]),
    /// One value per output row (a convolution over `[C_out, pixels]`: `m` values).
    Rows(&'a [f32]),
}

/// Bias, activation and residual fused into the GEMM's store.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    pub activation: Activation,
    /// Added after the activation; row-major `m x n`, like C.
    pub residual: Option<&'a [f32]>,
}

impl<'a> Epilogue<'a> {
    pub const NONE: Epilogue<'static> = Epilogue { bias: Bias::None, activation: Activation::None, residual: None };

    pub fn is_none(&self) -> bool {
        matches!(self.bias, Bias::None) && self.activation == Activation::None && self.residual.is_none()
    }

    /// Panics unless the bias and residual cover an `m x n` output.
    pub(crate) fn check(&self, m: usize, n: usize) {
        match self.bias {
            Bias::Cols(b) => assert!(b.len() >= n, "column bias has {} values, {n} needed", b.len()),
            Bias::Rows(b) => assert!(b.len() >= m, "row bias has {} values, {m} needed", b.len()),
            Bias::None => {}
        }
        if let Some(r) = self.residual {
            assert!(r.len() >= m * n, "residual has {} values, {} needed", r.len(), m * n);
        }
    }

    /// The same epilogue for the sub-block starting at row `i0`, column `j0` of an
    /// output with `n` columns (used when the product is split across threads).
    pub(crate) fn offset(&self, i0: usize, j0: usize, n: usize) -> Epilogue<'a> {
        Epilogue {
            bias: match self.bias {
                Bias::Cols(b) => Bias::Cols(&b[j0..]),
                Bias::Rows(b) => Bias::Rows(&b[i0..]),
                Bias::None => Bias::None,
            },
            activation: self.activation,
            residual: self.residual.map(|r| &r[i0 * n + j0..]),
        }
    }

    /// Finishes one micro-tile at once (the activation runs over the whole tile, so
    /// its vector loop has work to overlap): `tile` holds `rows` rows of stride
    /// `nr`, each `alpha * a @ b` for output row `i0 + r`, columns `j0..j0 + w`;
    /// results go to `c` (an output overwritten, `beta = 0`). Indices are
    /// relative to the block this epilogue was [offset](Self::offset) to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_tile(
        &self,
        i0: usize,
        j0: usize,
        alpha: f32,
        tile: &mut [f32],
        nr: usize,
        w: usize,
        c: &mut super::CBlock<'_>,
    ) {
        let rows = tile.len() / nr;
        for (r, t) in tile.chunks_exact_mut(nr).enumerate() {
            let t = &mut t[..w];
            if alpha != 1.0 {
                t.iter_mut().for_each(|v| *v *= alpha);
            }
            match self.bias {
                Bias::Cols(b) => t.iter_mut().zip(&b[j0..j0 + w]).for_each(|(v, &b)| *v += b),
                Bias::Rows(b) => {
                    let b = b[i0 + r];
                    t.iter_mut().for_each(|v| *v += b);
                }
                Bias::None => {}
            }
        }
        self.activation.apply_in_place(&mut tile[..(rows - 1) * nr + w]);
        let ld = c.ld;
        for (r, t) in tile.chunks_exact(nr).enumerate() {
            let crow = &mut c.row_mut(i0 + r)[j0..j0 + w];
            crow.copy_from_slice(&t[..w]);
            if let Some(res) = self.residual {
                crow.iter_mut().zip(&res[(i0 + r) * ld + j0..][..w]).for_each(|(o, &x)| *o += x);
            }
        }
    }

    /// Finishes one row segment: `acc` holds `alpha * a @ b + beta * c` for row `i`,
    /// columns `j0..j0 + acc.len()` (`residual` row stride `ld`); the result goes to `out`.
    #[inline]
    pub(crate) fn finish(&self, i: usize, j0: usize, ld: usize, acc: &mut [f32], out: &mut [f32]) {
        let len = acc.len();
        match self.bias {
            Bias::Cols(b) => acc.iter_mut().zip(&b[j0..j0 + len]).for_each(|(v, &b)| *v += b),
            Bias::Rows(b) => {
                let b = b[i];
                acc.iter_mut().for_each(|v| *v += b);
            }
            Bias::None => {}
        }
        self.activation.apply(acc, out);
        if let Some(r) = self.residual {
            out.iter_mut().zip(&r[i * ld + j0..i * ld + j0 + len]).for_each(|(o, &r)| *o += r);
        }
    }
}
