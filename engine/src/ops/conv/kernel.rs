//! The prepared f32 convolution: geometry, the im2col map (compressed into
//! contiguous runs) and the weights, packed for the GEMM, are fixed at plan time. A 1x1 stride-1 conv
//! multiplies the input directly; other convs copy the input rows their windows
//! read into a per-thread column buffer (runs of `copy_from_slice`, one gather
//! per element only when strides break the runs) and run one GEMM per group with
//! bias and activation fused into its store. Depthwise convs (one channel per
//! group) skip the GEMM: each kernel tap is an axpy over the output row.

use super::{check_ranks, ConvAttrs, Window, PAD};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::fused::FusedActivation;
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::tensor::Tensor;
use floe_kernels::gemm::{self, Activation, BSource, Bias, Epilogue, MatRef, MicroKernel, PackedA};
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A piece of one im2col row: `len` outputs starting at `dst` read the input
/// plane from `src` on (or are padding).
#[derive(Clone, Copy, Debug)]
struct Run {
    dst: u32,
    len: u32,
    src: Option<u32>,
}

/// How the columns of one input plane are formed.
enum Cols {
    /// The input plane is the column matrix (1x1, stride 1, no padding).
    Direct,
    /// Per kernel offset, the runs of its row.
    Runs(Vec<Vec<Run>>),
    /// Per kernel offset and output, the input offset or [`PAD`].
    Gather(Vec<usize>),
}

struct ConvKernel {
    batch: usize,
    c: usize,
    m: usize,
    group: usize,
    /// Kernel positions and output positions per plane; input plane size.
    nk: usize,
    no: usize,
    sp: usize,
    cols: Cols,
    weights: Vec<f32>,
    /// Per group, the `[M/group, C/group * kernel]` weights packed for `gemm` once
    /// (empty for depthwise convs, which read `weights`).
    packed: Vec<PackedA>,
    gemm: MicroKernel,
    bias: Vec<f32>,
    activation: Activation,
    depthwise: bool,
}

/// Splits each kernel offset's row of the im2col map into contiguous runs.
fn runs(idx: &[usize], nk: usize, no: usize) -> Vec<Vec<Run>> {
    (0..nk)
        .map(|k| {
            let row = &idx[k * no..(k + 1) * no];
            let mut out: Vec<Run> = Vec::new();
            for (o, &i) in row.iter().enumerate() {
                let src = (i != PAD).then_some(i as u32);
                if let Some(last) = out.last_mut() {
                    let extends = match (last.src, src) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a + last.len == b,
                        _ => false,
                    };
                    if extends {
                        last.len += 1;
                        continue;
                    }
                }
                out.push(Run { dst: o as u32, len: 1, src });
            }
            out
        })
        .collect()
}

