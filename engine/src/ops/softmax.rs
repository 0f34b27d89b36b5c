//! Softmax, LogSoftmax and Hardmax. Opset < 13 coerces the input to 2-D at `axis`
//! (the "legacy" form); opset >= 13 normalises along one axis.
//!
//! f32 Softmax/LogSoftmax run the vectorised row kernels of
//! `floe_kernels::softmax`; planned for fixed shapes they write straight into the
//! executor's buffers (rows at a stride go through a per-thread row buffer).

use super::{fixed_shape, input, norm_axis, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::shape::Fact;
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SoftmaxOp {
    pub kind: SoftmaxKind,
    pub axis: i64,
    /// Opset < 13: normalise over all dims from `axis` on.
    pub legacy: bool,
}

/// (outer, n, inner) for normalising over `n` elements at stride `inner`.
fn layout(shape: &[usize], axis: usize, legacy: bool) -> (usize, usize, usize) {
    let outer: usize = shape[..axis].iter().product();
    if legacy {
        (outer, shape[axis..].iter().product(), 1)
    } else {
        (outer, shape[axis], shape[axis + 1..].iter().product())
    }
}

/// f32 Softmax or LogSoftmax for one shape: `outer x n x inner` with the
/// normalised axis `n` at stride `inner`.
struct SoftmaxKernel {
    log: bool,
    outer: usize,
    n: usize,
    inner: usize,
}

thread_local! {
    /// One strided row gathered contiguously; only grows.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl SoftmaxKernel {
    fn normalise(&self, row: &mut [f32]) {
        if self.log {
            floe_kernels::softmax::log_softmax_f32(row)
        } else {
            floe_kernels::softmax::softmax_f32(row)
        }
    }
}

impl Kernel for SoftmaxKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "input")?.as_slice::<f32>()?;
        let y = outputs.first_mut().ok_or_else(|| crate::Error::Invalid("no output to write".into()))?;
        let y = y.as_mut_slice::<f32>()?;
        let (n, inner, total) = (self.n, self.inner, self.outer * self.n * self.inner);
        if x.len() != total || y.len() != total {
            bail!("planned for {total} elements, got input {} and output {}", x.len(), y.len());
        }
        if inner == 1 {
            for (src, dst) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                dst.copy_from_slice(src);
                self.normalise(dst);
            }
            return Ok(());
        }
        ROW.with(|buf| {
            let mut buf = buf.borrow_mut();
            let need = if inner >= COLUMNS_AT { 3 * inner } else { n };
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            for (src, dst) in x.chunks_exact(n * inner).zip(y.chunks_exact_mut(n * inner)) {
                if inner >= COLUMNS_AT {
                    self.columns(src, dst, &mut buf[..need]);
                    continue;
                }
                let row = &mut buf[..n];
                for i in 0..inner {
                    for (j, r) in row.iter_mut().enumerate() {
                        *r = src[j * inner + i];
                    }
                    self.normalise(row);
                    for (j, r) in row.iter().enumerate() {
                        dst[j * inner + i] = *r;
                    }
                }
            }
        });
        Ok(())
    }
}

/// From this many columns on, strided softmax runs along whole rows of the
/// `n x inner` block (vector exp over `inner` at a time) rather than gathering
/// each column.
const COLUMNS_AT: usize = 8;

impl SoftmaxKernel {
    /// Normalises every column of the `n x inner` block `src` into `dst`, a row at
    /// a time; `scratch` holds `3 * inner` values (column max, sum, exponentials).
    fn columns(&self, src: &[f32], dst: &mut [f32], scratch: &mut [f32]) {
        let inner = self.inner;
        let (m, rest) = scratch.split_at_mut(inner);
        let (sum, e) = rest.split_at_mut(inner);
        m.copy_from_slice(&src[..inner]);
        for row in src.chunks_exact(inner).skip(1) {
            for (m, &v) in m.iter_mut().zip(row) {
                *m = m.max(v);
            }
        }
        sum.fill(0.0);
        for (s_row, d_row) in src.chunks_exact(inner).zip(dst.chunks_exact_mut(inner)) {
            for ((d, &v), &m) in d_row.iter_mut().zip(s_row).zip(m.iter()) {
                *d = v - m;
            }
            let exps: &mut [f32] = if self.log {
                e.copy_from_slice(d_row);
                e
            } else {
                d_row
            };
            floe_kernels::vecmath::exp_in_place(exps);
            for (s, &v) in sum.iter_mut().zip(exps.iter()) {
                *s += v;
            }
        }
        for s in sum.iter_mut() {
            *s = if self.log { s.ln() } else { 1.0 / *s };
        }
        for d_row in dst.chunks_exact_mut(inner) {
            for (d, &s) in d_row.iter_mut().zip(sum.iter()) {
                *d = if self.log { *d - s } else { *d * s };
            }
        }
    }
}

