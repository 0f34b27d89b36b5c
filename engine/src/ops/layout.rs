//! Data-movement and shape ops: Reshape, Transpose, Squeeze, Unsqueeze, Flatten,
//! Concat, Split, Slice, Expand, Tile, Pad, Identity/Dropout, Shape, Size, Cast,
//! CastLike, ConstantOfShape, Range, Trilu, DepthToSpace, SpaceToDepth, OneHot,
//! NonZero, EyeLike, Compress. Reference: ONNX operator spec.
//!
//! These are dtype-agnostic: they move elements as fixed-size byte groups.

use super::broadcast::{broadcast_shapes, for_each_offset};
use super::{fixed_shape, input, norm_axis, opt_input, strides, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum LayoutOp {
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// Axes from the attribute (opset < 13) or input 1.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Flatten {
        axis: i64,
    },
    Concat {
        axis: i64,
    },
    /// Split sizes from the attribute (opset < 13), input 1, or equal parts.
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        num_outputs: Option<usize>,
    },
    /// starts/ends/axes from attributes (opset < 10) or inputs 1..4.
    Slice {
        starts: Option<Vec<i64>>,
        ends: Option<Vec<i64>>,
        axes: Option<Vec<i64>>,
    },
    Expand,
    Tile,
    /// Pads from the attribute (opset < 11) or input 1; value from attr or input 2.
    Pad {
        mode: PadMode,
        pads: Option<Vec<i64>>,
        value: f32,
    },
    Identity,
    /// Inference-mode dropout: identity, plus an all-true mask if asked.
    Dropout,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    Cast {
        to: DType,
    },
    CastLike,
    ConstantOfShape {
        value: Tensor,
    },
    Range,
    Trilu {
        upper: bool,
    },
    DepthToSpace {
        blocksize: usize,
        crd: bool,
    },
    SpaceToDepth {
        blocksize: usize,
    },
    OneHot {
        axis: i64,
    },
    NonZero,
    EyeLike {
        dtype: Option<DType>,
        k: i64,
    },
    Compress {
        axis: Option<i64>,
    },
    /// Reinterprets the bytes as another dtype of the same width.
    BitCast {
        to: DType,
    },
    /// Crops or zero-pads the given axes (all when `None`) to the sizes in input 1, centred.
    CenterCropPad {
        axes: Option<Vec<i64>>,
    },
    ReverseSequence {
        time_axis: i64,
        batch_axis: i64,
    },
    /// Outputs Y, indices, inverse_indices, counts (as many as the node asks for).
    Unique {
        axis: Option<i64>,
        sorted: bool,
    },
}

/// Runs `$body` with `$t` an unsigned integer type of the given byte size.
macro_rules! with_elem {
    ($size:expr, $t:ident => $body:expr) => {
        match $size {
            1 => {
                type $t = u8;
                $body
            }
            2 => {
                type $t = u16;
                $body
            }
            4 => {
                type $t = u32;
                $body
            }
            _ => {
                type $t = u64;
                $body
            }
        }
    };
}

/// Copies elements `out[i] = src[index(i)]` as raw element-size groups.
fn gather_elems(src: &Tensor, out_shape: &[usize], index: impl Fn(usize) -> usize) -> Result<Tensor> {
    let mut out = Tensor::zeros(src.dtype(), out_shape)?;
    let n = out.numel();
    let es = src.dtype().size();
    with_elem!(es, E => {
        let s: &[E] = bytemuck::cast_slice(src.bytes());
        let o: &mut [E] = bytemuck::cast_slice_mut(out.bytes_mut());
        for (i, v) in o.iter_mut().enumerate().take(n) {
            *v = s[index(i)];
        }
    });
    Ok(out)
}

/// Transposes a tensor by a permutation of its axes.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let r = x.rank();
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
        bail!("perm {perm:?} is not a permutation of {r} axes");
    }
    let in_strides = strides(x.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    // walk output in order, tracking the input offset
    let mut offs = Vec::with_capacity(x.numel());
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..x.numel() {
        offs.push(off);
        for d in (0..r).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
    gather_elems(x, &out_shape, |i| offs[i])
}

/// Transpose prepared for one input shape: the permutation simplified once by
/// [`floe_kernels::transpose::TransposePlan`], run on elements of `elem` bytes.
/// The shape a Slice gives `x` (fixed dims resolved; a symbolic dim kept when
/// sliced whole, else unknown). `None` when the spec is malformed (eval reports it).
fn sliced_shape(x: &Shape, starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Option<Shape> {
    let r = x.rank();
    if starts.len() != ends.len() {
        return None;
    }
    let mut out = x.0.clone();
    for i in 0..starts.len() {
        let a = norm_axis(*axes.map_or(Some(&(i as i64)), |ax| ax.get(i))?, r).ok()?;
        let step = steps.map_or(Some(1), |s| s.get(i).copied())?;
        out[a] = match &x.0[a] {
            Dim::Fixed(d) => Dim::Fixed(slice_axis(*d, starts[i], ends[i], step).ok()?.2),
            d if starts[i] == 0 && ends[i] >= i64::MAX / 2 && step == 1 => d.clone(),
            _ => Dim::Unknown,
        };
    }
    Some(Shape(out))
}

/// Concat of fixed-shape inputs of one dtype as row copies.
fn concat_kernel(axis: i64, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Option<Box<dyn Kernel>> {
    let dt = outputs.first()?.dtype?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(fixed_shape).collect::<Option<_>>()?;
    if inputs.iter().any(|i| i.fact.dtype != Some(dt)) {
        return None;
    }
    let axis = norm_axis(axis, shapes.first()?.len()).ok()?;
    Some(Box::new(super::block_copy::BlockCopy::concat(&shapes, axis, dt.size())?))
}

/// A Slice with constant bounds and step 1 along one axis, as row copies.
fn slice_kernel(
    starts: &Option<Vec<i64>>,
    ends: &Option<Vec<i64>>,
    axes: &Option<Vec<i64>>,
    inputs: &[InferInput<'_>],
    outputs: &[Fact],
) -> Option<Box<dyn Kernel>> {
    let konst = |i: usize| inputs.get(i).and_then(|x| x.value).and_then(|t| t.to_i64_vec().ok());
    let (starts, ends, axes, steps) = match (starts, ends) {
        (Some(s), Some(e)) => (s.clone(), e.clone(), axes.clone(), None),
        _ => (
            konst(1)?,
            konst(2)?,
            if inputs.len() > 3 && inputs[3].fact.dtype.is_some() { Some(konst(3)?) } else { None },
            if inputs.len() > 4 && inputs[4].fact.dtype.is_some() { Some(konst(4)?) } else { None },
        ),
    };
    let shape = fixed_shape(inputs.first()?)?;
    let dt = inputs[0].fact.dtype?;
    if starts.len() != 1
        || ends.len() != 1
        || steps.as_ref().is_some_and(|s| s != &[1])
        || outputs.first()?.dtype != Some(dt)
    {
        return None;
    }
    let axis = norm_axis(axes.as_ref().map_or(0, |a| a[0]), shape.len()).ok()?;
    let (start, _, count) = slice_axis(shape[axis], starts[0], ends[0], 1).ok()?;
    Some(Box::new(super::block_copy::BlockCopy::slice(&shape, axis, start as usize, count, dt.size())?))
}

struct TransposeKernel {
    plan: floe_kernels::transpose::TransposePlan,
    elem: usize,
}

impl Kernel for TransposeKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "data")?;
        let out = outputs.first_mut().ok_or_else(|| Error::Invalid("Transpose has no output to write".into()))?;
        let bytes = self.plan.len() * self.elem;
        if x.bytes().len() != bytes || out.bytes().len() != bytes {
            bail!(
                "Transpose was planned for {} elements of {} bytes, got input {:?} and output {:?}",
                self.plan.len(),
                self.elem,
                x.shape(),
                out.shape()
            );
        }
        let unaligned = |e| Error::Invalid(format!("Transpose cannot view the tensor bytes as elements: {e}"));
        with_elem!(self.elem, E => {
            let src: &[E] = bytemuck::try_cast_slice(x.bytes()).map_err(unaligned)?;
            let dst: &mut [E] = bytemuck::try_cast_slice_mut(out.bytes_mut()).map_err(unaligned)?;
            self.plan.run(src, dst);
        });
        Ok(())
    }
}

fn const_i64(inputs: &[Option<&Tensor>], i: usize) -> Result<Option<Vec<i64>>> {
    opt_input(inputs, i).map(|t| t.to_i64_vec()).transpose()
}

fn reshape_target(x: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total: usize = x.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 => {
                if infer_at.replace(i).is_some() {
                    bail!("Reshape shape {spec:?} has more than one -1");
                }
                out.push(1);
            }
            0 if !allowzero => out.push(
                *x.get(i)
                    .ok_or_else(|| Error::Shape(format!("Reshape: 0 at axis {i} but input has rank {}", x.len())))?,
            ),
            s if s < 0 => bail!("Reshape: invalid dim {s} in {spec:?}"),
            s => out.push(s as usize),
        }
    }
    if let Some(i) = infer_at {
        let known: usize = out.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &d)| d).product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::Shape(format!("cannot reshape {x:?} into {spec:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(Error::Shape(format!("cannot reshape {x:?} ({total} elements) into {spec:?}")));
    }
    Ok(out)
}

fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, shape.len())).collect::<Result<_>>()?;
            for &a in &ax {
                if shape[a] != 1 {
                    return Err(Error::Shape(format!("Squeeze axis {a} has size {}, not 1", shape[a])));
                }
            }
            Ok(shape.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, &d)| d).collect())
        }
    }
}

fn unsqueeze_axes(rank: usize, axes: &[i64]) -> Result<Vec<usize>> {
    let out_rank = rank + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, out_rank)).collect::<Result<_>>()?;
    ax.sort();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        bail!("Unsqueeze axes {axes:?} repeat");
    }
    Ok(ax)
}

fn unsqueeze_dims<D: Clone>(shape: &[D], ax: &[usize], one: D) -> Vec<D> {
    let mut out = Vec::with_capacity(shape.len() + ax.len());
    let mut it = shape.iter();
    for i in 0..shape.len() + ax.len() {
        if ax.contains(&i) {
            out.push(one.clone());
        } else if let Some(d) = it.next() {
            out.push(d.clone());
        }
    }
    out
}

/// Normalised slice parameters for one axis: (start, step, count).
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> Result<(i64, i64, usize)> {
    if step == 0 {
        bail!("Slice step cannot be 0");
    }
    let d = dim as i64;
    let clampf = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let (s, e) = if step > 0 {
        let s = if start < 0 { start.saturating_add(d) } else { start };
        let e = if end < 0 { end.saturating_add(d) } else { end };
        (clampf(s, 0, d), clampf(e, 0, d))
    } else {
        let s = if start < 0 { start.saturating_add(d) } else { start };
        let e = if end < 0 { end.saturating_add(d) } else { end };
        (clampf(s, -1, d - 1), clampf(e, -1, d - 1))
    };
    let count = if step > 0 {
        if e > s {
            ((e - s) + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        ((s - e) + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok((s, step, count as usize))
}

fn slice(x: &Tensor, starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Result<Tensor> {
    let r = x.rank();
    if starts.len() != ends.len() {
        bail!("Slice starts ({}) and ends ({}) differ in length", starts.len(), ends.len());
    }
    let mut st = vec![0i64; r];
    let mut sp = vec![1i64; r];
    let mut cnt: Vec<usize> = x.shape().to_vec();
    let mut seen = vec![false; r];
    for i in 0..starts.len() {
        let a = match axes {
            Some(ax) => {
                norm_axis(*ax.get(i).ok_or_else(|| Error::Invalid("Slice axes shorter than starts".into()))?, r)?
            }
            None => i,
        };
        if a >= r || std::mem::replace(&mut seen[a], true) {
            bail!("Slice axis {a} repeated or out of range");
        }
        let step = steps.map_or(Ok(1), |s| {
            s.get(i).copied().ok_or_else(|| Error::Invalid("Slice steps shorter than starts".into()))
        })?;
        let (s, stp, c) = slice_axis(x.shape()[a], starts[i], ends[i], step)?;
        st[a] = s;
        sp[a] = stp;
        cnt[a] = c;
    }
    let in_strides = strides(x.shape());
    let out_strides = strides(&cnt);
    gather_elems(x, &cnt, |i| {
        let mut off = 0i64;
        let mut rem = i;
        for d in 0..r {
            let k = (rem / out_strides[d]) as i64;
            rem %= out_strides[d];
            off += (st[d] + k * sp[d]) * in_strides[d] as i64;
        }
        off as usize
    })
}

fn concat(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::Invalid("Concat needs at least one input".into()))?;
    let r = first.rank();
    let a = norm_axis(axis, r)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[a] = 0;
    for x in xs {
        if x.rank() != r || x.dtype() != first.dtype() {
            bail!(
                "Concat inputs differ in rank or dtype: {:?} {} vs {:?} {}",
                x.shape(),
                x.dtype(),
                first.shape(),
                first.dtype()
            );
        }
        for d in 0..r {
            if d != a && x.shape()[d] != first.shape()[d] {
                return Err(Error::Shape(format!(
                    "Concat inputs {:?} and {:?} differ outside axis {a}",
                    x.shape(),
                    first.shape()
                )));
            }
        }
        out_shape[a] += x.shape()[a];
    }
    let mut out = Tensor::zeros(first.dtype(), &out_shape)?;
    let es = first.dtype().size();
    let outer: usize = out_shape[..a].iter().product();
    let inner: usize = out_shape[a + 1..].iter().product::<usize>() * es;
    let row = out_shape[a] * inner;
    let o = out.bytes_mut();
    let mut col = 0;
    for x in xs {
        let w = x.shape()[a] * inner;
        let b = x.bytes();
        for i in 0..outer {
            o[i * row + col..i * row + col + w].copy_from_slice(&b[i * w..(i + 1) * w]);
        }
        col += w;
    }
    Ok(out)
}

fn expand(x: &Tensor, shape: &[i64]) -> Result<Tensor> {
    let target: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let out_shape = broadcast_shapes(&[x.shape(), &target])?;
    let mut offs = Vec::with_capacity(out_shape.iter().product());
    for_each_offset(x.shape(), &out_shape, |_, o| offs.push(o));
    gather_elems(x, &out_shape, |i| offs[i])
}

fn tile(x: &Tensor, reps: &[i64]) -> Result<Tensor> {
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        bail!("Tile repeats {reps:?} do not match rank {}", x.rank());
    }
    let out_shape: Vec<usize> = x.shape().iter().zip(reps).map(|(&d, &r)| d * r as usize).collect();
    let os = strides(&out_shape);
    let is = strides(x.shape());
    let shp = x.shape().to_vec();
    gather_elems(x, &out_shape, |i| {
        let mut rem = i;
        let mut off = 0;
        for d in 0..shp.len() {
            let k = rem / os[d];
            rem %= os[d];
            off += (k % shp[d]) * is[d];
        }
        off
    })
}

fn pad(x: &Tensor, pads: &[i64], mode: PadMode, value: Option<&Tensor>, axes: Option<Vec<i64>>) -> Result<Tensor> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!("Pad: {} pads for {} axes", pads.len(), axes.len());
    }
    let mut before = vec![0i64; r];
    let mut after = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        before[a] = pads[i];
        after[a] = pads[i + axes.len()];
    }
    let out_shape: Vec<usize> = (0..r)
        .map(|d| {
            let n = x.shape()[d] as i64 + before[d] + after[d];
            if n < 0 {
                Err(Error::Shape(format!("Pad makes axis {d} negative")))
            } else {
                Ok(n as usize)
            }
        })
        .collect::<Result<_>>()?;
    if mode != PadMode::Constant && x.shape().iter().zip(&out_shape).any(|(&i, &o)| i == 0 && o > 0) {
        bail!("Pad mode {mode:?} needs a non-empty input");
    }
    // An extra element after the input holds the pad value (constant mode).
    let mut ext = Tensor::zeros(x.dtype(), &[x.numel() + 1])?;
    let es = x.dtype().size();
    ext.bytes_mut()[..x.bytes().len()].copy_from_slice(x.bytes());
    if let Some(v) = value {
        if v.numel() > 0 {
            ext.bytes_mut()[x.bytes().len()..].copy_from_slice(&v.bytes()[..es]);
        }
    }
    let fill = x.numel();
    let os = strides(&out_shape);
    let is = strides(x.shape());
    let ishape = x.shape().to_vec();
    gather_elems(&ext, &out_shape, |i| {
        let mut rem = i;
        let mut off = 0;
        for d in 0..r {
            let k = (rem / os[d]) as i64;
            rem %= os[d];
            let n = ishape[d] as i64;
            let mut j = k - before[d];
            if j < 0 || j >= n {
                match mode {
                    PadMode::Constant => return fill,
                    PadMode::Edge => j = j.clamp(0, n - 1),
                    PadMode::Wrap => j = j.rem_euclid(n),
                    PadMode::Reflect => {
                        if n == 1 {
                            j = 0;
                        } else {
                            let p = 2 * (n - 1);
                            j = j.rem_euclid(p);
                            if j >= n {
                                j = p - j;
                            }
                        }
                    }
                }
            }
            off += j as usize * is[d];
        }
        off
    })
}

fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    let dt = start.dtype();
    dispatch_numeric!(dt, T => {
        let s = start.as_slice::<T>()?.first().copied().ok_or_else(|| Error::Invalid("empty start".into()))?;
        let l = limit.as_slice::<T>()?.first().copied().ok_or_else(|| Error::Invalid("empty limit".into()))?;
        let d = delta.as_slice::<T>()?.first().copied().ok_or_else(|| Error::Invalid("empty delta".into()))?;
        let (sf, lf, df) = (s.to_f64(), l.to_f64(), d.to_f64());
        if df == 0.0 {
            bail!("Range delta is 0");
        }
        let n = ((lf - sf) / df).ceil().max(0.0);
        if n > 1e9 {
            bail!("Range would produce {n} elements");
        }
        let n = n as usize;
        let mut v = Vec::with_capacity(n);
        if dt.is_int() {
            let (si, di) = (s.to_i128(), d.to_i128());
            for i in 0..n {
                v.push(T::from_i128(si + di * i as i128));
            }
        } else {
            // Accumulate like the reference (start + i*delta in the element type).
            let mut acc = s;
            for _ in 0..n {
                v.push(acc);
                acc = T::from_f64(acc.to_f64() + df);
            }
        }
        Tensor::from_vec(&[n], v)
    }, bool => bail!("Range does not accept bool"))
}

fn trilu(x: &Tensor, k: i64, upper: bool) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 {
        bail!("Trilu needs rank >= 2");
    }
    let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
    let mut out = x.clone();
    let es = x.dtype().size();
    let o = out.bytes_mut();
    for (e, chunk) in o.chunks_mut(es).enumerate() {
        let j = (e % cols) as i64;
        let i = ((e / cols) % rows) as i64;
        let keep = if upper { j - i >= k } else { j - i <= k };
        if !keep {
            chunk.iter_mut().for_each(|b| *b = 0);
        }
    }
    Ok(out)
}

fn depth_to_space(x: &Tensor, b: usize, crd: bool) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || b == 0 || !s[1].is_multiple_of(b * b) {
        bail!("DepthToSpace needs NCHW with C divisible by blocksize^2");
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let t = if crd {
        let t = x.reshaped(&[n, c / (b * b), b, b, h, w])?;
        transpose(&t, &[0, 1, 4, 2, 5, 3])?
    } else {
        let t = x.reshaped(&[n, b, b, c / (b * b), h, w])?;
        transpose(&t, &[0, 3, 4, 1, 5, 2])?
    };
    t.reshaped(&[n, c / (b * b), h * b, w * b])
}

