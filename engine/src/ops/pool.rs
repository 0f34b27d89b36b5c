//! Pooling: MaxPool (with optional Indices), AveragePool, LpPool (N-D; pads,
//! strides, dilations, ceil_mode, auto_pad), GlobalAveragePool, GlobalMaxPool,
//! GlobalLpPool, and MaxUnpool (the scatter that inverts MaxPool's Indices).
//! Reference: ONNX spec MaxPool-22, AveragePool-22, LpPool-22, Global*Pool-22,
//! MaxUnpool-22. The window geometry is [`Window`], shared with Conv.
//!
//! Values are pooled in f64 and written back in the input's dtype (MaxPool is
//! exact for every numeric type; averages round once).

use super::conv::{ConvAttrs, Window};
use super::{input, opt_input, strides, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
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
    GlobalLp {
        p: f32,
    },
    /// Inputs X, I (flat indices from MaxPool) and optional output_shape; the
    /// default output size is `(in - 1) * stride + kernel - pads`.
    MaxUnpool {
        kernel_shape: Vec<usize>,
        pads: Vec<usize>,
        strides: Vec<usize>,
    },
}

fn from_f64(dt: DType, shape: &[usize], v: &[f64]) -> Result<Tensor> {
    dispatch_numeric!(dt, T => Tensor::from_vec(shape, v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>()),
        bool => Err(Error::DType { expected: "a numeric type for pooling".into(), actual: dt }))
}

/// Pools `x` `[N, C, spatial...]`; returns values and (for max) flat indices.
fn pool(x: &Tensor, kind: PoolKind, a: &ConvAttrs, ceil_mode: bool, storage_order: usize) -> Result<(Tensor, Tensor)> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::Shape(format!("pooling needs X [N, C, spatial...], got {xs:?}")));
    }
    let g = Window::new(&xs[2..], &a.kernel_shape, a, ceil_mode)?;
    let mut shape = xs[..2].to_vec();
    shape.extend(&g.out);
    let (values, idx) = dispatch_numeric!(x.dtype(), T => {
        let (v, i) = pool_typed(x.as_slice::<T>()?, &xs[2..], &g, kind, storage_order);
        (Tensor::from_vec(&shape, v)?, i)
    }, bool => return Err(Error::DType { expected: "a numeric type for pooling".into(), actual: x.dtype() }));
    let idx = if idx.is_empty() { Tensor::zeros(DType::I64, &shape)? } else { Tensor::from_vec(&shape, idx)? };
    Ok((values, idx))
}

/// Upper bound on the window taps held at once (outputs are pooled in blocks).
const MAX_TAPS: usize = 1 << 20;

/// The windows of a block of outputs: the taps of block output `o` are
/// `taps[starts[o]..starts[o + 1]]` as (plane offset, column-major plane offset);
/// `padded[o]` counts the window positions that are input or padding.
#[derive(Default)]
struct Windows {
    taps: Vec<(usize, usize)>,
    starts: Vec<usize>,
    padded: Vec<usize>,
}

impl Windows {
    fn fill(&mut self, sp: &[usize], g: &Window, outs: std::ops::Range<usize>) {
        let nd = sp.len();
        let (k, nk) = (&g.kernel, g.kernel.iter().product::<usize>());
        let (kst, ost, sst) = (strides(k), strides(&g.out), strides(sp));
        // column-major flat index within a plane: strides of the reversed dims
        let rev: Vec<usize> = sp.iter().rev().copied().collect();
        let cst: Vec<usize> = strides(&rev).into_iter().rev().collect();
        self.taps.clear();
        self.starts.clear();
        self.padded.clear();
        self.starts.push(0);
        let mut pos = vec![0usize; nd];
        for o in outs {
            let mut padded = 0;
            for kk in 0..nk {
                let (mut inside, mut in_padded) = (true, true);
                for d in 0..nd {
                    // Window::new keeps every start and extent within the padded input
                    let p = ((o / ost[d]) % g.out[d] * g.stride[d] + (kk / kst[d]) % k[d] * g.dil[d]) as i64
                        - g.pad_begin[d] as i64;
                    if p < 0 || p as usize >= sp[d] {
                        inside = false;
                        // in ceil mode the window may reach past the end padding
                        in_padded &= p < (sp[d] + g.pad_end[d]) as i64;
                    } else {
                        pos[d] = p as usize;
                    }
                }
                padded += in_padded as usize;
                if inside {
                    let dot = |s: &[usize]| pos.iter().zip(s).map(|(p, s)| p * s).sum::<usize>();
                    self.taps.push((dot(&sst), dot(&cst)));
                }
            }
            self.padded.push(padded);
            self.starts.push(self.taps.len());
        }
    }
}

