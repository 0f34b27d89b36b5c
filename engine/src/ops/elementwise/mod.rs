//! Element-wise ops: unary math and activations, broadcasting binary arithmetic,
//! comparisons and logic, variadic Sum/Mean/Max/Min, Where, Clip.
//! Reference: ONNX operator spec (onnx/docs/Operators.md) for each op.
//!
//! Each unary op is defined once as a scalar function in f64; the f32 loop is run
//! by `floe_kernels::elementwise` (the seam where vectorised versions drop in).

mod kernel;

use super::broadcast::{binary_offsets, broadcast_facts, broadcast_shapes};
use super::{dtype_facts, input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::Fact;
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

/// Unary math and activations.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Relu,
    Sigmoid,
    Tanh,
    Softplus,
    Softsign,
    Mish,
    HardSwish,
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    Celu { alpha: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Swish { alpha: f32 },
    Gelu { tanh_approx: bool },
    Shrink { bias: f32, lambd: f32 },
    Not,
    BitwiseNot,
    IsNaN,
    IsInf { detect_negative: bool, detect_positive: bool },
}

/// Broadcasting binary ops.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod = true`: C fmod (sign of dividend); false: Python mod (sign of divisor).
    Mod {
        fmod: bool,
    },
    Min,
    Max,
    PRelu,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitShiftLeft,
    BitShiftRight,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
}

/// N-ary broadcasting reductions over inputs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VariadicOp {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ElementwiseOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
    Variadic(VariadicOp),
    /// `Where(cond, x, y)`.
    Where,
    /// Clip with bounds from attributes (opset < 11) or inputs 1 and 2.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
}