fn space_to_depth(x: &Tensor, b: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || b == 0 || !s[2].is_multiple_of(b) || !s[3].is_multiple_of(b) {
        bail!("SpaceToDepth needs NCHW with H and W divisible by blocksize");
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let t = x.reshaped(&[n, c, h / b, b, w / b, b])?;
    let t = transpose(&t, &[0, 3, 5, 1, 2, 4])?;
    t.reshaped(&[n, c * b * b, h / b, w / b])
}

fn one_hot(indices: &Tensor, depth: &Tensor, values: &Tensor, axis: i64) -> Result<Tensor> {
    let d = depth.to_f64_vec().first().copied().ok_or_else(|| Error::Invalid("empty depth".into()))? as i64;
    if d <= 0 {
        bail!("OneHot depth must be positive, got {d}");
    }
    let idx = indices.to_f64_vec();
    let r = indices.rank() + 1;
    let a = norm_axis(axis, r)?;
    let mut out_shape = indices.shape().to_vec();
    out_shape.insert(a, d as usize);
    let outer: usize = out_shape[..a].iter().product();
    let inner: usize = out_shape[a + 1..].iter().product();
    let es = values.dtype().size();
    if values.numel() < 2 {
        bail!("OneHot values must have 2 elements");
    }
    let vb = values.bytes();
    let mut out = Tensor::zeros(values.dtype(), &out_shape)?;
    let o = out.bytes_mut();
    for oi in 0..outer {
        for k in 0..d as usize {
            for ii in 0..inner {
                let mut ix = idx[oi * inner + ii] as i64;
                if ix < 0 {
                    ix += d;
                }
                let on = ix == k as i64;
                let pos = (oi * d as usize + k) * inner + ii;
                let src = if on { &vb[es..2 * es] } else { &vb[..es] };
                o[pos * es..(pos + 1) * es].copy_from_slice(src);
            }
        }
    }
    Ok(out)
}

fn nonzero(x: &Tensor) -> Result<Tensor> {
    let vals = x.to_f64_vec();
    let r = x.rank();
    let st = strides(x.shape());
    let nz: Vec<usize> = vals.iter().enumerate().filter(|(_, &v)| v != 0.0).map(|(i, _)| i).collect();
    let mut out = vec![0i64; r * nz.len()];
    for (j, &flat) in nz.iter().enumerate() {
        let mut rem = flat;
        for d in 0..r {
            out[d * nz.len() + j] = (rem / st[d]) as i64;
            rem %= st[d];
        }
    }
    Tensor::from_vec(&[r, nz.len()], out)
}

fn compress(x: &Tensor, cond: &Tensor, axis: Option<i64>) -> Result<Tensor> {
    let c: Vec<bool> = cond.to_f64_vec().into_iter().map(|v| v != 0.0).collect();
    let (x, a) = match axis {
        Some(a) => (x.clone(), norm_axis(a, x.rank())?),
        None => (x.reshaped(&[x.numel()])?, 0),
    };
    let keep: Vec<usize> = (0..x.shape()[a]).filter(|&i| c.get(i).copied().unwrap_or(false)).collect();
    let mut out_shape = x.shape().to_vec();
    out_shape[a] = keep.len();
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let n = x.shape()[a];
    gather_elems(&x, &out_shape, |i| {
        let ii = i % inner;
        let k = (i / inner) % keep.len().max(1);
        let oi = i / (inner * keep.len().max(1));
        let _ = outer;
        (oi * n + keep[k]) * inner + ii
    })
}

fn center_crop_pad(x: &Tensor, sizes: &[i64], axes: Option<&[i64]>) -> Result<Tensor> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if sizes.len() != axes.len() || sizes.iter().any(|&s| s < 0) {
        bail!("CenterCropPad: {} sizes for {} axes", sizes.len(), axes.len());
    }
    // For each axis: output offset of the copied window, input offset, and length.
    let mut out_shape = x.shape().to_vec();
    let mut src_off = vec![0usize; r];
    let mut dst_off = vec![0usize; r];
    let mut len = x.shape().to_vec();
    for (&a, &sz) in axes.iter().zip(sizes) {
        let (dim, sz) = (x.shape()[a], sz as usize);
        out_shape[a] = sz;
        if sz < dim {
            src_off[a] = (dim - sz) / 2;
            len[a] = sz;
        } else {
            dst_off[a] = (sz - dim) / 2;
        }
    }
    let mut ext = Tensor::zeros(x.dtype(), &[x.numel() + 1])?;
    ext.bytes_mut()[..x.bytes().len()].copy_from_slice(x.bytes());
    let (os, is, fill) = (strides(&out_shape), strides(x.shape()), x.numel());
    gather_elems(&ext, &out_shape, |i| {
        let mut rem = i;
        let mut off = 0;
        for d in 0..r {
            let k = rem / os[d];
            rem %= os[d];
            if k < dst_off[d] || k >= dst_off[d] + len[d] {
                return fill;
            }
            off += (k - dst_off[d] + src_off[d]) * is[d];
        }
        off
    })
}

fn reverse_sequence(x: &Tensor, lens: &[i64], time_axis: i64, batch_axis: i64) -> Result<Tensor> {
    let (t, b) = (norm_axis(time_axis, x.rank())?, norm_axis(batch_axis, x.rank())?);
    if t == b || lens.len() != x.shape()[b] {
        bail!("ReverseSequence: bad axes or {} sequence_lens for batch {}", lens.len(), x.shape()[b]);
    }
    let st = strides(x.shape());
    let shape = x.shape().to_vec();
    let max_t = shape[t] as i64;
    if lens.iter().any(|&l| l < 0 || l > max_t) {
        bail!("ReverseSequence: sequence_lens {lens:?} exceed the time axis ({max_t})");
    }
    gather_elems(x, &shape, |i| {
        let ti = (i / st[t]) % shape[t];
        let bi = (i / st[b]) % shape[b];
        let l = lens[bi] as usize;
        if ti < l {
            i - ti * st[t] + (l - 1 - ti) * st[t]
        } else {
            i
        }
    })
}