/// Pools every plane of `x` in its own type: max compares elements (the first
/// maximum wins), average and Lp accumulate in f64. Window taps are computed once
/// per output for all planes, a block of outputs at a time.
fn pool_typed<T: Element>(
    x: &[T],
    sp: &[usize],
    g: &Window,
    kind: PoolKind,
    storage_order: usize,
) -> (Vec<T>, Vec<i64>) {
    let (ns, no, nk) =
        (sp.iter().product::<usize>(), g.out.iter().product::<usize>(), g.kernel.iter().product::<usize>());
    let planes = x.len().checked_div(ns).unwrap_or(0);
    let mut vals = vec![T::zero(); planes * no];
    let mut idx = vec![0i64; if kind == PoolKind::Max { planes * no } else { 0 }];
    let block = (MAX_TAPS / nk.max(1)).max(1);
    let mut w = Windows::default();
    for o0 in (0..no).step_by(block) {
        let o1 = (o0 + block).min(no);
        w.fill(sp, g, o0..o1);
        for pl in 0..planes {
            let src = &x[pl * ns..(pl + 1) * ns];
            for o in o0..o1 {
                let window = &w.taps[w.starts[o - o0]..w.starts[o - o0 + 1]];
                let r = pl * no + o;
                vals[r] = match kind {
                    PoolKind::Max => {
                        let mut best: Option<(T, usize)> = None;
                        for &(off, cm) in window {
                            if best.is_none_or(|(b, _)| src[off] > b) {
                                best = Some((src[off], if storage_order == 1 { cm } else { off }));
                            }
                        }
                        let (v, at) = best.unwrap_or((T::from_f64(f64::NEG_INFINITY), 0));
                        // Indices are flat over the whole input tensor (N, C, then the plane).
                        idx[r] = (pl * ns + at) as i64;
                        v
                    }
                    PoolKind::Average { count_include_pad } => {
                        let n = if count_include_pad { w.padded[o - o0] } else { window.len() };
                        T::from_f64(window.iter().map(|&(off, _)| src[off].to_f64()).sum::<f64>() / n.max(1) as f64)
                    }
                    PoolKind::Lp { p } => {
                        let p = p as f64;
                        let sum: f64 = window.iter().map(|&(off, _)| src[off].to_f64().abs().powf(p)).sum();
                        T::from_f64(sum.powf(1.0 / p))
                    }
                };
            }
        }
    }
    (vals, idx)
}