impl UnaryOp {
    fn name(&self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "Neg",
            Abs => "Abs",
            Sign => "Sign",
            Exp => "Exp",
            Log => "Log",
            Sqrt => "Sqrt",
            Reciprocal => "Reciprocal",
            Floor => "Floor",
            Ceil => "Ceil",
            Round => "Round",
            Sin => "Sin",
            Cos => "Cos",
            Tan => "Tan",
            Asin => "Asin",
            Acos => "Acos",
            Atan => "Atan",
            Sinh => "Sinh",
            Cosh => "Cosh",
            Asinh => "Asinh",
            Acosh => "Acosh",
            Atanh => "Atanh",
            Erf => "Erf",
            Relu => "Relu",
            Sigmoid => "Sigmoid",
            Tanh => "Tanh",
            Softplus => "Softplus",
            Softsign => "Softsign",
            Mish => "Mish",
            HardSwish => "HardSwish",
            Elu { .. } => "Elu",
            Selu { .. } => "Selu",
            Celu { .. } => "Celu",
            LeakyRelu { .. } => "LeakyRelu",
            ThresholdedRelu { .. } => "ThresholdedRelu",
            HardSigmoid { .. } => "HardSigmoid",
            Swish { .. } => "Swish",
            Gelu { .. } => "Gelu",
            Shrink { .. } => "Shrink",
            Not => "Not",
            BitwiseNot => "BitwiseNot",
            IsNaN => "IsNaN",
            IsInf { .. } => "IsInf",
        }
    }

    /// The scalar definition, in f64.
    pub fn apply_f64(&self, x: f64) -> f64 {
        use UnaryOp::*;
        match *self {
            Neg => -x,
            Abs => x.abs(),
            Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x * 0.0
                }
            }
            Exp => x.exp(),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Reciprocal => 1.0 / x,
            Floor => x.floor(),
            Ceil => x.ceil(),
            Round => x.round_ties_even(),
            Sin => x.sin(),
            Cos => x.cos(),
            Tan => x.tan(),
            Asin => x.asin(),
            Acos => x.acos(),
            Atan => x.atan(),
            Sinh => x.sinh(),
            Cosh => x.cosh(),
            Asinh => x.asinh(),
            Acosh => x.acosh(),
            Atanh => x.atanh(),
            Erf => floe_kernels::math::erf_f64(x),
            Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Tanh => x.tanh(),
            Softplus => {
                if x > 30.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
            Softsign => x / (1.0 + x.abs()),
            Mish => x * (if x > 30.0 { x } else { x.exp().ln_1p() }).tanh(),
            HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Elu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha as f64 * (x.exp() - 1.0)
                }
            }
            Selu { alpha, gamma } => gamma as f64 * if x > 0.0 { x } else { alpha as f64 * (x.exp() - 1.0) },
            Celu { alpha } => {
                let a = alpha as f64;
                x.max(0.0) + (a * ((x / a).exp() - 1.0)).min(0.0)
            }
            LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha as f64 * x
                }
            }
            ThresholdedRelu { alpha } => {
                if x > alpha as f64 {
                    x
                } else {
                    0.0
                }
            }
            HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Swish { alpha } => x / (1.0 + (-(alpha as f64) * x).exp()),
            Gelu { tanh_approx: false } => 0.5 * x * (1.0 + floe_kernels::math::erf_f64(x / std::f64::consts::SQRT_2)),
            Gelu { tanh_approx: true } => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Shrink { bias, lambd } => {
                let (b, l) = (bias as f64, lambd as f64);
                if x < -l {
                    x + b
                } else if x > l {
                    x - b
                } else {
                    0.0
                }
            }
            Not | BitwiseNot | IsNaN | IsInf { .. } => x,
        }
    }

    fn out_dtype(&self, input: DType) -> DType {
        match self {
            UnaryOp::IsNaN | UnaryOp::IsInf { .. } => DType::Bool,
            _ => input,
        }
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        use UnaryOp::*;
        let dt = x.dtype();
        match self {
            Not => {
                if dt != DType::Bool {
                    bail!("Not expects bool, got {dt}");
                }
                let mut out = x.clone();
                out.bytes_mut().iter_mut().for_each(|b| *b = (*b == 0) as u8);
                return Ok(out);
            }
            IsNaN | IsInf { .. } => {
                let vals = x.to_f64_vec();
                let f = |v: f64| match *self {
                    IsNaN => v.is_nan(),
                    IsInf { detect_negative, detect_positive } => {
                        (v == f64::INFINITY && detect_positive) || (v == f64::NEG_INFINITY && detect_negative)
                    }
                    _ => false,
                };
                let bools: Vec<bool> = vals.into_iter().map(f).collect();
                return Tensor::from_bools(x.shape(), &bools);
            }
            _ => {}
        }
        if dt == DType::Bool {
            bail!("{} does not accept bool inputs", self.name());
        }
        let mut out = x.clone();
        if dt.is_int() {
            let op = *self;
            dispatch_numeric!(dt, T => {
                let o = out.as_mut_slice::<T>()?;
                for v in o.iter_mut() {
                    let i = v.to_i128();
                    let r = match op {
                        Neg => i.wrapping_neg(),
                        Abs => i.abs(),
                        Sign => i.signum(),
                        Relu => i.max(0),
                        BitwiseNot => !i,
                        _ => return Err(Error::Invalid(format!("{} does not accept {dt} inputs", op.name()))),
                    };
                    *v = T::from_i128(r);
                }
            }, bool => unreachable!());
            return Ok(out);
        }
        if *self == BitwiseNot {
            bail!("BitwiseNot expects an integer input, got {dt}");
        }
        let op = *self;
        match dt {
            DType::F32 => {
                use floe_kernels::elementwise::unary_f32;
                let fast = fast_unary(&op);
                let mut o = Tensor::zeros(DType::F32, x.shape())?;
                match fast {
                    Some(k) => unary_f32(k, x.as_slice::<f32>()?, o.as_mut_slice::<f32>()?),
                    None => floe_kernels::elementwise::map_f32(x.as_slice::<f32>()?, o.as_mut_slice::<f32>()?, |v| {
                        op.apply_f64(v as f64) as f32
                    }),
                }
                out = o;
            }
            _ => dispatch_numeric!(dt, T => {
                for v in out.as_mut_slice::<T>()?.iter_mut() {
                    *v = T::from_f64(op.apply_f64(v.to_f64()));
                }
            }, bool => unreachable!()),
        }
        Ok(out)
    }
}

