//! Pooling: MaxPool (with optional Indices), AveragePool, LpPool (N-D; pads,
//! strides, dilations, ceil_mode, auto_pad), GlobalAveragePool, GlobalMaxPool,
//! GlobalLpPool, and MaxUnpool (the scatter that inverts MaxPool's Indices).
//! Reference: ONNX spec MaxPool-22, AveragePool-22, LpPool-22, Global*Pool-22,
//! MaxUnpool-22. The window geometry is [`Window`], shared with Conv.
//!
//! Values are pooled in f64 and written back in the input's dtype (MaxPool is
//! exact for every numeric type; averages round once).
//!
//! For f32 with fixed shapes, MaxPool (without Indices), AveragePool,
//! GlobalAveragePool and GlobalMaxPool have prepared kernels ([`PoolKernel`],
//! [`GlobalKernel`]): the window geometry becomes per-axis loop bounds (1-D and
//! 2-D) or a table of tap offsets (3-D and up) once at plan time, and each run
//! only walks the planes.

use super::conv::{ConvAttrs, Window};
use super::{fixed_shape, input, opt_input, strides, EvalCtx, InferInput, Kernel, OpImpl};
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

/// Where the window of one output position lies along one spatial axis: input
/// taps at `start + t * dilation` for `t < count`, and `padded` window positions
/// that are input or padding (what `count_include_pad` divides by).
#[derive(Clone, Copy, Debug)]
struct AxisTaps {
    start: usize,
    count: usize,
    padded: usize,
}

/// The [`AxisTaps`] of every output position along spatial axis `d` of `g`.
fn axis_taps(size: usize, g: &Window, d: usize) -> Vec<AxisTaps> {
    (0..g.out[d])
        .map(|o| {
            let mut t = AxisTaps { start: 0, count: 0, padded: 0 };
            for k in 0..g.kernel[d] {
                // Window::new keeps every position within the padded input's bounds
                let p = (o * g.stride[d] + k * g.dil[d]) as i64 - g.pad_begin[d] as i64;
                if p >= 0 && (p as usize) < size {
                    if t.count == 0 {
                        t.start = p as usize;
                    }
                    t.count += 1;
                }
                // in ceil mode the window may reach past the end padding
                t.padded += (p < (size + g.pad_end[d]) as i64) as usize;
            }
            t
        })
        .collect()
}

/// Where a [`PoolKernel`] finds each output's window in an input plane.
enum Geometry {
    /// 1-D and 2-D (1-D as a plane of one row): output `(r, c)` pools rows
    /// `rows[r]` (at stride `dil.0` rows) times columns `cols[c]` (at stride `dil.1`).
    Separable { width: usize, dil: (usize, usize), rows: Vec<AxisTaps>, cols: Vec<AxisTaps> },
    /// 1-D MaxPool whose every window lies inside the input, without dilation:
    /// output `o` is the max of `kernel` inputs from `o * stride` (the common
    /// downsampling pool, run as `kernel` vector passes).
    Strided1d { stride: usize, kernel: usize },
    /// Any rank: the taps of output `o` are `taps[starts[o]..starts[o + 1]]`
    /// (plane offsets), `padded[o]` as in [`AxisTaps`].
    Table { taps: Vec<usize>, starts: Vec<usize>, padded: Vec<usize> },
}

/// f32 MaxPool (first maximum, `-inf` for an empty window) or AveragePool (sum
/// in f64 in window order, as `pool_typed` does) for one input shape.
struct PoolKernel {
    average: Option<bool>,
    planes: usize,
    in_plane: usize,
    out_plane: usize,
    geometry: Geometry,
}

/// Most taps a [`Geometry::Table`] may hold (larger windows stay on `eval`).
const MAX_KERNEL_TAPS: usize = 1 << 22;