fn unique(x: &Tensor, axis: Option<i64>, sorted: bool) -> Result<Vec<Tensor>> {
    let (xf, a) = match axis {
        Some(a) => (x.clone(), norm_axis(a, x.rank())?),
        None => (x.reshaped(&[x.numel()])?, 0),
    };
    // Move the axis to the front so each slice is contiguous.
    let mut perm: Vec<usize> = (0..xf.rank()).collect();
    perm.remove(a);
    perm.insert(0, a);
    let moved = transpose(&xf, &perm)?;
    let n = moved.shape()[0];
    let per = moved.numel() / n.max(1);
    let vals = moved.to_f64_vec();
    let slice = |i: usize| &vals[i * per..(i + 1) * per];
    let cmp = |p: usize, q: usize| {
        slice(p)
            .iter()
            .zip(slice(q))
            .map(|(a, b)| a.total_cmp(b))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    // first occurrence of each distinct slice, in order of appearance
    let mut firsts: Vec<usize> = Vec::new();
    let mut inverse = Vec::with_capacity(n);
    for i in 0..n {
        match firsts.iter().position(|&f| cmp(f, i).is_eq()) {
            Some(k) => inverse.push(k),
            None => {
                inverse.push(firsts.len());
                firsts.push(i);
            }
        }
    }
    let mut order: Vec<usize> = (0..firsts.len()).collect();
    if sorted {
        order.sort_by(|&p, &q| cmp(firsts[p], firsts[q]));
    }
    let mut rank = vec![0usize; order.len()];
    for (pos, &k) in order.iter().enumerate() {
        rank[k] = pos;
    }
    let idx: Vec<i64> = order.iter().map(|&k| firsts[k] as i64).collect();
    let mut counts = vec![0i64; order.len()];
    for &k in &inverse {
        counts[rank[k]] += 1;
    }
    let inv: Vec<i64> = inverse.iter().map(|&k| rank[k] as i64).collect();
    let picked = {
        let mut shape = moved.shape().to_vec();
        shape[0] = idx.len();
        let es = moved.dtype().size() * per;
        let src = moved.bytes();
        let mut out = Tensor::zeros(moved.dtype(), &shape)?;
        let o = out.bytes_mut();
        for (j, &i) in idx.iter().enumerate() {
            o[j * es..(j + 1) * es].copy_from_slice(&src[i as usize * es..(i as usize + 1) * es]);
        }
        out
    };
    let mut inv_perm = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv_perm[p] = i;
    }
    let y = transpose(&picked, &inv_perm)?;
    let k = idx.len();
    Ok(vec![y, Tensor::from_vec(&[k], idx)?, Tensor::from_vec(&[n], inv)?, Tensor::from_vec(&[k], counts)?])
}

/// The target of a Reshape of a shape with symbolic dims: copied (0) and given
/// dims as they are, and a `-1` resolved when the input has one symbolic dim and
/// the fixed sizes on both sides say what the `-1` must be (`[1, T, 32]` with
/// `[1, -1, 4, 8]` is `[1, T, 4, 8]`).
fn symbolic_reshape(s: &crate::Shape, spec: &[i64], allowzero: bool) -> crate::Shape {
    let mut out: Vec<Dim> = spec
        .iter()
        .enumerate()
        .map(|(i, &d)| match d {
            0 if !allowzero => s.0.get(i).cloned().unwrap_or(Dim::Unknown),
            d if d > 0 => Dim::Fixed(d as usize),
            _ => Dim::Unknown,
        })
        .collect();
    let syms: Vec<&Dim> = s.0.iter().filter(|d| d.fixed().is_none()).collect();
    let hole: Vec<usize> = (0..spec.len()).filter(|&i| spec[i] == -1).collect();
    if let ([sym @ Dim::Sym(_)], [h]) = (syms.as_slice(), hole.as_slice()) {
        let fixed_in: usize = s.0.iter().filter_map(Dim::fixed).product();
        let others = out.iter().enumerate().filter(|&(i, _)| i != *h);
        let sym_kept = others.clone().any(|(_, d)| d == *sym);
        let unknown = others.clone().any(|(_, d)| d.fixed().is_none() && d != *sym);
        let fixed_out: usize = others.filter_map(|(_, d)| d.fixed()).product();
        if !unknown && fixed_out > 0 {
            if sym_kept && fixed_in.is_multiple_of(fixed_out) {
                out[*h] = Dim::Fixed(fixed_in / fixed_out);
            } else if !sym_kept && fixed_in == fixed_out {
                out[*h] = (*sym).clone();
            }
        }
    }
    crate::Shape(out)
}

impl LayoutOp {
    /// The value of `Shape`/`Size` for a fully known input shape (for folding).
    pub fn shape_of_fixed(&self, dims: &[usize]) -> Option<Tensor> {
        match self {
            LayoutOp::Shape { start, end } => {
                let r = dims.len() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let s = clampi(*start);
                let e = clampi(end.unwrap_or(r));
                let v: Vec<i64> = if s < e { dims[s..e].iter().map(|&d| d as i64).collect() } else { vec![] };
                Tensor::from_vec(&[v.len()], v).ok()
            }
            LayoutOp::Size => Some(Tensor::scalar(dims.iter().product::<usize>() as i64)),
            _ => None,
        }
    }
}

fn shape_of(f: &Fact) -> Option<&Shape> {
    f.shape.as_ref()
}

impl OpImpl for LayoutOp {
    fn is_view(&self) -> bool {
        use LayoutOp::*;
        matches!(self, Reshape { .. } | Squeeze { .. } | Unsqueeze { .. } | Flatten { .. } | Identity)
    }