fn global(x: &Tensor, op: &PoolOp) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(Error::Shape(format!("global pooling needs X [N, C, ...], got {xs:?}")));
    }
    let ns: usize = xs[2..].iter().product();
    let v = x.to_f64_vec();
    let r: Vec<f64> = v
        .chunks(ns.max(1))
        .map(|c| match op {
            PoolOp::GlobalMax => c.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            PoolOp::GlobalLp { p } => c.iter().map(|v| v.abs().powf(*p as f64)).sum::<f64>().powf(1.0 / *p as f64),
            _ => c.iter().sum::<f64>() / ns.max(1) as f64,
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    from_f64(x.dtype(), &shape, &r)
}

/// MaxUnpool's default output spatial size: `(in - 1) * stride + kernel - pad_begin - pad_end`.
fn unpool_default(sp: &[usize], kernel: &[usize], pads: &[usize], strides: &[usize]) -> Result<Vec<usize>> {
    let n = sp.len();
    let stride = if strides.is_empty() { vec![1; n] } else { strides.to_vec() };
    let pads = if pads.is_empty() { vec![0; 2 * n] } else { pads.to_vec() };
    if kernel.len() != n || stride.len() != n || pads.len() != 2 * n {
        bail!("MaxUnpool kernel_shape {kernel:?}, strides {stride:?} and pads {pads:?} do not fit {n} spatial dims");
    }
    (0..n)
        .map(|i| {
            let full = sp[i].saturating_sub(1) as u128 * stride[i] as u128 + kernel[i] as u128;
            let out = full.checked_sub(pads[i] as u128 + pads[i + n] as u128).ok_or_else(|| {
                Error::Shape(format!("MaxUnpool pads {pads:?} are larger than the output ({full}) on spatial axis {i}"))
            })?;
            usize::try_from(out)
                .map_err(|_| Error::Shape(format!("MaxUnpool output size {out} on spatial axis {i} is too large")))
        })
        .collect()
}

/// MaxUnpool: `Y.flat[I[j]] = X[j]`, indices flat over the default-sized output
/// (the shape MaxPool read). A larger `output_shape` holds that result in its
/// leading corner, zero-padded at the end of each spatial dim (as the ONNX reference does).
fn max_unpool(
    x: &Tensor,
    ind: &Tensor,
    out_shape: Option<&Tensor>,
    kernel: &[usize],
    pads: &[usize],
    strides: &[usize],
) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 3 || ind.shape() != xs {
        return Err(Error::Shape(format!(
            "MaxUnpool needs X [N, C, spatial...] and I of the same shape, got X {xs:?} and I {:?}",
            ind.shape()
        )));
    }
    let mut inferred = xs[..2].to_vec();
    inferred.extend(unpool_default(&xs[2..], kernel, pads, strides)?);
    let mut y = Tensor::zeros(x.dtype(), &inferred)?;
    let total = y.numel();
    let targets = ind.to_i64_vec()?;
    if let Some(&bad) = targets.iter().find(|&&i| i < 0 || i as usize >= total) {
        return Err(Error::Invalid(format!("MaxUnpool index {bad} is outside the unpooled shape {inferred:?}")));
    }
    let size = x.dtype().size();
    {
        let (src, dst) = (x.bytes(), y.bytes_mut());
        for (j, &i) in targets.iter().enumerate() {
            let i = i as usize;
            dst[i * size..(i + 1) * size].copy_from_slice(&src[j * size..(j + 1) * size]);
        }
    }
    let Some(t) = out_shape else { return Ok(y) };
    let v = t.to_i64_vec()?;
    let fits = v.len() == inferred.len()
        && v.iter().zip(&inferred).enumerate().all(|(d, (&o, &i))| if d < 2 { o == i as i64 } else { o >= i as i64 });
    if !fits {
        return Err(Error::Shape(format!(
            "MaxUnpool output_shape {v:?} must be [{}, {}, spatial...] with each spatial dim at least {:?}",
            xs[0],
            xs[1],
            &inferred[2..]
        )));
    }
    let shape: Vec<usize> = v.iter().map(|&d| d as usize).collect();
    if shape == inferred {
        return Ok(y);
    }
    let mut out = Tensor::zeros(x.dtype(), &shape)?;
    let (ist, ost) = (super::strides(&inferred), super::strides(&shape));
    let (src, dst) = (y.bytes(), out.bytes_mut());
    for i in 0..total {
        let o: usize = (0..shape.len()).map(|d| (i / ist[d]) % inferred[d] * ost[d]).sum();
        dst[o * size..(o + 1) * size].copy_from_slice(&src[i * size..(i + 1) * size]);
    }
    Ok(out)
}