impl PoolKernel {
    fn new(shape: &[usize], kind: PoolKind, a: &ConvAttrs, ceil_mode: bool) -> Option<PoolKernel> {
        let average = match kind {
            PoolKind::Max => None,
            PoolKind::Average { count_include_pad } => Some(count_include_pad),
            PoolKind::Lp { .. } => return None,
        };
        let sp = shape.get(2..).filter(|sp| !sp.is_empty())?;
        let g = Window::new(sp, &a.kernel_shape, a, ceil_mode).ok()?;
        let (in_plane, out_plane) = (sp.iter().product::<usize>(), g.out.iter().product::<usize>());
        let nk = g.kernel.iter().product::<usize>();
        let cost = (0..sp.len()).try_fold(0usize, |c, d| c.checked_add(g.kernel[d].checked_mul(g.out[d])?))?;
        if cost > MAX_KERNEL_TAPS {
            return None;
        }
        let inside = g.pad_begin[0] == 0 && (g.out[0].max(1) - 1) * g.stride[0] + g.kernel[0] <= sp[0];
        let geometry = match sp.len() {
            1 if average.is_none() && g.dil[0] == 1 && g.kernel[0] > 0 && inside => {
                Geometry::Strided1d { stride: g.stride[0], kernel: g.kernel[0] }
            }
            1 => {
                let one = Window {
                    kernel: vec![1, g.kernel[0]],
                    stride: vec![1, g.stride[0]],
                    dil: vec![1, g.dil[0]],
                    pad_begin: vec![0, g.pad_begin[0]],
                    pad_end: vec![0, g.pad_end[0]],
                    out: vec![1, g.out[0]],
                };
                let rows = axis_taps(1, &one, 0);
                Geometry::Separable { width: sp[0], dil: (1, g.dil[0]), rows, cols: axis_taps(sp[0], &one, 1) }
            }
            2 => Geometry::Separable {
                width: sp[1],
                dil: (g.dil[0], g.dil[1]),
                rows: axis_taps(sp[0], &g, 0),
                cols: axis_taps(sp[1], &g, 1),
            },
            _ => {
                if out_plane.checked_mul(nk)? > MAX_KERNEL_TAPS {
                    return None;
                }
                let mut w = Windows::default();
                w.fill(sp, &g, 0..out_plane);
                Geometry::Table { taps: w.taps.iter().map(|t| t.0).collect(), starts: w.starts, padded: w.padded }
            }
        };
        Some(PoolKernel { average, planes: shape[0] * shape[1], in_plane, out_plane, geometry })
    }

    /// One output from its taps (`taps` yields the input values in window order).
    #[inline(always)]
    fn reduce(&self, mut taps: impl Iterator<Item = f32>, valid: usize, padded: usize) -> f32 {
        match self.average {
            None => {
                let Some(first) = taps.next() else { return f32::NEG_INFINITY };
                taps.fold(first, |m, v| if v > m { v } else { m })
            }
            Some(include_pad) => {
                let n = if include_pad { padded } else { valid };
                (taps.map(f64::from).sum::<f64>() / n.max(1) as f64) as f32
            }
        }
    }
}

