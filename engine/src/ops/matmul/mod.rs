//! MatMul (numpy semantics, batched with broadcasting), Gemm, MatMulInteger.
//! f32 products go through `floe_kernels::gemm::sgemm`; other dtypes use a plain
//! loop accumulating in f64 (floats) or i64 (integers).

mod kernel;

use super::broadcast::broadcast_shapes;
use super::fused::FusedActivation;
use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};
use floe_kernels::gemm::{sgemm, MatRef};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum MatMulOp {
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMulInteger,
    /// `act(x @ w + bias)` with `w` `[K, N]` and optional `bias` `[N]`: MatMul+Add
    /// fused by `passes::fuse_linear` (and a following activation by
    /// `passes::fuse_activation`), one GEMM pass with the bias and activation
    /// applied as each tile is stored.
    Linear {
        activation: FusedActivation,
    },
    /// Determinant of the last two (square) dims, by LU with partial pivoting.
    Det,
}

fn det(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 || x.shape()[r - 1] != x.shape()[r - 2] {
        bail!("Det needs [..., n, n], got {:?}", x.shape());
    }
    let n = x.shape()[r - 1];
    let v = x.to_f64_vec();
    let batch = x.numel() / (n * n).max(1);
    let mut out = Vec::with_capacity(batch);
    for b in 0..batch {
        let mut m = v[b * n * n..(b + 1) * n * n].to_vec();
        let mut d = 1.0;
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs())).unwrap_or(c);
            if m[p * n + c] == 0.0 {
                d = 0.0;
                break;
            }
            if p != c {
                for k in 0..n {
                    m.swap(p * n + k, c * n + k);
                }
                d = -d;
            }
            d *= m[c * n + c];
            for i in c + 1..n {
                let f = m[i * n + c] / m[c * n + c];
                for k in c..n {
                    m[i * n + k] -= f * m[c * n + k];
                }
            }
        }
        out.push(d);
    }
    let shape = &x.shape()[..r - 2];
    crate::dispatch_float!(x.dtype(), T => Tensor::from_vec(shape, out.iter().map(|&d| T::from_f64(d)).collect::<Vec<T>>()),
        _ => bail!("Det expects a float input, got {}", x.dtype()))
}

/// Batched matmul on f32/f64/f16/int tensors with numpy's rank rules.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        bail!("MatMul inputs have different dtypes: {} and {}", a.dtype(), b.dtype());
    }
    if a.rank() == 0 || b.rank() == 0 {
        bail!("MatMul inputs must have rank >= 1");
    }
    let a2 = if a.rank() == 1 { a.reshaped(&[1, a.shape()[0]])? } else { a.clone() };
    let b2 = if b.rank() == 1 { b.reshaped(&[b.shape()[0], 1])? } else { b.clone() };
    let (ra, rb) = (a2.rank(), b2.rank());
    let (m, k) = (a2.shape()[ra - 2], a2.shape()[ra - 1]);
    let (k2, n) = (b2.shape()[rb - 2], b2.shape()[rb - 1]);
    if k != k2 {
        return Err(Error::Shape(format!("MatMul inner dims differ: {:?} x {:?}", a.shape(), b.shape())));
    }
    let batch = broadcast_shapes(&[&a2.shape()[..ra - 2], &b2.shape()[..rb - 2]])?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let mut out = Tensor::zeros(a.dtype(), &out_shape)?;
    let nb: usize = batch.iter().product();
    let mut oa = Vec::with_capacity(nb);
    let mut ob = Vec::with_capacity(nb);
    super::broadcast::for_each_offset(&a2.shape()[..ra - 2], &batch, |_, o| oa.push(o));
    super::broadcast::for_each_offset(&b2.shape()[..rb - 2], &batch, |_, o| ob.push(o));
    if a.dtype() == DType::F32 {
        let (av, bv) = (a2.as_slice::<f32>()?, b2.as_slice::<f32>()?);
        let o = out.as_mut_slice::<f32>()?;
        for i in 0..nb {
            let am = MatRef::new(&av[oa[i] * m * k..(oa[i] + 1) * m * k], m, k);
            let bm = MatRef::new(&bv[ob[i] * k * n..(ob[i] + 1) * k * n], k, n);
            sgemm(1.0, am, bm, 0.0, &mut o[i * m * n..(i + 1) * m * n]);
        }
    } else {
        dispatch_numeric!(a.dtype(), T => {
            let (av, bv) = (a2.as_slice::<T>()?, b2.as_slice::<T>()?);
            let o = out.as_mut_slice::<T>()?;
            let float = a.dtype().is_float();
            for bi in 0..nb {
                let ab = &av[oa[bi] * m * k..];
                let bb = &bv[ob[bi] * k * n..];
                for i in 0..m {
                    for j in 0..n {
                        let v = if float {
                            T::from_f64((0..k).map(|p| ab[i * k + p].to_f64() * bb[p * n + j].to_f64()).sum())
                        } else {
                            T::from_i128((0..k).fold(0i128, |acc, p| acc.wrapping_add(ab[i * k + p].to_i128().wrapping_mul(bb[p * n + j].to_i128()))))
                        };
                        o[bi * m * n + i * n + j] = v;
                    }
                }
            }
        }, bool => bail!("MatMul does not accept bool"));
    }
    let mut final_shape = batch;
    if a.rank() > 1 {
        final_shape.push(m);
    }
    if b.rank() > 1 {
        final_shape.push(n);
    }
    out.reshaped(&final_shape)
}