/// The vectorised f32 kernel computing `op`, if there is one.
fn fast_unary(op: &UnaryOp) -> Option<floe_kernels::elementwise::UnaryKind> {
    use floe_kernels::elementwise::UnaryKind as K;
    use UnaryOp::*;
    Some(match op {
        Relu => K::Relu,
        Sigmoid => K::Sigmoid,
        Tanh => K::Tanh,
        Exp => K::Exp,
        Sqrt => K::Sqrt,
        Neg => K::Neg,
        Abs => K::Abs,
        Erf => K::Erf,
        Gelu { tanh_approx: false } => K::Gelu,
        Gelu { tanh_approx: true } => K::GeluTanh,
        Swish { alpha } if *alpha == 1.0 => K::Silu,
        _ => return None,
    })
}

impl BinaryOp {
    fn name(&self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "Add",
            Sub => "Sub",
            Mul => "Mul",
            Div => "Div",
            Pow => "Pow",
            Mod { .. } => "Mod",
            Min => "Min",
            Max => "Max",
            PRelu => "PRelu",
            Equal => "Equal",
            Less => "Less",
            LessOrEqual => "LessOrEqual",
            Greater => "Greater",
            GreaterOrEqual => "GreaterOrEqual",
            And => "And",
            Or => "Or",
            Xor => "Xor",
            BitShiftLeft | BitShiftRight => "BitShift",
            BitwiseAnd => "BitwiseAnd",
            BitwiseOr => "BitwiseOr",
            BitwiseXor => "BitwiseXor",
        }
    }

    fn is_comparison(&self) -> bool {
        use BinaryOp::*;
        matches!(self, Equal | Less | LessOrEqual | Greater | GreaterOrEqual)
    }

    fn is_logic(&self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }

    fn out_dtype(&self, a: DType) -> DType {
        if self.is_comparison() || self.is_logic() {
            DType::Bool
        } else {
            a
        }
    }

    fn float(&self, a: f64, b: f64) -> f64 {
        use BinaryOp::*;
        match *self {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Pow => a.powf(b),
            Mod { fmod: true } => a % b,
            Mod { fmod: false } => {
                let r = a % b;
                if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                    r + b
                } else {
                    r
                }
            }
            Min => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            }
            Max => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }
            PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
            Equal => (a == b) as u8 as f64,
            Less => (a < b) as u8 as f64,
            LessOrEqual => (a <= b) as u8 as f64,
            Greater => (a > b) as u8 as f64,
            GreaterOrEqual => (a >= b) as u8 as f64,
            _ => f64::NAN,
        }
    }

    fn int(&self, a: i128, b: i128) -> Result<i128> {
        use BinaryOp::*;
        Ok(match *self {
            Add => a.wrapping_add(b),
            Sub => a.wrapping_sub(b),
            Mul => a.wrapping_mul(b),
            Div => {
                if b == 0 {
                    bail!("integer division by zero");
                }
                a / b
            }
            Pow => {
                if b < 0 {
                    (a as f64).powf(b as f64) as i128
                } else {
                    let mut r: i128 = 1;
                    for _ in 0..b.min(128) {
                        r = r.wrapping_mul(a);
                    }
                    r
                }
            }
            Mod { fmod } => {
                if b == 0 {
                    bail!("integer modulo by zero");
                }
                let r = a % b;
                if !fmod && r != 0 && ((r < 0) != (b < 0)) {
                    r + b
                } else {
                    r
                }
            }
            Min => a.min(b),
            Max => a.max(b),
            PRelu => {
                if a < 0 {
                    a * b
                } else {
                    a
                }
            }
            Equal => (a == b) as i128,
            Less => (a < b) as i128,
            LessOrEqual => (a <= b) as i128,
            Greater => (a > b) as i128,
            GreaterOrEqual => (a >= b) as i128,
            And => (a != 0 && b != 0) as i128,
            Or => (a != 0 || b != 0) as i128,
            Xor => ((a != 0) != (b != 0)) as i128,
            BitShiftLeft => {
                if b >= 64 {
                    0
                } else {
                    a << b
                }
            }
            BitShiftRight => {
                if b >= 128 {
                    0
                } else {
                    a >> b
                }
            }
            BitwiseAnd => a & b,
            BitwiseOr => a | b,
            BitwiseXor => a ^ b,
        })
    }

    /// Evaluates with broadcasting. Pow allows a different exponent dtype.
    pub fn eval(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (da, db) = (a.dtype(), b.dtype());
        let out_shape = broadcast_shapes(&[a.shape(), b.shape()])?;
        if self.is_logic() {
            if da != DType::Bool || db != DType::Bool {
                bail!("{} expects bool inputs, got {da} and {db}", self.name());
            }
        } else if da != db && *self != BinaryOp::Pow {
            bail!("{} inputs have different dtypes: {da} and {db}", self.name());
        }
        let out_dt = self.out_dtype(da);
        let mut out = Tensor::zeros(out_dt, &out_shape)?;
        if da == DType::F32 && db == DType::F32 && out_dt == DType::F32 {
            use floe_kernels::elementwise as ew;
            let kind = match self {
                BinaryOp::Add => Some(ew::BinaryKind::Add),
                BinaryOp::Sub => Some(ew::BinaryKind::Sub),
                BinaryOp::Mul => Some(ew::BinaryKind::Mul),
                BinaryOp::Div => Some(ew::BinaryKind::Div),
                _ => None,
            };
            if let Some(kind) = kind {
                let (av, bv) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
                // trailing dims of `small` equal the output's (leading dims of 1 stripped)
                let is_suffix = |small: &[usize]| {
                    let s: Vec<usize> = small.iter().copied().skip_while(|&d| d == 1).collect();
                    out_shape.ends_with(&s)
                };
                let o = out.as_mut_slice::<f32>()?;
                if a.shape() == b.shape() {
                    ew::binary_f32(kind, av, bv, o);
                    return Ok(out);
                } else if bv.len() == 1 && a.shape() == out_shape.as_slice() {
                    ew::binary_f32_scalar(kind, av, bv[0], false, o);
                    return Ok(out);
                } else if av.len() == 1 && b.shape() == out_shape.as_slice() {
                    ew::binary_f32_scalar(kind, bv, av[0], true, o);
                    return Ok(out);
                } else if a.shape() == out_shape.as_slice() && is_suffix(b.shape()) {
                    ew::binary_f32_rows(kind, av, bv, false, o);
                    return Ok(out);
                } else if b.shape() == out_shape.as_slice() && is_suffix(a.shape()) {
                    ew::binary_f32_rows(kind, bv, av, true, o);
                    return Ok(out);
                }
            }
        }
        let (oa, ob) = binary_offsets(a.shape(), b.shape(), &out_shape);
        let use_float = da.is_float() || db.is_float();
        if use_float && *self != BinaryOp::Pow || (da.is_float() && *self == BinaryOp::Pow) {
            let va = a.to_f64_vec();
            let vb = b.to_f64_vec();
            let op = *self;
            if out_dt == DType::Bool {
                let o = out.bytes_mut();
                for i in 0..o.len() {
                    o[i] = op.float(va[oa[i]], vb[ob[i]]) as u8;
                }
            } else {
                dispatch_numeric!(out_dt, T => {
                    let o = out.as_mut_slice::<T>()?;
                    for i in 0..o.len() {
                        o[i] = T::from_f64(op.float(va[oa[i]], vb[ob[i]]));
                    }
                }, bool => unreachable!());
            }
            return Ok(out);
        }
        if *self == BinaryOp::Pow && db.is_float() {
            // integer base, float exponent
            let va = a.to_f64_vec();
            let vb = b.to_f64_vec();
            dispatch_numeric!(out_dt, T => {
                let o = out.as_mut_slice::<T>()?;
                for i in 0..o.len() {
                    o[i] = T::from_f64(va[oa[i]].powf(vb[ob[i]]));
                }
            }, bool => unreachable!());
            return Ok(out);
        }
        let ia = to_i128_vec(a)?;
        let ib = to_i128_vec(b)?;
        if out_dt == DType::Bool {
            let o = out.bytes_mut();
            for i in 0..o.len() {
                o[i] = self.int(ia[oa[i]], ib[ob[i]])? as u8;
            }
        } else {
            dispatch_numeric!(out_dt, T => {
                let o = out.as_mut_slice::<T>()?;
                for i in 0..o.len() {
                    o[i] = T::from_i128(self.int(ia[oa[i]], ib[ob[i]])?);
                }
            }, bool => unreachable!());
        }
        Ok(out)
    }
}

