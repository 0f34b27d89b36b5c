//! Indexing ops: Gather, GatherElements, GatherND, ScatterND, ScatterElements.
//! Reference: ONNX operator spec. Negative indices count from the end; an index
//! out of range is an error naming the index, never a panic.

use super::{input, norm_axis, strides, EvalCtx, InferInput, OpImpl};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum GatherOp {
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    GatherND {
        batch_dims: usize,
    },
    ScatterND {
        reduction: Reduction,
    },
    ScatterElements {
        axis: i64,
        reduction: Reduction,
    },
    /// KV-cache update (opset 24): writes `update` into `past_cache` along `axis`
    /// at per-batch `write_indices`, wrapping around when `circular`.
    TensorScatter {
        axis: i64,
        circular: bool,
    },
}

fn fix_index(i: i64, dim: usize) -> Result<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if j < 0 || j >= dim as i64 {
        bail!("index {i} is out of range for an axis of size {dim}");
    }
    Ok(j as usize)
}

fn copy_elem(dst: &mut [u8], di: usize, src: &[u8], si: usize, es: usize) {
    dst[di * es..(di + 1) * es].copy_from_slice(&src[si * es..(si + 1) * es]);
}

fn gather(x: &Tensor, idx: &Tensor, axis: i64) -> Result<Tensor> {
    let a = norm_axis(axis, x.rank())?;
    let ind = idx.to_i64_vec()?;
    let dim = x.shape()[a];
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut out_shape = x.shape()[..a].to_vec();
    out_shape.extend_from_slice(idx.shape());
    out_shape.extend_from_slice(&x.shape()[a + 1..]);
    let mut out = Tensor::zeros(x.dtype(), &out_shape)?;
    let es = x.dtype().size() * inner;
    let src = x.bytes();
    let o = out.bytes_mut();
    let fixed: Vec<usize> = ind.iter().map(|&i| fix_index(i, dim)).collect::<Result<_>>()?;
    for oi in 0..outer {
        for (k, &j) in fixed.iter().enumerate() {
            copy_elem(o, oi * fixed.len() + k, src, oi * dim + j, es);
        }
    }
    Ok(out)
}

fn gather_elements(x: &Tensor, idx: &Tensor, axis: i64) -> Result<Tensor> {
    let r = x.rank();
    let a = norm_axis(axis, r)?;
    if idx.rank() != r {
        bail!("GatherElements indices rank {} differs from data rank {r}", idx.rank());
    }
    let ind = idx.to_i64_vec()?;
    let xs = strides(x.shape());
    let is = strides(idx.shape());
    let mut out = Tensor::zeros(x.dtype(), idx.shape())?;
    let es = x.dtype().size();
    let src = x.bytes();
    let o = out.bytes_mut();
    for (i, &v) in ind.iter().enumerate() {
        let mut rem = i;
        let mut off = 0;
        for d in 0..r {
            let k = rem / is[d];
            rem %= is[d];
            let k = if d == a { fix_index(v, x.shape()[a])? } else { k };
            if k >= x.shape()[d] {
                bail!("GatherElements index out of range on axis {d}");
            }
            off += k * xs[d];
        }
        copy_elem(o, i, src, off, es);
    }
    Ok(out)
}

fn gather_nd(x: &Tensor, idx: &Tensor, b: usize) -> Result<Tensor> {
    let ind = idx.to_i64_vec()?;
    let q = idx.rank();
    if q == 0 {
        bail!("GatherND indices must have rank >= 1");
    }
    let k = idx.shape()[q - 1];
    if b + k > x.rank() {
        bail!("GatherND index depth {k} plus batch dims {b} exceeds data rank {}", x.rank());
    }
    let batch: usize = x.shape()[..b].iter().product();
    let slice_shape = &x.shape()[b + k..];
    let slice_len: usize = slice_shape.iter().product();
    let mut out_shape = idx.shape()[..q - 1].to_vec();
    out_shape.extend_from_slice(slice_shape);
    let n_per_batch: usize = idx.shape()[b..q - 1].iter().product();
    let xs = strides(x.shape());
    let mut out = Tensor::zeros(x.dtype(), &out_shape)?;
    let es = x.dtype().size() * slice_len.max(1);
    let src = x.bytes();
    let o = out.bytes_mut();
    let bstride: usize = x.shape()[b..].iter().product();
    for bi in 0..batch {
        for j in 0..n_per_batch {
            let t = &ind[(bi * n_per_batch + j) * k..(bi * n_per_batch + j + 1) * k];
            let mut off = bi * bstride;
            for (d, &v) in t.iter().enumerate() {
                off += fix_index(v, x.shape()[b + d])? * xs[b + d];
            }
            if slice_len > 0 {
                copy_elem(o, bi * n_per_batch + j, src, off / slice_len.max(1), es);
            }
        }
    }
    Ok(out)
}