fn gemm(a: &Tensor, b: &Tensor, c: Option<&Tensor>, alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<Tensor> {
    if a.rank() != 2 || b.rank() != 2 {
        bail!("Gemm expects 2-D A and B, got {:?} and {:?}", a.shape(), b.shape());
    }
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (k2, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != k2 {
        return Err(Error::Shape(format!(
            "Gemm inner dims differ: A {:?} (transA={ta}) B {:?} (transB={tb})",
            a.shape(),
            b.shape()
        )));
    }
    if a.dtype() != DType::F32 {
        // Other dtypes: transpose explicitly, reuse matmul, then scale and add in f64.
        let at = if ta { super::layout::transpose(a, &[1, 0])? } else { a.clone() };
        let bt = if tb { super::layout::transpose(b, &[1, 0])? } else { b.clone() };
        let p = matmul(&at, &bt)?;
        let mut vals: Vec<f64> = p.to_f64_vec().iter().map(|v| v * alpha as f64).collect();
        if let Some(c) = c {
            let cb = broadcast_c(c, m, n)?;
            for (v, cv) in vals.iter_mut().zip(cb) {
                *v += beta as f64 * cv;
            }
        }
        let mut out = Tensor::zeros(a.dtype(), &[m, n])?;
        dispatch_numeric!(a.dtype(), T => {
            for (o, v) in out.as_mut_slice::<T>()?.iter_mut().zip(vals) { *o = T::from_f64(v); }
        }, bool => bail!("Gemm does not accept bool"));
        return Ok(out);
    }
    let mut out = Tensor::zeros(DType::F32, &[m, n])?;
    let o = out.as_mut_slice::<f32>()?;
    let mut bet = 0.0;
    if let Some(c) = c {
        for (d, v) in o.iter_mut().zip(broadcast_c(c, m, n)?) {
            *d = v as f32;
        }
        bet = beta;
    }
    let av = a.as_slice::<f32>()?;
    let bv = b.as_slice::<f32>()?;
    let am = if ta { MatRef::new(av, k, m).t() } else { MatRef::new(av, m, k) };
    let bm = if tb { MatRef::new(bv, n, k).t() } else { MatRef::new(bv, k, n) };
    sgemm(alpha, am, bm, bet, o);
    Ok(out)
}

/// `x @ w + bias` for f32 `x` `[..., K]`, `w` `[K, N]`, `bias` `[N]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 || w.rank() != 2 || x.rank() == 0 {
        // Other dtypes and shapes: the unfused definition.
        let p = matmul(x, w)?;
        return match bias {
            Some(b) => super::elementwise::BinaryOp::Add.eval(&p, b),
            None => Ok(p),
        };
    }
    let (k, n) = (w.shape()[0], w.shape()[1]);
    if x.shape()[x.rank() - 1] != k {
        return Err(Error::Shape(format!("Linear: input {:?} does not match weight {:?}", x.shape(), w.shape())));
    }
    let m = x.numel() / k.max(1);
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    let mut out = Tensor::zeros(DType::F32, &shape)?;
    let o = out.as_mut_slice::<f32>()?;
    let beta = match bias {
        Some(b) => {
            let bv = b.as_slice::<f32>()?;
            if bv.len() != n {
                return Err(Error::Shape(format!("Linear: bias {:?} does not match {n} outputs", b.shape())));
            }
            for row in o.chunks_mut(n.max(1)) {
                row.copy_from_slice(bv);
            }
            1.0
        }
        None => 0.0,
    };
    sgemm(1.0, MatRef::new(x.as_slice::<f32>()?, m, k), MatRef::new(w.as_slice::<f32>()?, k, n), beta, o);
    Ok(out)
}

fn broadcast_c(c: &Tensor, m: usize, n: usize) -> Result<Vec<f64>> {
    let shape = broadcast_shapes(&[c.shape(), &[m, n]])?;
    if shape != [m, n] {
        bail!("Gemm C of shape {:?} does not broadcast to [{m}, {n}]", c.shape());
    }
    let v = c.to_f64_vec();
    let mut out = Vec::with_capacity(m * n);
    super::broadcast::for_each_offset(c.shape(), &[m, n], |_, o| out.push(v[o]));
    Ok(out)
}

