//! Pooling: MaxPool (with optional Indices), AveragePool, LpPool (N-D; pads,
//! strides, dilations, ceil_mode, auto_pad), GlobalAveragePool, GlobalMaxPool.
//! Reference: ONNX spec MaxPool-22, AveragePool-22, LpPool-22, Global*Pool-22.

use super::conv::{conv_geometry, ConvAttrs};
use super::{input, strides, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
    Lp { p: f32 },
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum PoolOp {
    /// `attrs.kernel_shape` is the window; `storage_order` 1 = column-major indices.
    Pool {
        kind: PoolKind,
        attrs: ConvAttrs,
        ceil_mode: bool,
        storage_order: usize,
    },
    GlobalAverage,
    GlobalMax,
}

/// Pools `x` `[N, C, spatial...]`; returns values and (for max) flat indices.
fn pool(x: &Tensor, kind: PoolKind, a: &ConvAttrs, ceil_mode: bool, storage_order: usize) -> Result<(Tensor, Tensor)> {
    let xs = x.shape();
    if xs.len() < 3 {
        bail!("pooling needs [N, C, spatial...], got {xs:?}");
    }
    let sp = &xs[2..];
    let nd = sp.len();
    let (out, begin, dil) = conv_geometry(sp, &a.kernel_shape, a, ceil_mode)?;
    let stride = if a.strides.is_empty() { vec![1; nd] } else { a.strides.clone() };
    let pad_end: Vec<usize> = if a.pads.len() == 2 * nd { a.pads[nd..].to_vec() } else { vec![0; nd] };
    let k = &a.kernel_shape;
    let (nk, no, ns): (usize, usize, usize) = (k.iter().product(), out.iter().product(), sp.iter().product());
    let (kst, ost, sst) = (strides(k), strides(&out), strides(sp));
    let planes = xs[0] * xs[1];
    let v = x.to_f64_vec();
    let mut vals = vec![0f64; planes * no];
    let mut idx = vec![0i64; planes * no];
    for pl in 0..planes {
        let src = &v[pl * ns..(pl + 1) * ns];
        for o in 0..no {
            let (mut best, mut best_i, mut sum, mut count, mut padded) =
                (f64::NEG_INFINITY, usize::MAX, 0f64, 0usize, 0usize);
            for kk in 0..nk {
                let mut off = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for d in 0..nd {
                    let p = ((o / ost[d]) % out[d] * stride[d] + (kk / kst[d]) % k[d] * dil[d]) as isize
                        - begin[d] as isize;
                    if p < 0 || p as usize >= sp[d] {
                        inside = false;
                        if p >= (sp[d] + pad_end[d]) as isize {
                            in_padded = false;
                        }
                    } else {
                        off += p as usize * sst[d];
                    }
                }
                if in_padded {
                    padded += 1;
                }
                if !inside {
                    continue;
                }
                let val = src[off];
                count += 1;
                match kind {
                    PoolKind::Max => {
                        if val > best || best_i == usize::MAX {
                            best = val;
                            best_i = off;
                        }
                    }
                    PoolKind::Average { .. } => sum += val,
                    PoolKind::Lp { p } => sum += val.abs().powf(p as f64),
                }
            }
            if best_i == usize::MAX {
                best_i = 0;
            }
            vals[pl * no + o] = match kind {
                PoolKind::Max => best,
                PoolKind::Average { count_include_pad } => {
                    sum / (if count_include_pad { padded } else { count }).max(1) as f64
                }
                PoolKind::Lp { p } => sum.powf(1.0 / p as f64),
            };
            // Indices are flat over the whole input tensor (NCHW order, or CHW column-major).
            let flat = if storage_order == 1 && nd == 2 {
                let (h, w) = ((best_i / sp[1]), best_i % sp[1]);
                w * sp[0] + h
            } else {
                best_i
            };
            idx[pl * no + o] = (pl * ns + flat) as i64;
        }
    }
    let mut shape = xs[..2].to_vec();
    shape.extend(&out);
    let values = dispatch_numeric!(x.dtype(), T => Tensor::from_vec(&shape, vals.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>())?,
        bool => bail!("pooling does not accept bool"));
    Ok((values, Tensor::from_vec(&shape, idx)?))
}

fn global(x: &Tensor, max: bool) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 2 {
        bail!("global pooling needs [N, C, ...], got {xs:?}");
    }
    let ns: usize = xs[2..].iter().product();
    let v = x.to_f64_vec();
    let r: Vec<f64> = v
        .chunks(ns.max(1))
        .map(|c| {
            if max {
                c.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            } else {
                c.iter().sum::<f64>() / ns.max(1) as f64
            }
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    dispatch_numeric!(x.dtype(), T => Tensor::from_vec(&shape, r.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>()),
        bool => bail!("pooling does not accept bool"))
}

impl OpImpl for PoolOp {
    fn name(&self) -> &'static str {
        match self {
            PoolOp::Pool { kind: PoolKind::Max, .. } => "MaxPool",
            PoolOp::Pool { kind: PoolKind::Average { .. }, .. } => "AveragePool",
            PoolOp::Pool { kind: PoolKind::Lp { .. }, .. } => "LpPool",
            PoolOp::GlobalAverage => "GlobalAveragePool",
            PoolOp::GlobalMax => "GlobalMaxPool",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let shape = match (self, x.shape.as_ref()) {
            (PoolOp::GlobalAverage | PoolOp::GlobalMax, Some(s)) if s.rank() >= 2 => {
                let mut d = s.0[..2].to_vec();
                d.extend(std::iter::repeat_n(Dim::Fixed(1), s.rank() - 2));
                Some(Shape(d))
            }
            (PoolOp::Pool { attrs, ceil_mode, .. }, Some(s)) if s.rank() >= 3 => {
                match s.0[2..].iter().map(Dim::fixed).collect::<Option<Vec<_>>>() {
                    Some(sp) => {
                        let (out, _, _) = conv_geometry(&sp, &attrs.kernel_shape, attrs, *ceil_mode)?;
                        let mut d = s.0[..2].to_vec();
                        d.extend(out.into_iter().map(Dim::Fixed));
                        Some(Shape(d))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let mut v = vec![Fact { dtype: x.dtype, shape: shape.clone() }];
        if n > 1 {
            v.push(Fact { dtype: Some(DType::I64), shape });
        }
        Ok(v)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        Ok(match self {
            PoolOp::Pool { kind, attrs, ceil_mode, storage_order } => {
                let (v, i) = pool(x, *kind, attrs, *ceil_mode, *storage_order)?;
                if ctx.n_outputs > 1 {
                    vec![v, i]
                } else {
                    vec![v]
                }
            }
            PoolOp::GlobalAverage => vec![global(x, false)?],
            PoolOp::GlobalMax => vec![global(x, true)?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::AutoPad;

    #[test]
    fn max_and_average_pool_1d() {
        let x = Tensor::from_slice(&[1, 1, 5], &[1.0f32, 5.0, 2.0, 4.0, 3.0]).unwrap();
        let a = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![2],
            pads: vec![],
            strides: vec![2],
        };
        let (m, i) = pool(&x, PoolKind::Max, &a, false, 0).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[5.0, 4.0]);
        assert_eq!(i.as_slice::<i64>().unwrap(), &[1, 3]);
        let (m, _) = pool(&x, PoolKind::Max, &a, true, 0).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[5.0, 4.0, 3.0]);
        let (avg, _) = pool(&x, PoolKind::Average { count_include_pad: false }, &a, false, 0).unwrap();
        assert_eq!(avg.as_slice::<f32>().unwrap(), &[3.0, 3.0]);
    }
}
