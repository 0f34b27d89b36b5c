//! Prepared f32 kernels for Linear, MatMul and Gemm: constant weights are packed
//! once for the selected micro-kernel, batch offsets are computed once, and the
//! bias / activation / scaled C go into the GEMM epilogue.

use super::MatMulOp;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::broadcast::{broadcast_shapes, for_each_offset};
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::tensor::Tensor;
use floe_kernels::gemm::{self, Activation, BSource, Bias, Epilogue, MatRef, PackedB};

/// Where B comes from at run time.
enum Weights {
    Packed(PackedB),
    /// Input 1, as a `k x n` matrix (transposed view if `trans`).
    Input {
        trans: bool,
    },
}

/// Where the per-column bias comes from.
enum BiasSrc {
    None,
    Const(Vec<f32>),
    /// Input `i`, `n` values.
    Input(usize),
}

/// `act(alpha * A @ B + bias) + residual` for `rows` rows of A (`k` wide) at a time;
/// A is input 0 viewed as `[rows, k]` (or its transpose).
struct LinearKernel {
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    alpha: f32,
    weights: Weights,
    bias: BiasSrc,
    /// `beta * C` broadcast to `m x n` (Gemm with a full C).
    residual: Option<Vec<f32>>,
    activation: Activation,
}

fn f32_input<'a>(inputs: &[Option<&'a Tensor>], i: usize, len: usize) -> Result<&'a [f32]> {
    let t = inputs.get(i).copied().flatten().ok_or_else(|| Error::Invalid(format!("missing input {i}")))?;
    let s = t.as_slice::<f32>()?;
    if s.len() != len {
        return Err(Error::Shape(format!("input {i} has {} elements, the plan expects {len}", s.len())));
    }
    Ok(s)
}

impl Kernel for LinearKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (m, k, n) = (self.m, self.k, self.n);
        let a = f32_input(inputs, 0, m * k)?;
        let a = if self.trans_a { MatRef::new(a, k, m).t() } else { MatRef::new(a, m, k) };
        let bias: &[f32] = match &self.bias {
            BiasSrc::None => &[],
            BiasSrc::Const(b) => b,
            BiasSrc::Input(i) => f32_input(inputs, *i, n)?,
        };
        let epi = Epilogue {
            bias: if bias.is_empty() { Bias::None } else { Bias::Cols(bias) },
            activation: self.activation,
            residual: self.residual.as_deref(),
        };
        let c = outputs[0].as_mut_slice::<f32>()?;
        if c.len() != m * n {
            return Err(Error::Shape(format!("output has {} elements, the plan expects {}", c.len(), m * n)));
        }
        match &self.weights {
            Weights::Packed(p) => gemm::sgemm_packed(self.alpha, a, p, 0.0, c, &epi),
            Weights::Input { trans } => {
                let b = f32_input(inputs, 1, k * n)?;
                let b = if *trans { MatRef::new(b, n, k).t() } else { MatRef::new(b, k, n) };
                gemm::sgemm_ex(gemm::selected(), self.alpha, a, BSource::Mat(b), 0.0, c, &epi)
            }
        }
        Ok(())
    }
}

/// Batched `A @ B` with numpy broadcasting of the batch dims.
struct BatchedKernel {
    m: usize,
    k: usize,
    n: usize,
    /// Per output matrix: offsets (in matrices) into A and B.
    offsets: Vec<(usize, usize)>,
    a_len: usize,
    b_len: usize,
}

impl Kernel for BatchedKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (m, k, n) = (self.m, self.k, self.n);
        let a = f32_input(inputs, 0, self.a_len)?;
        let b = f32_input(inputs, 1, self.b_len)?;
        let c = outputs[0].as_mut_slice::<f32>()?;
        if c.len() != self.offsets.len() * m * n {
            return Err(Error::Shape("output size differs from the plan".into()));
        }
        for (ci, &(oa, ob)) in c.chunks_exact_mut(m * n).zip(&self.offsets) {
            let am = MatRef::new(&a[oa * m * k..(oa + 1) * m * k], m, k);
            let bm = MatRef::new(&b[ob * k * n..(ob + 1) * k * n], k, n);
            gemm::sgemm(1.0, am, bm, 0.0, ci);
        }
        Ok(())
    }
}

fn const_f32<'a>(i: Option<&InferInput<'a>>) -> Option<&'a [f32]> {
    i?.value.filter(|t| t.dtype() == DType::F32)?.as_slice::<f32>().ok()
}

