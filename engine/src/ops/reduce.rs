//! Reductions: Reduce{Sum,Mean,Max,Min,Prod,L1,L2,LogSum,LogSumExp,SumSquare},
//! ArgMax/ArgMin, TopK, CumSum/CumProd. Reference: ONNX operator spec.
//! Floats accumulate in f64, integers in i128.

use super::{input, norm_axis, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    /// Axes from the attribute (older opsets) or input 1.
    Reduce {
        kind: ReduceKind,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    ArgMin {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// `k` from the attribute (opset 1) or input 1.
    TopK {
        axis: i64,
        largest: bool,
        sorted: bool,
        k: Option<i64>,
    },
    CumSum {
        exclusive: bool,
        reverse: bool,
    },
    CumProd {
        exclusive: bool,
        reverse: bool,
    },
}

impl ReduceKind {
    fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }

    fn float(self, vals: impl Iterator<Item = f64>) -> f64 {
        let mut n = 0usize;
        let r = match self {
            ReduceKind::Max => vals.fold(f64::NEG_INFINITY, |a, v| {
                n += 1;
                if v.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.max(v)
                }
            }),
            ReduceKind::Min => vals.fold(f64::INFINITY, |a, v| {
                n += 1;
                if v.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.min(v)
                }
            }),
            ReduceKind::Prod => vals.fold(1.0, |a, v| a * v),
            ReduceKind::LogSumExp => {
                let v: Vec<f64> = vals.collect();
                let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m.is_infinite() {
                    return v.iter().map(|x| x.exp()).sum::<f64>().ln();
                }
                m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
            }
            _ => vals
                .map(|v| {
                    n += 1;
                    match self {
                        ReduceKind::L1 => v.abs(),
                        ReduceKind::L2 | ReduceKind::SumSquare => v * v,
                        _ => v,
                    }
                })
                .sum(),
        };
        match self {
            ReduceKind::Mean => r / n as f64,
            ReduceKind::L2 => r.sqrt(),
            ReduceKind::LogSum => r.ln(),
            _ => r,
        }
    }

    fn int(self, vals: impl Iterator<Item = i128>, dt: DType) -> i128 {
        let (lo, hi) = int_range(dt);
        let mut n = 0i128;
        let r = match self {
            ReduceKind::Max => vals.fold(lo, |a, v| a.max(v)),
            ReduceKind::Min => vals.fold(hi, |a, v| a.min(v)),
            ReduceKind::Prod => vals.fold(1i128, |a, v| a.wrapping_mul(v)),
            _ => vals
                .map(|v| {
                    n += 1;
                    match self {
                        ReduceKind::L1 => v.abs(),
                        ReduceKind::L2 | ReduceKind::SumSquare => v.wrapping_mul(v),
                        _ => v,
                    }
                })
                .fold(0i128, |a, v| a.wrapping_add(v)),
        };
        match self {
            ReduceKind::Mean if n > 0 => r / n,
            ReduceKind::L2 => (r as f64).sqrt() as i128,
            ReduceKind::LogSum => (r as f64).ln() as i128,
            ReduceKind::LogSumExp => r,
            _ => r,
        }
    }
}

fn int_range(dt: DType) -> (i128, i128) {
    match dt {
        DType::I8 => (i8::MIN as i128, i8::MAX as i128),
        DType::U8 | DType::Bool => (0, u8::MAX as i128),
        DType::I16 => (i16::MIN as i128, i16::MAX as i128),
        DType::U16 => (0, u16::MAX as i128),
        DType::I32 => (i32::MIN as i128, i32::MAX as i128),
        DType::U32 => (0, u32::MAX as i128),
        DType::I64 => (i64::MIN as i128, i64::MAX as i128),
        _ => (0, u64::MAX as i128),
    }
}

