//! Prepared channels-last pools (f32): 1-D MaxPool / AveragePool over `[N, T, C]`
//! and GlobalAveragePool / GlobalMaxPool over `[N, spatial..., C]`. Every window
//! tap is a whole row of `C` channels, so each tap is one vector pass over a
//! contiguous row (the channels-first kernels walk strided planes instead).
//!
//! The reductions match the channels-first kernels in `ops/pool.rs`: a max keeps
//! its first tap and replaces it only by a greater value (a NaN propagates only
//! when it comes first); a global max skips NaN (`f32::max`); averages sum in f64.

use crate::bail;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::conv::Window;
use crate::ops::pool::{PoolKind, PoolOp};
use crate::ops::{fixed_shape, input, InferInput, Kernel};
use crate::shape::Fact;
use crate::tensor::Tensor;

/// Channels summed at once, in registers or on the stack.
const BLOCK: usize = 64;

/// One output frame: the input frames its window reads, and (for averages) the
/// divisor.
#[derive(Clone, Copy, Debug)]
struct Frame {
    first: usize,
    count: usize,
    divisor: usize,
}

struct WindowKernel {
    batch: usize,
    t: usize,
    c: usize,
    dil: usize,
    frames: Vec<Frame>,
    average: bool,
}

struct GlobalKernel {
    batch: usize,
    positions: usize,
    c: usize,
    max: bool,
}

pub(super) fn prepare(op: &PoolOp, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
    let (Some(x), [out]) = (inputs.first(), outputs) else { return Ok(None) };
    let Some(xs) = fixed_shape(x) else { return Ok(None) };
    let f32_io = x.fact.dtype == Some(DType::F32) && out.dtype == Some(DType::F32);
    if !f32_io || xs.len() < 3 || xs.contains(&0) {
        return Ok(None);
    }
    let (batch, c) = (xs[0], xs[xs.len() - 1]);
    match op {
        PoolOp::GlobalAverage | PoolOp::GlobalMax => {
            let positions = xs[1..xs.len() - 1].iter().product();
            Ok(Some(Box::new(GlobalKernel { batch, positions, c, max: matches!(op, PoolOp::GlobalMax) })))
        }
        PoolOp::Pool { kind, attrs, ceil_mode, .. } if xs.len() == 3 => {
            let average = match kind {
                PoolKind::Max => None,
                PoolKind::Average { count_include_pad } => Some(*count_include_pad),
                PoolKind::Lp { .. } => return Ok(None),
            };
            let t = xs[1];
            let g = Window::new(&[t], &attrs.kernel_shape, attrs, *ceil_mode)?;
            if out.shape.as_ref().and_then(|s| s.as_fixed()) != Some(vec![batch, g.out[0], c]) {
                return Ok(None);
            }
            let (k, s, d, pb) = (g.kernel[0], g.stride[0], g.dil[0], g.pad_begin[0] as i64);
            let frames = (0..g.out[0])
                .map(|o| {
                    let taps = (0..k).map(|j| (o * s + j * d) as i64 - pb);
                    let inside: Vec<usize> =
                        taps.clone().filter(|&p| p >= 0 && (p as usize) < t).map(|p| p as usize).collect();
                    // with ceil_mode a window may reach past the end padding: those
                    // positions are neither input nor padding
                    let padded = taps.filter(|&p| p < (t + g.pad_end[0]) as i64).count();
                    let divisor = if average == Some(true) { padded } else { inside.len() };
                    Frame { first: inside.first().copied().unwrap_or(0), count: inside.len(), divisor }
                })
                .collect();
            Ok(Some(Box::new(WindowKernel { batch, t, c, dil: d, frames, average: average.is_some() })))
        }
        _ => Ok(None),
    }
}

fn io<'a>(inputs: &[Option<&'a Tensor>], outputs: &'a mut [Tensor]) -> Result<(&'a [f32], &'a mut [f32])> {
    let x = input(inputs, 0, "X")?.as_slice::<f32>()?;
    let y = outputs.first_mut().ok_or_else(|| Error::Invalid("no output to write".into()))?;
    Ok((x, y.as_mut_slice::<f32>()?))
}

impl Kernel for WindowKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (x, y) = io(inputs, outputs)?;
        let (plane, out_plane) = (self.t * self.c, self.frames.len() * self.c);
        if x.len() != self.batch * plane || y.len() != self.batch * out_plane {
            bail!(
                "planned for {} x {} frames of {} channels, got input {} and output {}",
                self.batch,
                self.t,
                self.c,
                x.len(),
                y.len()
            );
        }
        let c = self.c;
        for (src, dst) in x.chunks_exact(plane).zip(y.chunks_exact_mut(out_plane)) {
            for (f, row) in self.frames.iter().zip(dst.chunks_exact_mut(c)) {
                let tap = |i: usize| &src[(f.first + i * self.dil) * c..][..c];
                if f.count == 0 {
                    // a window entirely in padding, as the channels-first kernel gives
                    row.fill(if self.average { 0.0 } else { f32::NEG_INFINITY });
                } else if self.average {
                    let n = f.divisor.max(1) as f64;
                    for (b, out) in row.chunks_mut(BLOCK).enumerate() {
                        let mut acc = [0f64; BLOCK];
                        for i in 0..f.count {
                            let v = &tap(i)[b * BLOCK..][..out.len()];
                            acc.iter_mut().zip(v).for_each(|(a, &v)| *a += v as f64);
                        }
                        out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = (a / n) as f32);
                    }
                } else {
                    row.copy_from_slice(tap(0));
                    for i in 1..f.count {
                        row.iter_mut().zip(tap(i)).for_each(|(o, &v)| *o = if v > *o { v } else { *o });
                    }
                }
            }
        }
        Ok(())
    }
}

