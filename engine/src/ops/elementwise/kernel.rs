//! Prepared f32 element-wise kernels: the broadcasting strategy of a binary op
//! (same shape, scalar, trailing rows, or a general offset table) is chosen once
//! at plan time; unary ops run the vectorised kernels of `floe_kernels`.

use super::{BinaryOp, UnaryOp};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::broadcast::{binary_offsets, broadcast_shapes};
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::tensor::Tensor;
use floe_kernels::elementwise::{self as ew, BinaryKind, UnaryKind};

enum Strategy {
    Same,
    /// One operand is a single value (`.0`: it is the first operand).
    Scalar(bool),
    /// One operand repeats along the leading dims (`.0`: it is the first operand).
    Rows(bool),
    General(Vec<usize>, Vec<usize>),
}

struct BinaryKernel {
    kind: BinaryKind,
    strategy: Strategy,
    lens: (usize, usize, usize),
}

fn f32_in<'a>(inputs: &[Option<&'a Tensor>], i: usize, len: usize) -> Result<&'a [f32]> {
    let t = inputs.get(i).copied().flatten().ok_or_else(|| Error::Invalid(format!("missing input {i}")))?;
    let s = t.as_slice::<f32>()?;
    if s.len() != len {
        return Err(Error::Shape(format!("input {i} has {} elements, the plan expects {len}", s.len())));
    }
    Ok(s)
}

impl Kernel for BinaryKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (la, lb, lo) = self.lens;
        let (a, b) = (f32_in(inputs, 0, la)?, f32_in(inputs, 1, lb)?);
        let o = outputs[0].as_mut_slice::<f32>()?;
        if o.len() != lo {
            return Err(Error::Shape("output size differs from the plan".into()));
        }
        match &self.strategy {
            Strategy::Same => ew::binary_f32(self.kind, a, b, o),
            Strategy::Scalar(false) => ew::binary_f32_scalar(self.kind, a, b[0], false, o),
            Strategy::Scalar(true) => ew::binary_f32_scalar(self.kind, b, a[0], true, o),
            Strategy::Rows(false) => ew::binary_f32_rows(self.kind, a, b, false, o),
            Strategy::Rows(true) => ew::binary_f32_rows(self.kind, b, a, true, o),
            Strategy::General(oa, ob) => {
                let f = |x: f32, y: f32| match self.kind {
                    BinaryKind::Add => x + y,
                    BinaryKind::Sub => x - y,
                    BinaryKind::Mul => x * y,
                    BinaryKind::Div => x / y,
                };
                for ((v, &i), &j) in o.iter_mut().zip(oa).zip(ob) {
                    *v = f(a[i], b[j]);
                }
            }
        }
        Ok(())
    }
}

pub(super) fn binary(op: &BinaryOp, inputs: &[InferInput<'_>]) -> Result<Option<Box<dyn Kernel>>> {
    let kind = match op {
        BinaryOp::Add => BinaryKind::Add,
        BinaryOp::Sub => BinaryKind::Sub,
        BinaryOp::Mul => BinaryKind::Mul,
        BinaryOp::Div => BinaryKind::Div,
        _ => return Ok(None),
    };
    let f32_fact = |i: usize| inputs.get(i).is_some_and(|x| x.fact.dtype == Some(DType::F32));
    if inputs.len() != 2 || !f32_fact(0) || !f32_fact(1) {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (fixed_shape(&inputs[0]), fixed_shape(&inputs[1])) else { return Ok(None) };
    let out = broadcast_shapes(&[&a, &b])?;
    let (la, lb, lo) = (a.iter().product::<usize>(), b.iter().product::<usize>(), out.iter().product::<usize>());
    let is_suffix = |small: &[usize]| {
        let s: Vec<usize> = small.iter().copied().skip_while(|&d| d == 1).collect();
        out.ends_with(&s)
    };
    let strategy = if a == b {
        Strategy::Same
    } else if lb == 1 && a == out {
        Strategy::Scalar(false)
    } else if la == 1 && b == out {
        Strategy::Scalar(true)
    } else if a == out && is_suffix(&b) && lb > 0 {
        Strategy::Rows(false)
    } else if b == out && is_suffix(&a) && la > 0 {
        Strategy::Rows(true)
    } else {
        let (oa, ob) = binary_offsets(&a, &b, &out);
        Strategy::General(oa, ob)
    };
    Ok(Some(Box::new(BinaryKernel { kind, strategy, lens: (la, lb, lo) })))
}

struct UnaryKernel {
    op: UnaryOp,
    fast: Option<UnaryKind>,
    len: usize,
}

impl Kernel for UnaryKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = f32_in(inputs, 0, self.len)?;
        let o = outputs[0].as_mut_slice::<f32>()?;
        if o.len() != self.len {
            return Err(Error::Shape("output size differs from the plan".into()));
        }
        match self.fast {
            Some(k) => ew::unary_f32(k, x, o),
            None => ew::map_f32(x, o, |v| self.op.apply_f64(v as f64) as f32),
        }
        Ok(())
    }
}

pub(super) fn unary(op: &UnaryOp, inputs: &[InferInput<'_>]) -> Result<Option<Box<dyn Kernel>>> {
    let Some(x) = inputs.first().filter(|x| x.fact.dtype == Some(DType::F32)) else { return Ok(None) };
    let Some(shape) = fixed_shape(x) else { return Ok(None) };
    if op.out_dtype(DType::F32) != DType::F32 || matches!(op, UnaryOp::Not | UnaryOp::BitwiseNot) {
        return Ok(None);
    }
    Ok(Some(Box::new(UnaryKernel { op: *op, fast: super::fast_unary(op), len: shape.iter().product() })))
}