fn reduce_into<T: Element + std::ops::Add<Output = T> + std::ops::Mul<Output = T>>(dst: &mut T, v: T, r: Reduction) {
    *dst = match r {
        Reduction::None => v,
        Reduction::Add => *dst + v,
        Reduction::Mul => *dst * v,
        Reduction::Max => {
            if v > *dst {
                v
            } else {
                *dst
            }
        }
        Reduction::Min => {
            if v < *dst {
                v
            } else {
                *dst
            }
        }
    };
}

/// Writes `updates[i]` into `out` at flat offset `offs[i]` with a reduction.
fn scatter_flat(data: &Tensor, updates: &Tensor, offs: &[usize], per: usize, r: Reduction) -> Result<Tensor> {
    if updates.dtype() != data.dtype() {
        bail!("updates dtype {} differs from data dtype {}", updates.dtype(), data.dtype());
    }
    let mut out = data.clone();
    if r == Reduction::None || data.dtype() == crate::DType::Bool {
        let es = data.dtype().size() * per;
        let u = updates.bytes();
        let o = out.bytes_mut();
        for (i, &off) in offs.iter().enumerate() {
            o[off * es..(off + 1) * es].copy_from_slice(&u[i * es..(i + 1) * es]);
        }
        return Ok(out);
    }
    dispatch_numeric!(data.dtype(), T => {
        let u = updates.as_slice::<T>()?.to_vec();
        let o = out.as_mut_slice::<T>()?;
        for (i, &off) in offs.iter().enumerate() {
            for e in 0..per {
                reduce_into(&mut o[off * per + e], u[i * per + e], r);
            }
        }
    }, bool => unreachable!());
    Ok(out)
}

fn scatter_nd(data: &Tensor, idx: &Tensor, updates: &Tensor, r: Reduction) -> Result<Tensor> {
    let ind = idx.to_i64_vec()?;
    let q = idx.rank();
    if q == 0 {
        bail!("ScatterND indices must have rank >= 1");
    }
    let k = idx.shape()[q - 1];
    if k > data.rank() {
        bail!("ScatterND index depth {k} exceeds data rank {}", data.rank());
    }
    let per: usize = data.shape()[k..].iter().product();
    let n: usize = idx.shape()[..q - 1].iter().product();
    if updates.numel() != n * per {
        bail!("ScatterND updates have {} elements, expected {}", updates.numel(), n * per);
    }
    let ds = strides(&data.shape()[..k]);
    let mut offs = Vec::with_capacity(n);
    for j in 0..n {
        let mut off = 0;
        for d in 0..k {
            off += fix_index(ind[j * k + d], data.shape()[d])? * ds[d];
        }
        offs.push(off);
    }
    scatter_flat(data, updates, &offs, per, r)
}

fn scatter_elements(data: &Tensor, idx: &Tensor, updates: &Tensor, axis: i64, r: Reduction) -> Result<Tensor> {
    let rank = data.rank();
    let a = norm_axis(axis, rank)?;
    if idx.shape() != updates.shape() || idx.rank() != rank {
        bail!(
            "ScatterElements indices {:?} and updates {:?} must match and have the data's rank",
            idx.shape(),
            updates.shape()
        );
    }
    let ind = idx.to_i64_vec()?;
    let ds = strides(data.shape());
    let is = strides(idx.shape());
    let mut offs = Vec::with_capacity(ind.len());
    for (i, &v) in ind.iter().enumerate() {
        let mut rem = i;
        let mut off = 0;
        for d in 0..rank {
            let k = rem / is[d];
            rem %= is[d];
            let k = if d == a { fix_index(v, data.shape()[a])? } else { k };
            if k >= data.shape()[d] {
                bail!("ScatterElements index out of range on axis {d}");
            }
            off += k * ds[d];
        }
        offs.push(off);
    }
    scatter_flat(data, updates, &offs, 1, r)
}