impl Kernel for GlobalKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (x, y) = io(inputs, outputs)?;
        let (c, plane) = (self.c, self.positions * self.c);
        if x.len() != self.batch * plane || y.len() != self.batch * c {
            bail!(
                "planned for {} x {} positions of {} channels, got input {} and output {}",
                self.batch,
                self.positions,
                c,
                x.len(),
                y.len()
            );
        }
        for (src, row) in x.chunks_exact(plane).zip(y.chunks_exact_mut(c)) {
            if self.max {
                row.fill(f32::NEG_INFINITY);
                for r in src.chunks_exact(c) {
                    row.iter_mut().zip(r).for_each(|(o, &v)| *o = o.max(v));
                }
            } else {
                // f32 partial sums over runs of 64 positions, folded in f64: the
                // vector adds stay f32 over short runs, far below output rounding
                let n = self.positions as f64;
                for (b, out) in row.chunks_mut(BLOCK).enumerate() {
                    let mut acc = [0f64; BLOCK];
                    for run in src.chunks(64 * c) {
                        let mut part = [0f32; BLOCK];
                        for r in run.chunks_exact(c) {
                            part.iter_mut().zip(&r[b * BLOCK..][..out.len()]).for_each(|(p, &v)| *p += v);
                        }
                        acc.iter_mut().zip(&part).for_each(|(a, &p)| *a += p as f64);
                    }
                    out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = (a / n) as f32);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::channels_last::ChannelsLastOp;
    use crate::ops::conv::{AutoPad, ConvAttrs};
    use crate::ops::layout::tests::{planned_vs_eval, Rng};
    use crate::ops::pool::{PoolKind, PoolOp};
    use crate::ops::Op;
    use crate::tensor::Tensor;

    fn same(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.shape(), want.shape(), "{what}");
        for (i, (a, b)) in got.as_slice::<f32>().unwrap().iter().zip(want.as_slice::<f32>().unwrap()).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * b.abs().max(1.0);
            assert!(ok, "{what}: element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn channels_last_pools_match_eval_including_nan_padding_and_ceil_mode() {
        let mut rng = Rng(0x9001);
        let max = PoolKind::Max;
        let avg = |count_include_pad| PoolKind::Average { count_include_pad };
        // (kind, k, stride, dilation, pads, ceil_mode, T, C, batch)
        let cases = [
            (max, 2, 2, 1, (0, 0), false, 49, 32, 1),
            (max, 2, 2, 1, (0, 0), false, 24, 32, 1),
            (max, 3, 1, 1, (1, 1), false, 10, 70, 2),
            (max, 3, 2, 2, (0, 0), true, 12, 5, 1),
            (avg(true), 3, 2, 1, (1, 1), false, 11, 67, 1),
            (avg(false), 3, 2, 1, (1, 2), true, 11, 3, 2),
            (avg(false), 4, 1, 1, (0, 0), false, 9, 129, 1),
        ];
        for (kind, k, stride, dil, pads, ceil_mode, t, c, batch) in cases {
            let attrs = ConvAttrs {
                auto_pad: AutoPad::NotSet,
                dilations: vec![dil],
                group: 1,
                kernel_shape: vec![k],
                pads: vec![pads.0, pads.1],
                strides: vec![stride],
            };
            let pool = PoolOp::Pool { kind, attrs, ceil_mode, storage_order: 0 };
            let op = ChannelsLastOp { inner: Box::new(Op::Pool(pool)) };
            let mut xs = [rng.tensor(&[batch, t, c]), rng.tensor(&[batch, t, c])];
            // NaN first in one window, later in another
            let v = xs[1].as_mut_slice::<f32>().unwrap();
            v[0] = f32::NAN;
            v[3 * c + 1] = f32::NAN;
            for (got, want) in planned_vs_eval(op.into(), &xs, &[], 1) {
                same(&got, &want, &format!("{kind:?} k {k} s {stride} d {dil} pads {pads:?} ceil {ceil_mode}"));
            }
        }
        for global in [PoolOp::GlobalAverage, PoolOp::GlobalMax] {
            for shape in [[1, 12, 32], [2, 200, 70]] {
                let op = ChannelsLastOp { inner: Box::new(Op::Pool(global.clone())) };
                let xs = [rng.tensor(&shape)];
                for (got, want) in planned_vs_eval(op.into(), &xs, &[], 1) {
                    same(&got, &want, &format!("{global:?} {shape:?}"));
                }
            }
        }
    }
}