fn to_i128_vec(t: &Tensor) -> Result<Vec<i128>> {
    if t.dtype() == DType::Bool {
        return Ok(t.bytes().iter().map(|&b| (b != 0) as i128).collect());
    }
    dispatch_numeric!(t.dtype(), T => Ok(t.as_slice::<T>()?.iter().map(|v| v.to_i128()).collect()),
        bool => unreachable!())
}

/// `Where(cond, x, y)` with broadcasting over all three.
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if cond.dtype() != DType::Bool {
        bail!("Where condition must be bool, got {}", cond.dtype());
    }
    if x.dtype() != y.dtype() {
        bail!("Where branches have different dtypes: {} and {}", x.dtype(), y.dtype());
    }
    let shape = broadcast_shapes(&[cond.shape(), x.shape(), y.shape()])?;
    let mut out = Tensor::zeros(x.dtype(), &shape)?;
    let es = x.dtype().size();
    let n = out.numel();
    let mut oc = Vec::with_capacity(n);
    super::broadcast::for_each_offset(cond.shape(), &shape, |_, o| oc.push(o));
    let (ox, oy) = binary_offsets(x.shape(), y.shape(), &shape);
    let (c, xb, yb) = (cond.bytes(), x.bytes(), y.bytes());
    let o = out.bytes_mut();
    for i in 0..n {
        let src = if c[oc[i]] != 0 { &xb[ox[i] * es..][..es] } else { &yb[oy[i] * es..][..es] };
        o[i * es..(i + 1) * es].copy_from_slice(src);
    }
    Ok(out)
}