fn tensor_scatter(cache: &Tensor, update: &Tensor, write: Option<&[i64]>, axis: i64, circular: bool) -> Result<Tensor> {
    let r = cache.rank();
    let a = norm_axis(axis, r)?;
    if update.rank() != r || update.dtype() != cache.dtype() || a == 0 {
        bail!(
            "TensorScatter: update {:?} {} does not fit cache {:?} {} on axis {a}",
            update.shape(),
            update.dtype(),
            cache.shape(),
            cache.dtype()
        );
    }
    for d in 0..r {
        let ok = if d == a { update.shape()[d] <= cache.shape()[d] } else { update.shape()[d] == cache.shape()[d] };
        if !ok {
            return Err(Error::Shape(format!(
                "TensorScatter: update {:?} vs cache {:?} at dim {d}",
                update.shape(),
                cache.shape()
            )));
        }
    }
    let batch = cache.shape()[0];
    let zeros = vec![0i64; batch];
    let write = write.unwrap_or(&zeros);
    if write.len() != batch {
        bail!("TensorScatter: {} write_indices for batch {batch}", write.len());
    }
    let (max_len, seq) = (cache.shape()[a], update.shape()[a]);
    let outer: usize = cache.shape()[..a].iter().product();
    let per_batch = outer / batch.max(1);
    let inner: usize = cache.shape()[a + 1..].iter().product::<usize>() * cache.dtype().size();
    let mut out = cache.clone();
    let (u, o) = (update.bytes(), out.bytes_mut());
    for p in 0..outer {
        let w = write[p / per_batch.max(1)];
        for t in 0..seq {
            let mut pos = w + t as i64;
            if circular {
                pos = pos.rem_euclid(max_len as i64);
            }
            if pos < 0 || pos as usize >= max_len {
                bail!("TensorScatter: write position {pos} is outside a cache of length {max_len}");
            }
            let dst = (p * max_len + pos as usize) * inner;
            let src = (p * seq + t) * inner;
            o[dst..dst + inner].copy_from_slice(&u[src..src + inner]);
        }
    }
    Ok(out)
}

impl OpImpl for GatherOp {
    fn name(&self) -> &'static str {
        match self {
            GatherOp::Gather { .. } => "Gather",
            GatherOp::GatherElements { .. } => "GatherElements",
            GatherOp::GatherND { .. } => "GatherND",
            GatherOp::ScatterND { .. } => "ScatterND",
            GatherOp::ScatterElements { .. } => "ScatterElements",
            GatherOp::TensorScatter { .. } => "TensorScatter",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let idx = inputs.get(1).map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let shape = match self {
            GatherOp::Gather { axis } => match (&x.shape, &idx.shape) {
                (Some(xs), Some(is)) => {
                    let a = norm_axis(*axis, xs.rank())?;
                    let mut d: Vec<Dim> = xs.0[..a].to_vec();
                    d.extend(is.0.iter().cloned());
                    d.extend(xs.0[a + 1..].iter().cloned());
                    Some(Shape(d))
                }
                _ => None,
            },
            GatherOp::GatherElements { .. } => idx.shape.clone(),
            GatherOp::GatherND { .. } => None,
            GatherOp::ScatterND { .. } | GatherOp::ScatterElements { .. } | GatherOp::TensorScatter { .. } => {
                x.shape.clone()
            }
        };
        Ok(vec![Fact { dtype: x.dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        if let GatherOp::TensorScatter { axis, circular } = self {
            let idx = super::opt_input(inputs, 2).map(|t| t.to_i64_vec()).transpose()?;
            return Ok(vec![tensor_scatter(x, input(inputs, 1, "update")?, idx.as_deref(), *axis, *circular)?]);
        }
        let idx = input(inputs, 1, "indices")?;
        if idx.dtype().is_float() {
            return Err(Error::DType { expected: "int32 or int64 indices".into(), actual: idx.dtype() });
        }
        let out = match self {
            GatherOp::Gather { axis } => gather(x, idx, *axis)?,
            GatherOp::GatherElements { axis } => gather_elements(x, idx, *axis)?,
            GatherOp::GatherND { batch_dims } => gather_nd(x, idx, *batch_dims)?,
            GatherOp::ScatterND { reduction } => scatter_nd(x, idx, input(inputs, 2, "updates")?, *reduction)?,
            GatherOp::TensorScatter { .. } => unreachable!("handled above"),
            GatherOp::ScatterElements { axis, reduction } => {
                scatter_elements(x, idx, input(inputs, 2, "updates")?, *axis, *reduction)?
            }
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_out_of_range_is_an_error() {
        let x = Tensor::from_slice(&[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let i = Tensor::from_slice(&[1], &[3i64]).unwrap();
        assert!(gather(&x, &i, 0).is_err());
        let i = Tensor::from_slice(&[2], &[-1i64, 0]).unwrap();
        assert_eq!(gather(&x, &i, 0).unwrap().as_slice::<f32>().unwrap(), &[3.0, 1.0]);
    }
}