impl OpImpl for SoftmaxOp {
    fn name(&self) -> &'static str {
        match self.kind {
            SoftmaxKind::Softmax => "Softmax",
            SoftmaxKind::LogSoftmax => "LogSoftmax",
            SoftmaxKind::Hardmax => "Hardmax",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        Ok(vec![inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown)])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        let (Some(x), [out]) = (inputs.first(), outputs) else { return Ok(None) };
        let Some(shape) = fixed_shape(x) else { return Ok(None) };
        let f32_io = x.fact.dtype == Some(DType::F32) && out.dtype == Some(DType::F32);
        if !f32_io || self.kind == SoftmaxKind::Hardmax || shape.is_empty() || shape.contains(&0) {
            return Ok(None);
        }
        let Ok(axis) = norm_axis(self.axis, shape.len()) else { return Ok(None) };
        let (outer, n, inner) = layout(&shape, axis, self.legacy);
        Ok(Some(Box::new(SoftmaxKernel { log: self.kind == SoftmaxKind::LogSoftmax, outer, n, inner })))
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        if x.rank() == 0 {
            bail!("{} needs rank >= 1", self.name());
        }
        let axis = norm_axis(self.axis, x.rank())?;
        let (outer, n, inner) = layout(x.shape(), axis, self.legacy);
        let mut out = x.clone();
        if x.dtype() == DType::F32 && inner == 1 && self.kind != SoftmaxKind::Hardmax {
            let o = out.as_mut_slice::<f32>()?;
            for row in o.chunks_mut(n.max(1)) {
                match self.kind {
                    SoftmaxKind::Softmax => floe_kernels::softmax::softmax_f32(row),
                    _ => floe_kernels::softmax::log_softmax_f32(row),
                }
            }
            return Ok(vec![out]);
        }
        dispatch_float!(x.dtype(), T => {
            let o = out.as_mut_slice::<T>()?;
            let mut buf = vec![0f64; n];
            for oi in 0..outer {
                for ii in 0..inner {
                    let at = |j: usize| (oi * n + j) * inner + ii;
                    for (j, b) in buf.iter_mut().enumerate() {
                        *b = o[at(j)].to_f64();
                    }
                    match self.kind {
                        SoftmaxKind::Hardmax => {
                            let mut best = 0;
                            for j in 1..n {
                                if buf[j] > buf[best] {
                                    best = j;
                                }
                            }
                            for j in 0..n {
                                o[at(j)] = T::from_f64((j == best) as u8 as f64);
                            }
                        }
                        kind => {
                            let m = buf.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let s: f64 = buf.iter().map(|v| (v - m).exp()).sum();
                            for j in 0..n {
                                let v = if kind == SoftmaxKind::Softmax { (buf[j] - m).exp() / s } else { buf[j] - m - s.ln() };
                                o[at(j)] = T::from_f64(v);
                            }
                        }
                    }
                }
            }
        }, _ => bail!("{} expects a float input, got {}", self.name(), x.dtype()));
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::tests::{assert_close, planned_vs_eval, Rng};

    #[test]
    fn softmax_kernels_match_eval_on_every_axis_and_both_opsets() {
        let mut rng = Rng(0x853c_49e6_748f_ea9b);
        for case in 0..48 {
            let rank = 1 + case % 4;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(if rank > 2 { 13 } else { 37 })).collect();
            let axis = rng.below(rank) as i64 - if case % 2 == 0 { rank as i64 } else { 0 };
            let kind = if case % 3 == 0 { SoftmaxKind::LogSoftmax } else { SoftmaxKind::Softmax };
            let op = SoftmaxOp { kind, axis, legacy: case % 5 == 0 };
            let xs = [rng.tensor(&shape), rng.tensor(&shape)];
            for (got, want) in planned_vs_eval(op.clone().into(), &xs, &[], 1) {
                assert_close(&got, &want, 1e-5, &format!("{op:?} on {shape:?}"));
            }
        }
    }
}
