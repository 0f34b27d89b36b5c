//! The f64 definitions the vector functions are measured against (tests, the
//! accuracy example, the docs). Independent of the vector code: `std`'s and `libm`'s
//! f64 functions, written in forms that do not cancel (`1 + erf(u)` as `erfc(-u)`,
//! `1 + tanh(y)` as `2 / (1 + e^-2y)`), so that the f64 value is accurate to far
//! better than one f32 ulp everywhere.

use super::Func;

pub fn exp(x: f64) -> f64 {
    x.exp()
}

pub fn tanh(x: f64) -> f64 {
    x.tanh()
}

pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return -0.0;
    }
    x / (1.0 + (-x).exp())
}

pub fn gelu(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return -0.0;
    }
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}

pub fn gelu_tanh(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return -0.0;
    }
    let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    x / (1.0 + (-2.0 * y).exp())
}

/// The f64 definition of `f`.
pub fn of(f: Func) -> fn(f64) -> f64 {
    match f {
        Func::Exp => exp,
        Func::Tanh => tanh,
        Func::Erf => erf,
        Func::Sigmoid => sigmoid,
        Func::Silu => silu,
        Func::Gelu => gelu,
        Func::GeluTanh => gelu_tanh,
    }
}