fn is_f32(i: Option<&InferInput<'_>>) -> bool {
    i.is_some_and(|i| i.fact.dtype == Some(DType::F32))
}

/// The kernel for `op` on these inputs, when one applies.
pub(super) fn prepare(op: &MatMulOp, inputs: &[InferInput<'_>]) -> Result<Option<Box<dyn Kernel>>> {
    if !is_f32(inputs.first()) || !is_f32(inputs.get(1)) {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (fixed_shape(&inputs[0]), fixed_shape(&inputs[1])) else { return Ok(None) };
    let kernel = |m, k, n, trans_a, alpha, b_trans: bool, bias, residual, activation| -> Box<dyn Kernel> {
        let weights = match const_f32(inputs.get(1)) {
            Some(w) => {
                let wm = if b_trans { MatRef::new(w, n, k).t() } else { MatRef::new(w, k, n) };
                Weights::Packed(PackedB::new(gemm::selected(), wm))
            }
            None => Weights::Input { trans: b_trans },
        };
        Box::new(LinearKernel { m, k, n, trans_a, alpha, weights, bias, residual, activation })
    };
    match op {
        MatMulOp::Linear { activation } => {
            if a.is_empty() || b.len() != 2 || a[a.len() - 1] != b[0] {
                return Ok(None);
            }
            let (k, n) = (b[0], b[1]);
            let m = a.iter().product::<usize>() / k.max(1);
            let bias = match inputs.get(2) {
                None => BiasSrc::None,
                Some(i) if i.value.is_none() && i.fact.shape.is_none() && i.fact.dtype.is_none() => BiasSrc::None,
                Some(i) => match (const_f32(Some(i)), fixed_shape(i)) {
                    (Some(v), _) if v.len() == n => BiasSrc::Const(v.to_vec()),
                    (None, Some(s)) if is_f32(Some(i)) && s.iter().product::<usize>() == n => BiasSrc::Input(2),
                    _ => return Ok(None),
                },
            };
            Ok(Some(kernel(m, k, n, false, 1.0, false, bias, None, activation.kernel())))
        }
        MatMulOp::Gemm { alpha, beta, trans_a, trans_b } => {
            if a.len() != 2 || b.len() != 2 {
                return Ok(None);
            }
            let (m, k) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Ok(None);
            }
            let (mut bias, mut residual) = (BiasSrc::None, None);
            if let Some(ci) = inputs.get(2).filter(|i| i.fact.dtype.is_some() || i.value.is_some()) {
                let (Some(c), Some(cs)) = (const_f32(Some(ci)), fixed_shape(ci)) else { return Ok(None) };
                if cs.iter().product::<usize>() == n && cs.last().is_none_or(|&d| d == n) {
                    bias = BiasSrc::Const(c.iter().map(|v| v * beta).collect());
                } else {
                    let Ok(full) = broadcast_shapes(&[&cs, &[m, n]]) else { return Ok(None) };
                    if full != [m, n] {
                        return Ok(None);
                    }
                    let mut r = Vec::with_capacity(m * n);
                    for_each_offset(&cs, &[m, n], |_, o| r.push(c[o] * beta));
                    residual = Some(r);
                }
            }
            Ok(Some(kernel(m, k, n, *trans_a, *alpha, *trans_b, bias, residual, Activation::None)))
        }
        MatMulOp::MatMul => {
            if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
                return Ok(None);
            }
            let (ra, rb) = (a.len(), b.len());
            let (m, k, n) = (a[ra - 2], a[ra - 1], b[rb - 1]);
            if rb == 2 {
                // [..., m, k] @ [k, n]: one product over all rows of A.
                let rows = a.iter().product::<usize>() / k.max(1);
                return Ok(Some(kernel(rows, k, n, false, 1.0, false, BiasSrc::None, None, Activation::None)));
            }
            let Ok(batch) = broadcast_shapes(&[&a[..ra - 2], &b[..rb - 2]]) else { return Ok(None) };
            let (mut oa, mut ob) = (Vec::new(), Vec::new());
            for_each_offset(&a[..ra - 2], &batch, |_, o| oa.push(o));
            for_each_offset(&b[..rb - 2], &batch, |_, o| ob.push(o));
            Ok(Some(Box::new(BatchedKernel {
                m,
                k,
                n,
                offsets: oa.into_iter().zip(ob).collect(),
                a_len: a.iter().product(),
                b_len: b.iter().product(),
            })))
        }
        _ => Ok(None),
    }
}