impl OpImpl for PoolOp {
    fn name(&self) -> &'static str {
        match self {
            PoolOp::Pool { kind: PoolKind::Max, .. } => "MaxPool",
            PoolOp::Pool { kind: PoolKind::Average { .. }, .. } => "AveragePool",
            PoolOp::Pool { kind: PoolKind::Lp { .. }, .. } => "LpPool",
            PoolOp::GlobalAverage => "GlobalAveragePool",
            PoolOp::GlobalMax => "GlobalMaxPool",
            PoolOp::GlobalLp { .. } => "GlobalLpPool",
            PoolOp::MaxUnpool { .. } => "MaxUnpool",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let fixed_spatial = |s: &Shape| Shape(s.0[2..].to_vec()).as_fixed();
        let with_spatial = |s: &Shape, sp: Vec<usize>| {
            let mut d = s.0[..2].to_vec();
            d.extend(sp.into_iter().map(Dim::Fixed));
            Some(Shape(d))
        };
        let shape = match (self, x.shape.as_ref()) {
            (PoolOp::GlobalAverage | PoolOp::GlobalMax | PoolOp::GlobalLp { .. }, Some(s)) if s.rank() >= 2 => {
                with_spatial(s, vec![1; s.rank() - 2])
            }
            (PoolOp::Pool { attrs, ceil_mode, .. }, Some(s)) if s.rank() >= 3 => match fixed_spatial(s) {
                Some(sp) => with_spatial(s, Window::new(&sp, &attrs.kernel_shape, attrs, *ceil_mode)?.out),
                None => None,
            },
            (PoolOp::MaxUnpool { kernel_shape, pads, strides }, Some(s)) if s.rank() >= 3 => {
                // an omitted output_shape cannot be told from an unknown one, so the
                // default size is only claimed when the node has two inputs
                match (inputs.get(2).and_then(|i| i.value), fixed_spatial(s)) {
                    (Some(v), _) => {
                        Some(Shape(v.to_i64_vec()?.into_iter().map(|d| Dim::Fixed(d.max(0) as usize)).collect()))
                    }
                    (None, Some(sp)) if inputs.len() <= 2 => {
                        with_spatial(s, unpool_default(&sp, kernel_shape, pads, strides)?)
                    }
                    _ => None,
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
            PoolOp::GlobalAverage | PoolOp::GlobalMax | PoolOp::GlobalLp { .. } => vec![global(x, self)?],
            PoolOp::MaxUnpool { kernel_shape, pads, strides } => {
                vec![max_unpool(x, input(inputs, 1, "I")?, opt_input(inputs, 2), kernel_shape, pads, strides)?]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::AutoPad;

    fn attrs(kernel: Vec<usize>, pads: Vec<usize>, strides: Vec<usize>) -> ConvAttrs {
        ConvAttrs { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: kernel, pads, strides }
    }

    #[test]
    fn max_and_average_pool_1d() {
        let x = Tensor::from_slice(&[1, 1, 5], &[1.0f32, 5.0, 2.0, 4.0, 3.0]).unwrap();
        let a = attrs(vec![2], vec![], vec![2]);
        let (m, i) = pool(&x, PoolKind::Max, &a, false, 0).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[5.0, 4.0]);
        assert_eq!(i.as_slice::<i64>().unwrap(), &[1, 3]);
        let (m, _) = pool(&x, PoolKind::Max, &a, true, 0).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[5.0, 4.0, 3.0]);
        let (avg, _) = pool(&x, PoolKind::Average { count_include_pad: false }, &a, false, 0).unwrap();
        assert_eq!(avg.as_slice::<f32>().unwrap(), &[3.0, 3.0]);
    }

    #[test]
    fn same_upper_average_counts_the_end_padding_when_asked() {
        // in 4, kernel 3, stride 1, SAME_UPPER: one pad on each side
        let x = Tensor::from_slice(&[1, 1, 4], &[3.0f32, 6.0, 9.0, 12.0]).unwrap();
        let a = ConvAttrs { auto_pad: AutoPad::SameUpper, ..attrs(vec![3], vec![], vec![]) };
        let (y, _) = pool(&x, PoolKind::Average { count_include_pad: true }, &a, false, 0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[3.0, 6.0, 9.0, 7.0]);
        let (y, _) = pool(&x, PoolKind::Average { count_include_pad: false }, &a, false, 0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[4.5, 6.0, 9.0, 10.5]);
    }

    #[test]
    fn column_major_indices_run_down_columns() {
        // 2x2 plane [[1, 4], [3, 2]] in channel 1 of 2: the max 4 sits at (0, 1);
        // row-major 4 + 1 = 5, column-major 4 + 1 * 2 + 0 = 6
        let x = Tensor::from_slice(&[1, 2, 2, 2], &[0.0f32, 0.0, 0.0, 0.0, 1.0, 4.0, 3.0, 2.0]).unwrap();
        let a = attrs(vec![2, 2], vec![], vec![]);
        let (_, i) = pool(&x, PoolKind::Max, &a, false, 0).unwrap();
        assert_eq!(i.as_slice::<i64>().unwrap(), &[0, 5]);
        let (_, i) = pool(&x, PoolKind::Max, &a, false, 1).unwrap();
        assert_eq!(i.as_slice::<i64>().unwrap(), &[0, 6]);
    }

    #[test]
    fn lp_pools_take_the_p_norm() {
        let x = Tensor::from_slice(&[1, 1, 2], &[3.0f32, -4.0]).unwrap();
        let (y, _) = pool(&x, PoolKind::Lp { p: 2.0 }, &attrs(vec![2], vec![], vec![]), false, 0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[5.0]);
        let y = global(&x, &PoolOp::GlobalLp { p: 1.0 }).unwrap();
        assert_eq!((y.shape(), y.as_slice::<f32>().unwrap()), (&[1usize, 1, 1][..], &[7.0f32][..]));
    }

    #[test]
    fn max_unpool_scatters_to_the_indices() {
        // MaxPool of [1 5 2 4] with kernel 2, stride 2 gave [5 4] at [1 3]
        let x = Tensor::from_slice(&[1, 1, 2], &[5.0f32, 4.0]).unwrap();
        let i = Tensor::from_slice(&[1, 1, 2], &[1i64, 3]).unwrap();
        let y = max_unpool(&x, &i, None, &[2], &[], &[2]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 5.0, 0.0, 4.0]);
        // a larger output_shape pads the unpooled values at the end
        let shape = Tensor::from_slice(&[3], &[1i64, 1, 5]).unwrap();
        let y = max_unpool(&x, &i, Some(&shape), &[2], &[], &[2]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 5.0, 0.0, 4.0, 0.0]);
        let small = Tensor::from_slice(&[3], &[1i64, 1, 3]).unwrap();
        assert!(max_unpool(&x, &i, Some(&small), &[2], &[], &[2]).is_err());
        let far = Tensor::from_slice(&[1, 1, 2], &[1i64, 9]).unwrap();
        assert!(max_unpool(&x, &far, None, &[2], &[], &[2]).is_err());
    }

    #[test]
    fn windows_larger_than_one_tap_block_pool_correctly() {
        // 601 outputs x 2000 taps exceed MAX_TAPS, so outputs are pooled in blocks;
        // over 0, 1, 2, ... the window at o holds o..o + 2000
        let x: Vec<f32> = (0..2600).map(|v| v as f32).collect();
        let x = Tensor::from_slice(&[1, 1, 2600], &x).unwrap();
        let a = attrs(vec![2000], vec![], vec![]);
        let (m, i) = pool(&x, PoolKind::Max, &a, false, 0).unwrap();
        let (m, i) = (m.as_slice::<f32>().unwrap(), i.as_slice::<i64>().unwrap());
        assert_eq!((m.len(), m[0], m[600], i[600]), (601, 1999.0, 2599.0, 2599));
        let (avg, _) = pool(&x, PoolKind::Average { count_include_pad: false }, &a, false, 0).unwrap();
        assert_eq!(avg.as_slice::<f32>().unwrap()[550], 550.0 + 999.5);
    }

    #[test]
    fn malformed_pooling_is_an_error() {
        let x = Tensor::zeros(DType::F32, &[1, 1, 5]).unwrap();
        assert!(pool(&x, PoolKind::Max, &attrs(vec![2, 2], vec![], vec![]), false, 0).is_err());
        assert!(pool(&x, PoolKind::Max, &attrs(vec![6], vec![], vec![]), false, 0).is_err());
        assert!(pool(&x, PoolKind::Max, &attrs(vec![2], vec![1], vec![]), false, 0).is_err());
        assert!(pool(&x, PoolKind::Max, &attrs(vec![0], vec![], vec![]), false, 0).is_err());
        let huge = ConvAttrs { dilations: vec![usize::MAX], ..attrs(vec![3], vec![], vec![]) };
        assert!(pool(&x, PoolKind::Max, &huge, false, 0).is_err());
        assert!(pool(&x, PoolKind::Max, &attrs(vec![2], vec![usize::MAX, 1], vec![]), true, 0).is_err());
        assert!(max_unpool(&x, &x.cast(DType::I64).unwrap(), None, &[2], &[], &[usize::MAX]).is_err());
        assert!(pool(&x.reshaped(&[5]).unwrap(), PoolKind::Max, &attrs(vec![2], vec![], vec![]), false, 0).is_err());
    }
}