    fn name(&self) -> &'static str {
        use LayoutOp::*;
        match self {
            Reshape { .. } => "Reshape",
            Transpose { .. } => "Transpose",
            Squeeze { .. } => "Squeeze",
            Unsqueeze { .. } => "Unsqueeze",
            Flatten { .. } => "Flatten",
            Concat { .. } => "Concat",
            Split { .. } => "Split",
            Slice { .. } => "Slice",
            Expand => "Expand",
            Tile => "Tile",
            Pad { .. } => "Pad",
            Identity => "Identity",
            Dropout => "Dropout",
            Shape { .. } => "Shape",
            Size => "Size",
            Cast { .. } => "Cast",
            CastLike => "CastLike",
            ConstantOfShape { .. } => "ConstantOfShape",
            Range => "Range",
            Trilu { .. } => "Trilu",
            DepthToSpace { .. } => "DepthToSpace",
            SpaceToDepth { .. } => "SpaceToDepth",
            OneHot { .. } => "OneHot",
            NonZero => "NonZero",
            EyeLike { .. } => "EyeLike",
            Compress { .. } => "Compress",
            BitCast { .. } => "BitCast",
            CenterCropPad { .. } => "CenterCropPad",
            ReverseSequence { .. } => "ReverseSequence",
            Unique { .. } => "Unique",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        use LayoutOp::*;
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let dt = x.dtype;
        let val = |i: usize| inputs.get(i).and_then(|x| x.value).map(|t| t.to_i64_vec()).transpose();
        let f = match self {
            Identity | Dropout => {
                let mut v = vec![x.clone()];
                if n > 1 {
                    v.push(Fact { dtype: Some(DType::Bool), shape: x.shape.clone() });
                }
                return Ok(v);
            }
            Cast { to } => Fact { dtype: Some(*to), shape: x.shape },
            CastLike => Fact { dtype: inputs.get(1).and_then(|i| i.fact.dtype), shape: x.shape },
            Shape { start, end } => {
                let len = shape_of(&x).map(|s| {
                    let r = s.rank() as i64;
                    let c = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
                    (c(end.unwrap_or(r)) - c(*start)).max(0) as usize
                });
                Fact { dtype: Some(DType::I64), shape: len.map(|l| crate::Shape::fixed(&[l])) }
            }
            Size => Fact::new(DType::I64, crate::Shape::fixed(&[])),
            Reshape { allowzero } => {
                let shape = match (val(1)?, shape_of(&x)) {
                    (Some(spec), Some(s)) => match s.as_fixed() {
                        Some(fixed) => Some(crate::Shape::fixed(&reshape_target(&fixed, &spec, *allowzero)?)),
                        None => Some(symbolic_reshape(s, &spec, *allowzero)),
                    },
                    (Some(spec), None) => Some(crate::Shape(
                        spec.iter().map(|&d| if d > 0 { Dim::Fixed(d as usize) } else { Dim::Unknown }).collect(),
                    )),
                    _ => None,
                };
                Fact { dtype: dt, shape }
            }
            Transpose { perm } => {
                let shape = shape_of(&x).map(|s| {
                    let p: Vec<usize> = perm.clone().unwrap_or_else(|| (0..s.rank()).rev().collect());
                    p.iter().map(|&i| s.0.get(i).cloned().unwrap_or(Dim::Unknown)).collect()
                });
                Fact { dtype: dt, shape: shape.map(crate::Shape) }
            }
            Unsqueeze { axes } => {
                let axes = match axes {
                    Some(a) => Some(a.clone()),
                    None => val(1)?,
                };
                let shape = match (axes, shape_of(&x)) {
                    (Some(a), Some(s)) => {
                        Some(crate::Shape(unsqueeze_dims(&s.0, &unsqueeze_axes(s.rank(), &a)?, Dim::Fixed(1))))
                    }
                    _ => None,
                };
                Fact { dtype: dt, shape }
            }
            Squeeze { axes } => {
                let axes = match axes {
                    Some(a) => Some(a.clone()),
                    None => val(1)?,
                };
                let shape = match (axes, shape_of(&x)) {
                    (Some(a), Some(s)) => {
                        let ax: Vec<usize> = a.iter().map(|&a| norm_axis(a, s.rank())).collect::<Result<_>>()?;
                        Some(crate::Shape(
                            s.0.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, d)| d.clone()).collect(),
                        ))
                    }
                    // Axes given as a runtime input: the output rank is unknown.
                    (None, Some(_)) if inputs.get(1).is_some_and(|i| i.fact.dtype.is_some()) => None,
                    (None, Some(s)) => s
                        .as_fixed()
                        .map(|f| crate::Shape::fixed(&f.into_iter().filter(|&d| d != 1).collect::<Vec<_>>())),
                    _ => None,
                };
                Fact { dtype: dt, shape }
            }
            Flatten { axis } => {
                let shape = shape_of(&x).and_then(|s| s.as_fixed()).map(|f| -> Result<crate::Shape> {
                    let a = if *axis < 0 { *axis + f.len() as i64 } else { *axis } as usize;
                    let a = a.min(f.len());
                    Ok(crate::Shape::fixed(&[f[..a].iter().product(), f[a..].iter().product()]))
                });
                Fact { dtype: dt, shape: shape.transpose()? }
            }
            Concat { axis } => {
                let shapes: Option<Vec<&crate::Shape>> = inputs.iter().map(|i| i.fact.shape.as_ref()).collect();
                let shape = shapes.and_then(|ss| {
                    let r = ss.first()?.rank();
                    let a = norm_axis(*axis, r).ok()?;
                    let mut out = ss[0].clone();
                    let mut total = Some(0usize);
                    for s in &ss {
                        if s.rank() != r {
                            return None;
                        }
                        total = total.and_then(|t| s.0[a].fixed().map(|d| t + d));
                    }
                    out.0[a] = total.map_or(Dim::Unknown, Dim::Fixed);
                    Some(out)
                });
                Fact { dtype: dt, shape }
            }
            ConstantOfShape { value } => {
                let shape = val(0)?.map(|v| crate::Shape(v.iter().map(|&d| Dim::Fixed(d.max(0) as usize)).collect()));
                Fact { dtype: Some(value.dtype()), shape }
            }
            Slice { starts, ends, axes } => {
                let spec = match (starts, ends) {
                    (Some(s), Some(e)) => Some((s.clone(), e.clone(), axes.clone(), None)),
                    _ => match (val(1)?, val(2)?) {
                        (Some(s), Some(e)) => {
                            let given = |i: usize| inputs.get(i).is_some_and(|x| x.fact.dtype.is_some());
                            let (a, st) = (val(3)?, val(4)?);
                            (given(3) == a.is_some() && given(4) == st.is_some()).then_some((s, e, a, st))
                        }
                        _ => None,
                    },
                };
                let shape = match (spec, shape_of(&x)) {
                    (Some((s, e, a, st)), Some(xs)) => sliced_shape(xs, &s, &e, a.as_deref(), st.as_deref()),
                    _ => None,
                };
                Fact { dtype: dt, shape }
            }
            Range => Fact { dtype: dt, shape: None },
            NonZero => Fact { dtype: Some(DType::I64), shape: None },
            EyeLike { dtype, .. } => Fact { dtype: dtype.or(dt), shape: x.shape },
            OneHot { .. } => Fact { dtype: inputs.get(2).and_then(|i| i.fact.dtype), shape: None },
            Trilu { .. } => x.clone(),
            _ => Fact { dtype: dt, shape: None },
        };
        Ok(vec![f; n.max(1)])
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        match self {
            LayoutOp::Concat { axis } => return Ok(concat_kernel(*axis, inputs, outputs)),
            LayoutOp::Slice { starts, ends, axes } => return Ok(slice_kernel(starts, ends, axes, inputs, outputs)),
            _ => {}
        }
        let LayoutOp::Transpose { perm } = self else { return Ok(None) };
        let (Some(x), [out]) = (inputs.first(), outputs) else { return Ok(None) };
        let (Some(shape), Some(dt)) = (fixed_shape(x), x.fact.dtype) else { return Ok(None) };
        if out.dtype != Some(dt) || ![1, 2, 4, 8].contains(&dt.size()) {
            return Ok(None);
        }
        let p = perm.clone().unwrap_or_else(|| (0..shape.len()).rev().collect());
        // An invalid perm is left to eval, which reports it.
        let Some(plan) = floe_kernels::transpose::TransposePlan::new(&shape, &p) else { return Ok(None) };
        Ok(Some(Box::new(TransposeKernel { plan, elem: dt.size() })))
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        use LayoutOp::*;
        let x = || input(inputs, 0, "data");
        let out = match self {
            Identity => x()?.clone(),
            Dropout => {
                let x = x()?;
                let training = opt_input(inputs, 2)
                    .map(|t| t.to_f64_vec().first().copied().unwrap_or(0.0) != 0.0)
                    .unwrap_or(false);
                let ratio = opt_input(inputs, 1).and_then(|t| t.to_f64_vec().first().copied()).unwrap_or(0.5);
                if training && ratio > 0.0 {
                    return Err(Error::Unsupported(
                        "Dropout in training mode (random masks) is not supported for inference".into(),
                    ));
                }
                let mut v = vec![x.clone()];
                if ctx.n_outputs > 1 {
                    v.push(Tensor::from_bools(x.shape(), &vec![true; x.numel()])?);
                }
                return Ok(v);
            }
            Reshape { allowzero } => {
                let x = x()?;
                let spec = input(inputs, 1, "shape")?.to_i64_vec()?;
                x.reshaped(&reshape_target(x.shape(), &spec, *allowzero)?)?
            }
            Transpose { perm } => {
                let x = x()?;
                let p = perm.clone().unwrap_or_else(|| (0..x.rank()).rev().collect());
                transpose(x, &p)?
            }
            Squeeze { axes } => {
                let x = x()?;
                let a = match axes {
                    Some(a) => Some(a.clone()),
                    None => const_i64(inputs, 1)?,
                };
                x.reshaped(&squeeze_shape(x.shape(), a.as_deref())?)?
            }
            Unsqueeze { axes } => {
                let x = x()?;
                let a = match axes {
                    Some(a) => a.clone(),
                    None => input(inputs, 1, "axes")?.to_i64_vec()?,
                };
                let ax = unsqueeze_axes(x.rank(), &a)?;
                x.reshaped(&unsqueeze_dims(x.shape(), &ax, 1))?
            }
            Flatten { axis } => {
                let x = x()?;
                let r = x.rank() as i64;
                let a = if *axis < 0 { axis + r } else { *axis };
                if a < 0 || a > r {
                    bail!("Flatten axis {axis} out of range for rank {r}");
                }
                let a = a as usize;
                x.reshaped(&[x.shape()[..a].iter().product(), x.shape()[a..].iter().product()])?
            }
            Concat { axis } => {
                let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
                concat(&xs, *axis)?
            }
            Split { axis, split, num_outputs } => {
                let x = x()?;
                let a = norm_axis(*axis, x.rank())?;
                let dim = x.shape()[a];
                let sizes: Vec<usize> = match split.clone().map(Some).unwrap_or(const_i64(inputs, 1)?) {
                    Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
                    None => {
                        let k = num_outputs.unwrap_or(ctx.n_outputs).max(1);
                        let chunk = dim.div_ceil(k);
                        (0..k).map(|i| chunk.min(dim.saturating_sub(i * chunk))).collect()
                    }
                };
                if sizes.iter().sum::<usize>() != dim {
                    return Err(Error::Shape(format!("Split sizes {sizes:?} do not sum to axis size {dim}")));
                }
                let mut outs = Vec::with_capacity(sizes.len());
                let mut start = 0i64;
                for s in sizes {
                    let end = start + s as i64;
                    outs.push(slice(x, &[start], &[end], Some(&[a as i64]), None)?);
                    start = end;
                }
                return Ok(outs);
            }
            Slice { starts, ends, axes } => {
                let x = x()?;
                match (starts, ends) {
                    (Some(s), Some(e)) => slice(x, s, e, axes.as_deref(), None)?,
                    _ => {
                        let s = input(inputs, 1, "starts")?.to_i64_vec()?;
                        let e = input(inputs, 2, "ends")?.to_i64_vec()?;
                        let a = const_i64(inputs, 3)?;
                        let st = const_i64(inputs, 4)?;
                        slice(x, &s, &e, a.as_deref(), st.as_deref())?
                    }
                }
            }
            Expand => expand(x()?, &input(inputs, 1, "shape")?.to_i64_vec()?)?,
            Tile => tile(x()?, &input(inputs, 1, "repeats")?.to_i64_vec()?)?,
            Pad { mode, pads, value } => {
                let x = x()?;
                let p = match pads {
                    Some(p) => p.clone(),
                    None => input(inputs, 1, "pads")?.to_i64_vec()?,
                };
                let v = match opt_input(inputs, 2) {
                    Some(v) => Some(v.clone()),
                    None if *value != 0.0 => Some(
                        dispatch_numeric!(x.dtype(), T => Tensor::scalar(T::from_f64(*value as f64)), bool => Tensor::from_bools(&[], &[*value != 0.0])?),
                    ),
                    None => None,
                };
                pad(x, &p, *mode, v.as_ref(), const_i64(inputs, 3)?)?
            }
            Shape { .. } | Size => self.shape_of_fixed(x()?.shape()).ok_or_else(|| Error::Invalid("shape".into()))?,
            Cast { to } => x()?.cast(*to)?,
            CastLike => x()?.cast(input(inputs, 1, "target_type")?.dtype())?,
            ConstantOfShape { value } => {
                let dims = input(inputs, 0, "shape")?.to_i64_vec()?;
                if dims.iter().any(|&d| d < 0) {
                    bail!("ConstantOfShape: negative dim in {dims:?}");
                }
                let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
                let n = crate::tensor::checked_numel(&shape)?;
                let es = value.dtype().size();
                let mut out = Tensor::zeros(value.dtype(), &shape)?;
                let v = &value.bytes()[..es];
                if v.iter().any(|&b| b != 0) {
                    for c in out.bytes_mut().chunks_mut(es).take(n) {
                        c.copy_from_slice(v);
                    }
                }
                out
            }
            Range => range(input(inputs, 0, "start")?, input(inputs, 1, "limit")?, input(inputs, 2, "delta")?)?,
            Trilu { upper } => {
                let k = const_i64(inputs, 1)?.and_then(|v| v.first().copied()).unwrap_or(0);
                trilu(x()?, k, *upper)?
            }
            DepthToSpace { blocksize, crd } => depth_to_space(x()?, *blocksize, *crd)?,
            SpaceToDepth { blocksize } => space_to_depth(x()?, *blocksize)?,
            OneHot { axis } => {
                one_hot(input(inputs, 0, "indices")?, input(inputs, 1, "depth")?, input(inputs, 2, "values")?, *axis)?
            }
            NonZero => nonzero(x()?)?,
            EyeLike { dtype, k } => {
                let x = x()?;
                if x.rank() != 2 {
                    bail!("EyeLike needs a 2-D input");
                }
                let dt = dtype.unwrap_or(x.dtype());
                let (r, c) = (x.shape()[0], x.shape()[1]);
                let mut out = Tensor::zeros(dt, &[r, c])?;
                let one =
                    dispatch_numeric!(dt, T => Tensor::scalar(T::one()), bool => Tensor::from_bools(&[], &[true])?);
                let es = dt.size();
                let ob = out.bytes_mut();
                for i in 0..r {
                    let j = i as i64 + k;
                    if j >= 0 && (j as usize) < c {
                        let p = (i * c + j as usize) * es;
                        ob[p..p + es].copy_from_slice(one.bytes());
                    }
                }
                out
            }
            Compress { axis } => compress(x()?, input(inputs, 1, "condition")?, *axis)?,
            BitCast { to } => {
                let x = x()?;
                if to.size() != x.dtype().size() {
                    bail!("BitCast from {} to {to}: widths differ", x.dtype());
                }
                let mut out = Tensor::from_bytes(*to, x.shape(), x.bytes())?;
                if *to == DType::Bool {
                    out.bytes_mut().iter_mut().for_each(|b| *b = (*b != 0) as u8);
                }
                out
            }
            CenterCropPad { axes } => {
                center_crop_pad(x()?, &input(inputs, 1, "shape")?.to_i64_vec()?, axes.as_deref())?
            }
            ReverseSequence { time_axis, batch_axis } => {
                reverse_sequence(x()?, &input(inputs, 1, "sequence_lens")?.to_i64_vec()?, *time_axis, *batch_axis)?
            }
            Unique { axis, sorted } => {
                let mut outs = unique(x()?, *axis, *sorted)?;
                outs.truncate(ctx.n_outputs.max(1));
                return Ok(outs);
            }
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exec::{Bindings, SessionOptions};
    use crate::graph::Graph;
    use crate::ops::Op;
    use crate::{Plan, Session};
    use std::sync::Arc;

    /// A small deterministic generator for test inputs (xorshift64).
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }

        /// Uniform in [-4, 4).
        pub fn f32(&mut self) -> f32 {
            self.below(1 << 24) as f32 / (1 << 21) as f32 - 4.0
        }

        pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
            let n = shape.iter().product();
            Tensor::from_vec(shape, (0..n).map(|_| self.f32()).collect::<Vec<f32>>()).unwrap()
        }
    }

    /// Plans `op` alone on a model input shaped like `xs[0]` (`consts` as the
    /// further inputs), asserts that the plan runs a prepared kernel, then runs one
    /// session on each of `xs` in turn (so later runs write into buffers holding
    /// the earlier results) and pairs every output with `op.eval`'s.
    pub(crate) fn planned_vs_eval(
        op: Op,
        xs: &[Tensor],
        consts: &[Option<Tensor>],
        n_out: usize,
    ) -> Vec<(Tensor, Tensor)> {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(xs[0].dtype(), Shape::fixed(xs[0].shape())));
        g.inputs = vec![x];
        let mut ins = vec![Some(x)];
        for (i, c) in consts.iter().enumerate() {
            ins.push(c.clone().map(|t| g.add_const(format!("c{i}"), t)));
        }
        let outs: Vec<usize> = (0..n_out).map(|i| g.add_value(format!("y{i}"), Fact::unknown())).collect();
        g.add_node("op", op.clone(), ins, outs.clone());
        g.outputs = outs;
        let plan = Arc::new(Plan::new(&g, &Bindings::default()).unwrap());
        assert_eq!(plan.kernel_coverage(), (1, 1), "{} on {:?} has no prepared kernel", op.name(), xs[0].shape());
        let mut session = Session::with_options(plan, SessionOptions { threads: 1 });
        let mut pairs = Vec::new();
        for x in xs {
            // Deep copies: holding the session's tensors would stop it reusing them.
            let got: Vec<Tensor> = session
                .run_borrowed(std::slice::from_ref(x), |_, _| {})
                .unwrap()
                .iter()
                .map(|t| Tensor::from_bytes(t.dtype(), t.shape(), t.bytes()).unwrap())
                .collect();
            let mut args = vec![Some(x)];
            args.extend(consts.iter().map(Option::as_ref));
            let want = op.eval(&EvalCtx { n_outputs: n_out }, &args).unwrap();
            assert_eq!(got.len(), want.len());
            pairs.extend(got.into_iter().zip(want));
        }
        pairs
    }

    /// Same dtype and shape, and values within `tol` (absolute, or relative for
    /// values above 1).
    pub(crate) fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
        assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()), "{what}");
        for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}: element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn transpose_kernel_matches_eval_for_random_shapes_perms_and_widths() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for case in 0..60 {
            let rank = 1 + case % 6;
            let shape: Vec<usize> = (0..rank)
                .map(|_| if rng.below(4) == 0 { 1 } else { 1 + rng.below(if rank > 3 { 5 } else { 19 }) })
                .collect();
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            let n: usize = shape.iter().product();
            let dt = [DType::F32, DType::U8, DType::F16, DType::I64][case % 4];
            let xs: Vec<Tensor> = (0..2)
                .map(|_| {
                    let bytes: Vec<u8> = (0..n * dt.size()).map(|_| rng.below(256) as u8).collect();
                    Tensor::from_bytes(dt, &shape, &bytes).unwrap()
                })
                .collect();
            // perm None is the reversal
            let op = LayoutOp::Transpose { perm: (case % 7 != 0).then(|| perm.clone()) };
            for (got, want) in planned_vs_eval(op.into(), &xs, &[], 1) {
                assert_eq!((got.dtype(), got.shape(), got.bytes()), (want.dtype(), want.shape(), want.bytes()));
            }
        }
    }

    #[test]
    fn transpose_matches_hand_computed() {
        let x = Tensor::from_slice(&[2, 3], &[1i32, 2, 3, 4, 5, 6]).unwrap();
        let t = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn negative_step_slice_reverses() {
        let x = Tensor::from_slice(&[5], &[0i64, 1, 2, 3, 4]).unwrap();
        let s = slice(&x, &[-1], &[i64::MIN], None, Some(&[-2])).unwrap();
        assert_eq!(s.as_slice::<i64>().unwrap(), &[4, 2, 0]);
    }

    #[test]
    fn reflect_pad_mirrors_without_edge() {
        let x = Tensor::from_slice(&[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let p = pad(&x, &[2, 2], PadMode::Reflect, None, None).unwrap();
        assert_eq!(p.as_slice::<f32>().unwrap(), &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn reshape_infers_minus_one_and_copies_zero() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
    }
}