pub(super) fn prepare(
    a: &ConvAttrs,
    act: FusedActivation,
    inputs: &[InferInput<'_>],
) -> Result<Option<Box<dyn Kernel>>> {
    let f32_fact = |i: usize| inputs.get(i).is_some_and(|x| x.fact.dtype == Some(DType::F32));
    if !f32_fact(0) || !f32_fact(1) {
        return Ok(None);
    }
    let (Some(xs), Some(ws)) = (fixed_shape(&inputs[0]), fixed_shape(&inputs[1])) else { return Ok(None) };
    let Some(w) = inputs[1].value else { return Ok(None) };
    let (group, kernel) = check_ranks("Conv", &xs, &ws, a, "[M, C/group, kernel...]")?;
    let (batch, c, m) = (xs[0], xs[1], ws[0]);
    if c != ws[1] * group || m % group != 0 {
        return Ok(None); // eval reports the mismatch
    }
    let win = Window::new(&xs[2..], kernel, a, false)?;
    let nk: usize = kernel.iter().product();
    let no: usize = win.out.iter().product();
    let sp: usize = xs[2..].iter().product();
    if [nk, no, sp].iter().any(|&v| v > u32::MAX as usize / 2) {
        return Ok(None);
    }
    let Some(bias) = super::constant_bias(inputs, m)? else { return Ok(None) };
    let idx = win.im2col_index(&xs[2..])?;
    let cols = if nk == 1 && no == sp && idx.iter().enumerate().all(|(i, &v)| v == i) {
        Cols::Direct
    } else {
        let r = runs(&idx, nk, no);
        let pieces: usize = r.iter().map(Vec::len).sum();
        if pieces * 4 <= nk * no {
            Cols::Runs(r)
        } else {
            Cols::Gather(idx)
        }
    };
    let depthwise = group == c && m == c && !matches!(cols, Cols::Direct);
    let weights = w.as_slice::<f32>()?.to_vec();
    let gemm = gemm::selected();
    let (mg, kg) = (m / group, (c / group) * nk);
    let packed = if depthwise {
        Vec::new()
    } else {
        (0..group)
            .map(|gi| {
                let mut p = PackedA::default();
                p.repack(gemm, MatRef::new(&weights[gi * mg * kg..(gi + 1) * mg * kg], mg, kg));
                p
            })
            .collect()
    };
    Ok(Some(Box::new(ConvKernel {
        batch,
        c,
        m,
        group,
        nk,
        no,
        sp,
        cols,
        weights,
        packed,
        gemm,
        bias,
        activation: act.kernel(),
        depthwise,
    })))
}

impl ConvKernel {
    /// Writes the `nk x no` column block of one input plane into `dst`.
    fn plane_cols(&self, src: &[f32], dst: &mut [f32]) {
        match &self.cols {
            Cols::Direct => dst.copy_from_slice(src),
            Cols::Runs(rows) => {
                for (k, row) in rows.iter().enumerate() {
                    let out = &mut dst[k * self.no..(k + 1) * self.no];
                    for r in row {
                        let d = &mut out[r.dst as usize..(r.dst + r.len) as usize];
                        match r.src {
                            Some(s) => d.copy_from_slice(&src[s as usize..(s + r.len) as usize]),
                            // Padding runs are usually a frame or two: no memset call.
                            None if r.len <= 4 => d.iter_mut().for_each(|x| *x = 0.0),
                            None => d.fill(0.0),
                        }
                    }
                }
            }
            Cols::Gather(idx) => {
                for (d, &i) in dst.iter_mut().zip(idx) {
                    *d = if i == PAD { 0.0 } else { src[i] };
                }
            }
        }
    }

    /// One channel of a depthwise conv: `out = act(bias + sum_k w[k] * shifted input)`.
    fn depthwise_plane(&self, src: &[f32], w: &[f32], bias: f32, out: &mut [f32], tmp: &mut [f32]) {
        tmp.fill(bias);
        match &self.cols {
            Cols::Runs(rows) => {
                for (row, &wk) in rows.iter().zip(w) {
                    for r in row.iter().filter(|r| r.src.is_some()) {
                        let s = r.src.unwrap_or(0) as usize;
                        let d = &mut tmp[r.dst as usize..(r.dst + r.len) as usize];
                        d.iter_mut().zip(&src[s..s + r.len as usize]).for_each(|(o, &x)| *o += wk * x);
                    }
                }
            }
            Cols::Gather(idx) => {
                for (row, &wk) in idx.chunks_exact(self.no).zip(w) {
                    for (o, &i) in tmp.iter_mut().zip(row) {
                        if i != PAD {
                            *o += wk * src[i];
                        }
                    }
                }
            }
            Cols::Direct => unreachable!("a direct conv is not run as depthwise"),
        }
        self.activation.apply(tmp, out);
    }
}

impl Kernel for ConvKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = inputs.first().copied().flatten().ok_or_else(|| Error::Invalid("missing input X".into()))?;
        let x = x.as_slice::<f32>()?;
        let out = outputs[0].as_mut_slice::<f32>()?;
        let (c, m, g, nk, no, sp) = (self.c, self.m, self.group, self.nk, self.no, self.sp);
        if x.len() != self.batch * c * sp || out.len() != self.batch * m * no {
            return Err(Error::Shape("Conv input or output size differs from the plan".into()));
        }
        let (cg, mg) = (c / g, m / g);
        SCRATCH.with_borrow_mut(|scratch| {
            if self.depthwise {
                scratch.resize(no, 0.0);
                for (xb, ob) in x.chunks_exact(c * sp).zip(out.chunks_exact_mut(m * no)) {
                    for ch in 0..c {
                        let w = &self.weights[ch * nk..(ch + 1) * nk];
                        let dst = &mut ob[ch * no..(ch + 1) * no];
                        self.depthwise_plane(&xb[ch * sp..(ch + 1) * sp], w, self.bias[ch], dst, scratch);
                    }
                }
                return;
            }
            let direct = matches!(self.cols, Cols::Direct);
            if !direct {
                scratch.resize(cg * nk * no, 0.0);
            }
            for (xb, ob) in x.chunks_exact(c * sp).zip(out.chunks_exact_mut(m * no)) {
                for gi in 0..g {
                    let xg = &xb[gi * cg * sp..(gi + 1) * cg * sp];
                    let cols = if direct {
                        MatRef::new(xg, cg, sp)
                    } else {
                        for ci in 0..cg {
                            self.plane_cols(
                                &xg[ci * sp..(ci + 1) * sp],
                                &mut scratch[ci * nk * no..(ci + 1) * nk * no],
                            );
                        }
                        MatRef::new(&scratch[..cg * nk * no], cg * nk, no)
                    };
                    let epi = Epilogue {
                        bias: Bias::Rows(&self.bias[gi * mg..(gi + 1) * mg]),
                        activation: self.activation,
                        residual: None,
                    };
                    let dst = &mut ob[gi * mg * no..(gi + 1) * mg * no];
                    gemm::sgemm_a_packed(self.gemm, 1.0, &self.packed[gi], BSource::Mat(cols), 0.0, dst, &epi);
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::{AutoPad, ConvOp};
    use crate::ops::layout::tests::{planned_vs_eval, Rng};

    /// `relu?(b[o] + sum_{c, j} w[o, c, j] * x[c, t * stride + j - pad])` in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv1d(x: &[f32], w: &[f32], b: &[f32], c: usize, m: usize, k: usize, pad: usize, relu: bool) -> Vec<f64> {
        let t = x.len() / c;
        let out = t + 2 * pad - k + 1;
        let mut y = vec![0.0; m * out];
        for o in 0..m {
            for i in 0..out {
                let mut acc = b[o] as f64;
                for ci in 0..c {
                    for j in 0..k {
                        let at = (i + j) as i64 - pad as i64;
                        if at >= 0 && (at as usize) < t {
                            acc += w[(o * c + ci) * k + j] as f64 * x[ci * t + at as usize] as f64;
                        }
                    }
                }
                y[o * out + i] = if relu { acc.max(0.0) } else { acc };
            }
        }
        y
    }

    #[test]
    fn prepared_convs_match_a_naive_conv() {
        let mut rng = Rng(0x0c0f_fee5);
        // (channels in, out, frames, kernel, pad, relu): the keyword CNN's two layers
        // (32 outputs by 47 and 23 frames) and ragged tile edges.
        for (c, m, t, k, pad, relu) in
            [(40, 32, 49, 3, 0, true), (32, 32, 23, 3, 1, true), (5, 16, 70, 5, 2, false), (3, 40, 9, 3, 1, true)]
        {
            let attrs = ConvAttrs {
                auto_pad: AutoPad::NotSet,
                dilations: vec![],
                group: 1,
                kernel_shape: vec![k],
                pads: vec![pad, pad],
                strides: vec![],
            };
            let activation = if relu { FusedActivation::Relu } else { FusedActivation::None };
            let w = rng.tensor(&[m, c, k]);
            let b = rng.tensor(&[m]);
            let xs = [rng.tensor(&[1, c, t]), rng.tensor(&[1, c, t])];
            let op = ConvOp::ConvAct { attrs, activation };
            let pairs = planned_vs_eval(op.into(), &xs, &[Some(w.clone()), Some(b.clone())], 1);
            for (x, (got, _)) in xs.iter().zip(&pairs) {
                let want = naive_conv1d(
                    x.as_slice::<f32>().unwrap(),
                    w.as_slice::<f32>().unwrap(),
                    b.as_slice::<f32>().unwrap(),
                    c,
                    m,
                    k,
                    pad,
                    relu,
                );
                let got = got.as_slice::<f32>().unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "c {c} m {m} t {t} k {k} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }
}