fn clip(
    x: &Tensor,
    min: Option<&Tensor>,
    max: Option<&Tensor>,
    amin: Option<f32>,
    amax: Option<f32>,
) -> Result<Tensor> {
    let dt = x.dtype();
    let mut out = x.clone();
    dispatch_numeric!(dt, T => {
        let lo: Option<T> = match min {
            Some(t) => Some(*t.as_slice::<T>()?.first().ok_or_else(|| Error::Invalid("Clip min is empty".into()))?),
            None => amin.map(|v| T::from_f64(v as f64)),
        };
        let hi: Option<T> = match max {
            Some(t) => Some(*t.as_slice::<T>()?.first().ok_or_else(|| Error::Invalid("Clip max is empty".into()))?),
            None => amax.map(|v| T::from_f64(v as f64)),
        };
        for v in out.as_mut_slice::<T>()?.iter_mut() {
            if let Some(l) = lo {
                if *v < l { *v = l; }
            }
            if let Some(h) = hi {
                if *v > h { *v = h; }
            }
        }
    }, bool => bail!("Clip does not accept bool"));
    Ok(out)
}

impl OpImpl for ElementwiseOp {
    fn name(&self) -> &'static str {
        match self {
            ElementwiseOp::Unary(u) => u.name(),
            ElementwiseOp::Binary(b) => b.name(),
            ElementwiseOp::Variadic(VariadicOp::Sum) => "Sum",
            ElementwiseOp::Variadic(VariadicOp::Mean) => "Mean",
            ElementwiseOp::Variadic(VariadicOp::Max) => "Max",
            ElementwiseOp::Variadic(VariadicOp::Min) => "Min",
            ElementwiseOp::Where => "Where",
            ElementwiseOp::Clip { .. } => "Clip",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let present: Vec<&InferInput> = match self {
            ElementwiseOp::Clip { .. } => inputs.iter().take(1).collect(),
            _ => inputs.iter().collect(),
        };
        let dtype = match self {
            ElementwiseOp::Unary(u) => present.first().and_then(|i| i.fact.dtype).map(|d| u.out_dtype(d)),
            ElementwiseOp::Binary(b) => present.first().and_then(|i| i.fact.dtype).map(|d| b.out_dtype(d)),
            ElementwiseOp::Where => present.get(1).and_then(|i| i.fact.dtype),
            _ => present.first().and_then(|i| i.fact.dtype),
        };
        let shapes: Option<Vec<&crate::Shape>> = present.iter().map(|i| i.fact.shape.as_ref()).collect();
        let shape = match shapes {
            Some(s) => Some(broadcast_facts(&s)?),
            None => None,
        };
        let _ = dtype_facts;
        Ok(vec![Fact { dtype, shape }; n.max(1)])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let out = match self {
            ElementwiseOp::Unary(u) => u.eval(input(inputs, 0, "X")?)?,
            ElementwiseOp::Binary(b) => b.eval(input(inputs, 0, "A")?, input(inputs, 1, "B")?)?,
            ElementwiseOp::Variadic(v) => {
                let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
                let first = *xs.first().ok_or_else(|| Error::Invalid("no inputs".into()))?;
                let bop = match v {
                    VariadicOp::Sum | VariadicOp::Mean => BinaryOp::Add,
                    VariadicOp::Max => BinaryOp::Max,
                    VariadicOp::Min => BinaryOp::Min,
                };
                let mut acc = first.clone();
                for x in &xs[1..] {
                    acc = bop.eval(&acc, x)?;
                }
                if *v == VariadicOp::Mean && xs.len() > 1 {
                    let n = Tensor::scalar(xs.len() as f64).cast(acc.dtype())?;
                    acc = BinaryOp::Div.eval(&acc, &n)?;
                }
                if xs.len() == 1 {
                    // broadcast nothing: result is the input itself
                    acc = first.clone();
                }
                acc
            }
            ElementwiseOp::Where => {
                where_(input(inputs, 0, "condition")?, input(inputs, 1, "X")?, input(inputs, 2, "Y")?)?
            }
            ElementwiseOp::Clip { min, max } => {
                clip(input(inputs, 0, "input")?, opt_input(inputs, 1), opt_input(inputs, 2), *min, *max)?
            }
        };
        Ok(vec![out])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn super::Kernel>>> {
        match self {
            ElementwiseOp::Unary(u) => kernel::unary(u, inputs),
            ElementwiseOp::Binary(b) => kernel::binary(b, inputs),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_and_c_modulo_differ_in_sign() {
        let a = Tensor::from_slice(&[2], &[-7i32, 7]).unwrap();
        let b = Tensor::from_slice(&[2], &[3i32, -3]).unwrap();
        let py = BinaryOp::Mod { fmod: false }.eval(&a, &b).unwrap();
        assert_eq!(py.as_slice::<i32>().unwrap(), &[2, -2]);
        let c = BinaryOp::Mod { fmod: true }.eval(&a, &b).unwrap();
        assert_eq!(c.as_slice::<i32>().unwrap(), &[-1, 1]);
    }

    #[test]
    fn integer_division_by_zero_is_an_error_not_a_panic() {
        let a = Tensor::from_slice(&[1], &[1i32]).unwrap();
        let b = Tensor::from_slice(&[1], &[0i32]).unwrap();
        assert!(BinaryOp::Div.eval(&a, &b).is_err());
    }

    #[test]
    fn broadcasting_add_matches_hand_computed() {
        let a = Tensor::from_slice(&[2, 1], &[1.0f32, 2.0]).unwrap();
        let b = Tensor::from_slice(&[3], &[10.0f32, 20.0, 30.0]).unwrap();
        let c = BinaryOp::Add.eval(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.as_slice::<f32>().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