/// Which axes to reduce, or `None` for "return the input unchanged".
fn resolve_axes(rank: usize, axes: Option<Vec<i64>>, noop: bool) -> Result<Option<Vec<usize>>> {
    match axes {
        Some(a) if !a.is_empty() => {
            let mut v: Vec<usize> = a.iter().map(|&x| norm_axis(x, rank)).collect::<Result<_>>()?;
            v.sort();
            v.dedup();
            Ok(Some(v))
        }
        _ if noop => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

/// For each output element, the flat input offsets it reduces over.
fn reduce_groups(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let r = shape.len();
    let st = super::strides(shape);
    let kept: Vec<usize> = (0..r).filter(|d| !axes.contains(d)).collect();
    let out_dims: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let red_dims: Vec<usize> = axes.iter().map(|&d| shape[d]).collect();
    let n_out: usize = out_dims.iter().product();
    let n_red: usize = red_dims.iter().product();
    let mut base = Vec::with_capacity(n_out);
    let os = super::strides(&out_dims);
    for i in 0..n_out {
        let mut rem = i;
        let mut off = 0;
        for (j, &d) in kept.iter().enumerate() {
            off += (rem / os[j]) * st[d];
            rem %= os[j];
        }
        base.push(off);
    }
    let rs = super::strides(&red_dims);
    let mut inner = Vec::with_capacity(n_red);
    for i in 0..n_red {
        let mut rem = i;
        let mut off = 0;
        for (j, &d) in axes.iter().enumerate() {
            off += (rem / rs[j]) * st[d];
            rem %= rs[j];
        }
        inner.push(off);
    }
    (base, inner, out_dims)
}

fn reduce(x: &Tensor, kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool, noop: bool) -> Result<Tensor> {
    let Some(axes) = resolve_axes(x.rank(), axes, noop)? else {
        return Ok(x.clone());
    };
    let (base, inner, out_dims) = reduce_groups(x.shape(), &axes);
    let out_shape: Vec<usize> = if keepdims {
        x.shape().iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect()
    } else {
        out_dims
    };
    let dt = x.dtype();
    if dt == DType::Bool {
        if !matches!(kind, ReduceKind::Max | ReduceKind::Min) {
            bail!("{} does not accept bool", kind.name());
        }
        // max = any, min = all, over 0/1 bytes
        let v = x.bytes();
        let mut out = Tensor::zeros(dt, &out_shape)?;
        let o = out.bytes_mut();
        for (k, &b) in base.iter().enumerate() {
            let mut it = inner.iter().map(|&i| v[b + i] != 0);
            o[k] = if kind == ReduceKind::Max { it.any(|x| x) } else { it.all(|x| x) } as u8;
        }
        return Ok(out);
    }
    let mut out = Tensor::zeros(dt, &out_shape)?;
    if dt.is_float() {
        let v = x.to_f64_vec();
        dispatch_numeric!(dt, T => {
            let o = out.as_mut_slice::<T>()?;
            for (k, &b) in base.iter().enumerate() {
                o[k] = T::from_f64(kind.float(inner.iter().map(|&i| v[b + i])));
            }
        }, bool => unreachable!());
    } else {
        dispatch_numeric!(dt, T => {
            let v: Vec<i128> = x.as_slice::<T>()?.iter().map(|t| t.to_i128()).collect();
            let o = out.as_mut_slice::<T>()?;
            for (k, &b) in base.iter().enumerate() {
                o[k] = T::from_i128(kind.int(inner.iter().map(|&i| v[b + i]), dt));
            }
        }, bool => unreachable!());
    }
    Ok(out)
}

fn arg_extreme(x: &Tensor, axis: i64, keepdims: bool, last: bool, max: bool) -> Result<Tensor> {
    let a = norm_axis(axis, x.rank())?;
    let (base, inner, out_dims) = reduce_groups(x.shape(), &[a]);
    let v = x.to_f64_vec();
    let mut res = Vec::with_capacity(base.len());
    for &b in &base {
        let mut best = 0usize;
        for (j, &i) in inner.iter().enumerate() {
            let (cur, bv) = (v[b + i], v[b + inner[best]]);
            let better = if max { cur > bv || (last && cur == bv) } else { cur < bv || (last && cur == bv) };
            if j > 0 && better {
                best = j;
            }
        }
        res.push(best as i64);
    }
    let shape: Vec<usize> = if keepdims {
        x.shape().iter().enumerate().map(|(d, &n)| if d == a { 1 } else { n }).collect()
    } else {
        out_dims
    };
    Tensor::from_vec(&shape, res)
}

fn topk(x: &Tensor, k: i64, axis: i64, largest: bool) -> Result<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let dim = x.shape()[a];
    if k < 0 || k as usize > dim {
        bail!("TopK k = {k} is out of range for an axis of size {dim}");
    }
    let k = k as usize;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[a] = k;
    let v = x.to_f64_vec();
    let mut idx_out = vec![0i64; outer * k * inner];
    let mut order: Vec<usize> = Vec::with_capacity(dim);
    for o in 0..outer {
        for i in 0..inner {
            order.clear();
            order.extend(0..dim);
            let at = |j: usize| v[(o * dim + j) * inner + i];
            // stable sort: ties keep the lower index first
            order.sort_by(|&p, &q| {
                let (a, b) = (at(p), at(q));
                let c = if largest { b.partial_cmp(&a) } else { a.partial_cmp(&b) };
                c.unwrap_or(std::cmp::Ordering::Equal)
            });
            for j in 0..k {
                idx_out[(o * k + j) * inner + i] = order[j] as i64;
            }
        }
    }
    let es = x.dtype().size();
    let mut vals = Tensor::zeros(x.dtype(), &shape)?;
    let src = x.bytes();
    let ob = vals.bytes_mut();
    for o in 0..outer {
        for j in 0..k {
            for i in 0..inner {
                let d = (o * k + j) * inner + i;
                let s = (o * dim + idx_out[d] as usize) * inner + i;
                ob[d * es..(d + 1) * es].copy_from_slice(&src[s * es..(s + 1) * es]);
            }
        }
    }
    Ok(vec![vals, Tensor::from_vec(&shape, idx_out)?])
}

fn cumulative(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool, prod: bool) -> Result<Tensor> {
    let ax = axis.to_i64_vec()?.first().copied().ok_or_else(|| Error::Invalid("empty axis".into()))?;
    let a = norm_axis(ax, x.rank())?;
    let dim = x.shape()[a];
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut out = x.clone();
    dispatch_numeric!(x.dtype(), T => {
        let src = x.as_slice::<T>()?.to_vec();
        let o = out.as_mut_slice::<T>()?;
        let float = x.dtype().is_float();
        for oi in 0..outer {
            for ii in 0..inner {
                let mut accf = if prod { 1.0 } else { 0.0 };
                let mut acci: i128 = if prod { 1 } else { 0 };
                for step in 0..dim {
                    let j = if reverse { dim - 1 - step } else { step };
                    let p = (oi * dim + j) * inner + ii;
                    let v = src[p];
                    if exclusive {
                        o[p] = if float { T::from_f64(accf) } else { T::from_i128(acci) };
                    }
                    if float {
                        accf = if prod { accf * v.to_f64() } else { accf + v.to_f64() };
                    } else {
                        acci = if prod { acci.wrapping_mul(v.to_i128()) } else { acci.wrapping_add(v.to_i128()) };
                    }
                    if !exclusive {
                        o[p] = if float { T::from_f64(accf) } else { T::from_i128(acci) };
                    }
                }
            }
        }
    }, bool => bail!("cumulative ops do not accept bool"));
    Ok(out)
}

impl OpImpl for ReduceOp {
    fn name(&self) -> &'static str {
        match self {
            ReduceOp::Reduce { kind, .. } => kind.name(),
            ReduceOp::ArgMax { .. } => "ArgMax",
            ReduceOp::ArgMin { .. } => "ArgMin",
            ReduceOp::TopK { .. } => "TopK",
            ReduceOp::CumSum { .. } => "CumSum",
            ReduceOp::CumProd { .. } => "CumProd",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        Ok(match self {
            ReduceOp::Reduce { axes, keepdims, noop_with_empty_axes, .. } => {
                let axes = match axes {
                    Some(a) => Some(a.clone()),
                    None => match inputs.get(1) {
                        Some(i) => match i.value {
                            Some(v) => Some(v.to_i64_vec()?),
                            None => return Ok(vec![Fact { dtype: x.dtype, shape: None }]),
                        },
                        None => None,
                    },
                };
                let shape = match &x.shape {
                    Some(s) => match resolve_axes(s.rank(), axes, *noop_with_empty_axes)? {
                        None => Some(s.clone()),
                        Some(ax) => Some(Shape(
                            s.0.iter()
                                .enumerate()
                                .filter_map(|(d, dim)| {
                                    if ax.contains(&d) {
                                        keepdims.then_some(Dim::Fixed(1))
                                    } else {
                                        Some(dim.clone())
                                    }
                                })
                                .collect(),
                        )),
                    },
                    None => None,
                };
                vec![Fact { dtype: x.dtype, shape }]
            }
            ReduceOp::ArgMax { axis, keepdims, .. } | ReduceOp::ArgMin { axis, keepdims, .. } => {
                let shape =
                    match &x.shape {
                        Some(s) => {
                            let a = norm_axis(*axis, s.rank())?;
                            Some(Shape(
                                s.0.iter()
                                    .enumerate()
                                    .filter_map(|(d, dim)| {
                                        if d == a {
                                            keepdims.then_some(Dim::Fixed(1))
                                        } else {
                                            Some(dim.clone())
                                        }
                                    })
                                    .collect(),
                            ))
                        }
                        None => None,
                    };
                vec![Fact { dtype: Some(DType::I64), shape }]
            }
            ReduceOp::TopK { .. } => {
                vec![Fact { dtype: x.dtype, shape: None }, Fact { dtype: Some(DType::I64), shape: None }]
                    [..n.clamp(1, 2)]
                    .to_vec()
            }
            ReduceOp::CumSum { .. } | ReduceOp::CumProd { .. } => vec![x],
        })
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        Ok(match self {
            ReduceOp::Reduce { kind, axes, keepdims, noop_with_empty_axes } => {
                let axes = match axes {
                    Some(a) => Some(a.clone()),
                    None => opt_input(inputs, 1).map(|t| t.to_i64_vec()).transpose()?,
                };
                vec![reduce(x, *kind, axes, *keepdims, *noop_with_empty_axes)?]
            }
            ReduceOp::ArgMax { axis, keepdims, select_last_index } => {
                vec![arg_extreme(x, *axis, *keepdims, *select_last_index, true)?]
            }
            ReduceOp::ArgMin { axis, keepdims, select_last_index } => {
                vec![arg_extreme(x, *axis, *keepdims, *select_last_index, false)?]
            }
            ReduceOp::TopK { axis, largest, k, .. } => {
                let k = match k {
                    Some(k) => *k,
                    None => input(inputs, 1, "K")?
                        .to_i64_vec()?
                        .first()
                        .copied()
                        .ok_or_else(|| Error::Invalid("empty K".into()))?,
                };
                topk(x, k, *axis, *largest)?
            }
            ReduceOp::CumSum { exclusive, reverse } => {
                vec![cumulative(x, input(inputs, 1, "axis")?, *exclusive, *reverse, false)?]
            }
            ReduceOp::CumProd { exclusive, reverse } => {
                vec![cumulative(x, input(inputs, 1, "axis")?, *exclusive, *reverse, true)?]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_mean_over_axis_keepdims() {
        let x = Tensor::from_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let r = reduce(&x, ReduceKind::Mean, Some(vec![1]), true, false).unwrap();
        assert_eq!(r.shape(), &[2, 1]);
        assert_eq!(r.as_slice::<f32>().unwrap(), &[2.0, 5.0]);
    }

    #[test]
    fn topk_breaks_ties_by_lower_index() {
        let x = Tensor::from_slice(&[4], &[1.0f32, 3.0, 3.0, 2.0]).unwrap();
        let r = topk(&x, 2, 0, true).unwrap();
        assert_eq!(r[1].as_slice::<i64>().unwrap(), &[1, 2]);
    }
}