impl Kernel for PoolKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "X")?.as_slice::<f32>()?;
        let y = outputs.first_mut().ok_or_else(|| Error::Invalid("no output to write".into()))?;
        let y = y.as_mut_slice::<f32>()?;
        if x.len() != self.planes * self.in_plane || y.len() != self.planes * self.out_plane {
            bail!(
                "planned for {} planes of {} -> {} elements, got input {} and output {}",
                self.planes,
                self.in_plane,
                self.out_plane,
                x.len(),
                y.len()
            );
        }
        for (src, dst) in x.chunks_exact(self.in_plane).zip(y.chunks_exact_mut(self.out_plane)) {
            match &self.geometry {
                Geometry::Strided1d { stride, kernel } => max_strided(src, *stride, *kernel, dst),
                Geometry::Separable { width, dil: (dh, dw), rows, cols } => {
                    let (width, dh, dw) = (*width, *dh, *dw);
                    for (r, out_row) in rows.iter().zip(dst.chunks_exact_mut(cols.len())) {
                        for (c, out) in cols.iter().zip(out_row) {
                            *out = if r.count == 0 || c.count == 0 {
                                self.reduce(std::iter::empty(), 0, r.padded * c.padded)
                            } else {
                                // the window's input rows, each cut to its first..=last tap
                                let span = (c.count - 1) * dw + 1;
                                let first = r.start * width + c.start;
                                let window = (0..r.count).map(|kh| &src[first + kh * dh * width..][..span]);
                                match self.average {
                                    None => {
                                        let mut m = src[first];
                                        for row in window {
                                            for &v in row.iter().step_by(dw) {
                                                m = if v > m { v } else { m };
                                            }
                                        }
                                        m
                                    }
                                    Some(include_pad) => {
                                        let mut sum = 0f64;
                                        for row in window {
                                            for &v in row.iter().step_by(dw) {
                                                sum += v as f64;
                                            }
                                        }
                                        let n = if include_pad { r.padded * c.padded } else { r.count * c.count };
                                        (sum / n as f64) as f32
                                    }
                                }
                            };
                        }
                    }
                }
                Geometry::Table { taps, starts, padded } => {
                    for (o, (out, w)) in dst.iter_mut().zip(starts.windows(2)).enumerate() {
                        let window = &taps[w[0]..w[1]];
                        *out = self.reduce(window.iter().map(|&t| src[t]), window.len(), padded[o]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `out[o] = max(src[o * stride .. o * stride + kernel])` (the first maximum, as
/// [`PoolKernel::reduce`]: a NaN tap is kept only when it comes first), one pass
/// per tap so each pass is a plain strided loop.
fn max_strided(src: &[f32], stride: usize, kernel: usize, out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let first_max = |m: f32, v: f32| if v > m { v } else { m };
    match (stride, kernel) {
        // Non-overlapping pairs and triples, the usual downsampling: one pass.
        (2, 2) => {
            for (o, w) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = first_max(w[0], w[1]);
            }
            return;
        }
        (3, 3) => {
            for (o, w) in out.iter_mut().zip(src.chunks_exact(3)) {
                *o = first_max(first_max(w[0], w[1]), w[2]);
            }
            return;
        }
        _ => {}
    }
    let span = (n - 1) * stride + 1;
    for (o, y) in out.iter_mut().zip(src[..span].iter().step_by(stride)) {
        *o = *y;
    }
    for t in 1..kernel {
        let taps = &src[t..t + span];
        for (o, &v) in out.iter_mut().zip(taps.iter().step_by(stride)) {
            *o = first_max(*o, v);
        }
    }
}

/// f32 GlobalAveragePool / GlobalMaxPool: one value per plane of `plane` elements.
struct GlobalKernel {
    max: bool,
    planes: usize,
    plane: usize,
}

impl Kernel for GlobalKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "X")?.as_slice::<f32>()?;
        let y = outputs.first_mut().ok_or_else(|| Error::Invalid("no output to write".into()))?;
        let y = y.as_mut_slice::<f32>()?;
        if x.len() != self.planes * self.plane || y.len() != self.planes {
            bail!("planned for {} planes of {}, got input {} and output {}", self.planes, self.plane, x.len(), y.len());
        }
        for (src, out) in x.chunks_exact(self.plane).zip(y) {
            *out = if self.max {
                // f32::max skips NaN, as the f64 fold of `global` does
                src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
            } else {
                // eight partial sums in f64: vectorisable, and far below f32 rounding
                let mut acc = [0f64; 8];
                let mut chunks = src.chunks_exact(8);
                for c in &mut chunks {
                    for (a, &v) in acc.iter_mut().zip(c) {
                        *a += v as f64;
                    }
                }
                let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
                ((acc.iter().sum::<f64>() + tail) / self.plane as f64) as f32
            };
        }
        Ok(())
    }
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

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        // One output only: MaxPool's Indices stay on eval.
        let (Some(x), [out]) = (inputs.first(), outputs) else { return Ok(None) };
        let Some(shape) = fixed_shape(x) else { return Ok(None) };
        let f32_io = x.fact.dtype == Some(DType::F32) && out.dtype == Some(DType::F32);
        if !f32_io || shape.len() < 2 || shape.contains(&0) {
            return Ok(None);
        }
        let (planes, plane) = (shape[0] * shape[1], shape[2..].iter().product::<usize>());
        Ok(match self {
            PoolOp::Pool { kind, attrs, ceil_mode, .. } => {
                PoolKernel::new(&shape, *kind, attrs, *ceil_mode).map(|k| Box::new(k) as Box<dyn Kernel>)
            }
            PoolOp::GlobalAverage => Some(Box::new(GlobalKernel { max: false, planes, plane })),
            PoolOp::GlobalMax => Some(Box::new(GlobalKernel { max: true, planes, plane })),
            PoolOp::GlobalLp { .. } | PoolOp::MaxUnpool { .. } => None,
        })
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

    use crate::ops::layout::tests::{assert_close, planned_vs_eval, Rng};

    #[test]
    fn pool_kernels_match_eval_for_random_geometry() {
        let mut rng = Rng(0xda94_2042_e4dd_58b5);
        let mut checked = 0;
        for case in 0..90 {
            let nd = 1 + case % 3;
            let sp: Vec<usize> = (0..nd).map(|_| 1 + rng.below(if nd == 3 { 6 } else { 13 })).collect();
            let kernel: Vec<usize> = sp.iter().map(|&s| 1 + rng.below(s.min(4))).collect();
            let pick = |rng: &mut Rng, n: usize| -> Vec<usize> {
                if rng.below(3) == 0 {
                    vec![]
                } else {
                    (0..nd).map(|_| 1 + rng.below(n)).collect()
                }
            };
            let (strides, dilations) = (pick(&mut rng, 3), pick(&mut rng, 2));
            let pads: Vec<usize> =
                if rng.below(2) == 0 { vec![] } else { (0..2 * nd).map(|i| rng.below(kernel[i % nd])).collect() };
            let auto_pad = [AutoPad::NotSet, AutoPad::NotSet, AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid]
                [rng.below(5)];
            let a = ConvAttrs { auto_pad, dilations, group: 1, kernel_shape: kernel, pads, strides };
            let ceil_mode = rng.below(2) == 0;
            let mut shape = vec![1 + rng.below(2), 1 + rng.below(3)];
            shape.extend(&sp);
            // skip geometries where no window fits
            let Ok(g) = Window::new(&sp, &a.kernel_shape, &a, ceil_mode) else { continue };
            if g.pad_begin.iter().zip(&g.kernel).any(|(p, k)| p >= k) {
                continue;
            }
            let kinds = [
                PoolKind::Max,
                PoolKind::Average { count_include_pad: true },
                PoolKind::Average { count_include_pad: false },
            ];
            let kind = kinds[case % 3];
            let op = PoolOp::Pool { kind, attrs: a.clone(), ceil_mode, storage_order: 0 };
            let xs = [rng.tensor(&shape), rng.tensor(&shape)];
            let tol = if kind == PoolKind::Max { 0.0 } else { 1e-5 };
            for (got, want) in planned_vs_eval(op.into(), &xs, &[], 1) {
                assert_close(&got, &want, tol, &format!("{kind:?} {a:?} ceil {ceil_mode} on {shape:?}"));
            }
            checked += 1;
        }
        assert!(checked > 60, "only {checked} geometries fit");
    }

    #[test]
    fn strided_max_pool_matches_eval_including_nan_and_a_dropped_tail() {
        let mut rng = Rng(0x5eed_0f1d);
        for (k, stride, len) in [(2usize, 2usize, 47usize), (3, 3, 20), (2, 1, 9), (3, 2, 12), (4, 4, 16)] {
            let mut x = rng.tensor(&[2, 3, len]);
            // a NaN first in one window and later in another: only the first propagates
            let v = x.as_mut_slice::<f32>().unwrap();
            v[0] = f32::NAN;
            v[len + 1] = f32::NAN;
            let op = PoolOp::Pool {
                kind: PoolKind::Max,
                attrs: attrs(vec![k], vec![], vec![stride]),
                ceil_mode: false,
                storage_order: 0,
            };
            for (got, want) in planned_vs_eval(op.into(), &[x.clone(), x], &[], 1) {
                let (g, w) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
                assert!(
                    g.iter().zip(w).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())),
                    "k {k} stride {stride}: {g:?} vs {w:?}"
                );
            }
        }
    }

    #[test]
    fn global_pool_kernels_match_eval() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for shape in [vec![2, 3], vec![1, 3, 7], vec![2, 5, 7, 9], vec![1, 2, 3, 1, 4], vec![1, 1, 33, 1]] {
            for op in [PoolOp::GlobalAverage, PoolOp::GlobalMax] {
                let tol = if matches!(op, PoolOp::GlobalMax) { 0.0 } else { 1e-5 };
                let xs = [rng.tensor(&shape), rng.tensor(&shape)];
                for (got, want) in planned_vs_eval(op.clone().into(), &xs, &[], 1) {
                    assert_close(&got, &want, tol, &format!("{op:?} on {shape:?}"));
                }
            }
        }
    }

    #[test]
    fn max_pool_with_indices_and_lp_pool_stay_on_eval() {
        let x = Fact::new(DType::F32, Shape::fixed(&[1, 1, 4]));
        let ins = [InferInput { fact: &x, value: None }];
        let a = attrs(vec![2], vec![], vec![]);
        let max = PoolOp::Pool { kind: PoolKind::Max, attrs: a.clone(), ceil_mode: false, storage_order: 0 };
        let outs = max.infer(&ins, 2).unwrap();
        assert!(max.kernel(&ins, &outs).unwrap().is_none());
        assert!(max.kernel(&ins, &outs[..1]).unwrap().is_some());
        let lp = PoolOp::Pool { kind: PoolKind::Lp { p: 2.0 }, attrs: a, ceil_mode: false, storage_order: 0 };
        assert!(lp.kernel(&ins, &lp.infer(&ins, 1).unwrap()).unwrap().is_none());
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