fn matmul_integer(a: &Tensor, b: &Tensor, az: Option<&Tensor>, bz: Option<&Tensor>) -> Result<Tensor> {
    let zp = |z: Option<&Tensor>| -> Result<Vec<i64>> { z.map_or(Ok(vec![0]), |t| t.to_i64_vec()) };
    let (za, zb) = (zp(az)?, zp(bz)?);
    let sub = |t: &Tensor, z: &[i64], per_row_axis: Option<usize>| -> Result<Tensor> {
        let v = t.to_i64_vec()?;
        let shape = t.shape();
        let r = shape.len();
        let out: Vec<i32> = v
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let zi = if z.len() == 1 {
                    z[0]
                } else {
                    let idx = match per_row_axis {
                        Some(0) => (i / shape[r - 1]) % shape[r - 2],
                        _ => i % shape[r - 1],
                    };
                    z.get(idx).copied().unwrap_or(0)
                };
                (x - zi) as i32
            })
            .collect();
        Tensor::from_vec(shape, out)
    };
    let a32 = sub(a, &za, Some(0))?;
    let b32 = sub(b, &zb, Some(1))?;
    matmul(&a32, &b32)
}

fn matmul_shape(a: &Shape, b: &Shape) -> Option<Shape> {
    if a.rank() < 2 || b.rank() < 2 {
        return None;
    }
    let ba = Shape(a.0[..a.rank() - 2].to_vec());
    let bb = Shape(b.0[..b.rank() - 2].to_vec());
    let mut batch = super::broadcast::broadcast_facts(&[&ba, &bb]).ok()?;
    batch.0.push(a.0[a.rank() - 2].clone());
    batch.0.push(b.0[b.rank() - 1].clone());
    Some(batch)
}

impl OpImpl for MatMulOp {
    fn name(&self) -> &'static str {
        match self {
            MatMulOp::MatMul => "MatMul",
            MatMulOp::Gemm { .. } => "Gemm",
            MatMulOp::MatMulInteger => "MatMulInteger",
            MatMulOp::Linear { .. } => "Linear",
            MatMulOp::Det => "Det",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let a = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let b = inputs.get(1).map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        Ok(vec![match self {
            MatMulOp::MatMul => Fact {
                dtype: a.dtype,
                shape: match (&a.shape, &b.shape) {
                    (Some(x), Some(y)) => matmul_shape(x, y),
                    _ => None,
                },
            },
            MatMulOp::Gemm { trans_a, trans_b, .. } => Fact {
                dtype: a.dtype,
                shape: match (&a.shape, &b.shape) {
                    (Some(x), Some(y)) if x.rank() == 2 && y.rank() == 2 => Some(Shape(vec![
                        x.0[if *trans_a { 1 } else { 0 }].clone(),
                        y.0[if *trans_b { 0 } else { 1 }].clone(),
                    ])),
                    _ => None,
                },
            },
            MatMulOp::Linear { .. } => Fact {
                dtype: a.dtype,
                shape: match (&a.shape, &b.shape) {
                    (Some(x), Some(w)) if x.rank() >= 1 && w.rank() == 2 => {
                        let mut d = x.0[..x.rank() - 1].to_vec();
                        d.push(w.0[1].clone());
                        Some(Shape(d))
                    }
                    _ => None,
                },
            },
            MatMulOp::Det => Fact {
                dtype: a.dtype,
                shape: a.shape.as_ref().filter(|s| s.rank() >= 2).map(|s| Shape(s.0[..s.rank() - 2].to_vec())),
            },
            MatMulOp::MatMulInteger => Fact {
                dtype: Some(DType::I32),
                shape: match (&a.shape, &b.shape) {
                    (Some(x), Some(y)) => matmul_shape(x, y),
                    _ => None,
                },
            },
        }])
        .map(|mut v: Vec<Fact>| {
            if let Some(s) = v[0].shape.as_mut() {
                if s.0.iter().any(|d| matches!(d, Dim::Unknown)) && s.rank() == 0 {
                    v[0].shape = None;
                }
            }
            v
        })
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let a = input(inputs, 0, "A")?;
        if let MatMulOp::Det = self {
            return Ok(vec![det(a)?]);
        }
        let b = input(inputs, 1, "B")?;
        Ok(vec![match self {
            MatMulOp::MatMul => matmul(a, b)?,
            MatMulOp::Gemm { alpha, beta, trans_a, trans_b } => {
                gemm(a, b, opt_input(inputs, 2), *alpha, *beta, *trans_a, *trans_b)?
            }
            MatMulOp::Det => unreachable!("handled above"),
            MatMulOp::Linear { activation } => activation.apply(linear(a, b, opt_input(inputs, 2))?)?,
            MatMulOp::MatMulInteger => matmul_integer(a, b, opt_input(inputs, 2), opt_input(inputs, 3))?,
        }])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn super::Kernel>>> {
        kernel::prepare(self, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_broadcasts_batch_and_promotes_vectors() {
        let a = Tensor::from_slice(&[2, 1, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_slice(&[2], &[1.0f32, 1.0]).unwrap();
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 1]);
        assert_eq!(c.as_slice::<f32>().unwrap(), &[3.0, 7.0]);
        let i = Tensor::from_slice(&[1, 2], &[2i64, 3]).unwrap();
        let j = Tensor::from_slice(&[2, 1], &[4i64, 5]).unwrap();
        assert_eq!(matmul(&i, &j).unwrap().as_slice::<i64>().unwrap(), &[23]);
    }
}
