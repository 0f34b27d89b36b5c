//! The prepared channels-last 1-D convolution (f32, one group, no dilation).
//!
//! With X `[N, T, C]` row-major, output frame `t` reads input rows
//! `t * stride .. t * stride + k`: `k * C` contiguous floats. So the whole conv
//! is `Y[t, m] = sum_p A[t, p] * B[p, m]` with A the input viewed with row stride
//! `stride * C` (rows overlap; the GEMM reads them in place) and B the weights
//! reordered to `[(tap, channel), M]` and packed once at plan time. Bias and
//! activation run in the GEMM's store. Padded frames come from a per-thread copy
//! of the input with zero rows around it.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::conv::{ConvAttrs, Window};
use crate::ops::fused::FusedActivation;
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::shape::Fact;
use crate::tensor::Tensor;
use floe_kernels::gemm::{self, Activation, Bias, Epilogue, MatRef, PackedB};
use std::cell::RefCell;

thread_local! {
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

struct ConvNwcKernel {
    batch: usize,
    /// Input frames and channels, output frames.
    t: usize,
    c: usize,
    t_out: usize,
    stride: usize,
    /// Zero frames before the input, and frames the padded copy holds.
    pad_begin: usize,
    rows: usize,
    taps: usize,
    /// `[taps * C, M]` packed for the selected GEMM.
    weights: PackedB,
    bias: Vec<f32>,
    activation: Activation,
}

/// The kernel when X is f32 `[N, T, C]` with fixed shape, W a constant
/// `[M, C, k]`, the bias constant or absent, one group and no dilation.
pub(super) fn prepare(
    a: &ConvAttrs,
    act: FusedActivation,
    inputs: &[InferInput<'_>],
    outputs: &[Fact],
) -> Result<Option<Box<dyn Kernel>>> {
    let f32_fact = |i: usize| inputs.get(i).is_some_and(|x| x.fact.dtype == Some(DType::F32));
    if !f32_fact(0) || !f32_fact(1) || outputs.len() != 1 {
        return Ok(None);
    }
    let (Some(xs), Some(w)) = (fixed_shape(&inputs[0]), inputs[1].value) else { return Ok(None) };
    let ws = w.shape();
    if xs.len() != 3 || ws.len() != 3 || a.group.max(1) != 1 || ws[1] != xs[2] {
        return Ok(None); // eval handles (or reports) every other case
    }
    let (batch, t, c, m, taps) = (xs[0], xs[1], xs[2], ws[0], ws[2]);
    if !a.kernel_shape.is_empty() && a.kernel_shape != [taps] {
        return Ok(None);
    }
    let win = Window::new(&[t], &[taps], a, false)?;
    if win.dil[0] != 1 || m == 0 || c == 0 {
        return Ok(None);
    }
    let t_out = win.out[0];
    if outputs[0].shape.as_ref().and_then(|s| s.as_fixed()) != Some(vec![batch, t_out, m]) {
        return Ok(None);
    }
    let Some(bias) = crate::ops::conv::constant_bias(inputs, m)? else { return Ok(None) };
    let w = w.as_slice::<f32>()?;
    // B[(j, ci), mo] = W[mo, ci, j]
    let mut b = vec![0f32; taps * c * m];
    for mo in 0..m {
        for ci in 0..c {
            for j in 0..taps {
                b[(j * c + ci) * m + mo] = w[(mo * c + ci) * taps + j];
            }
        }
    }
    let weights = PackedB::new(gemm::selected(), MatRef::new(&b, taps * c, m));
    let needed = if t_out == 0 { 0 } else { (t_out - 1) * win.stride[0] + taps };
    Ok(Some(Box::new(ConvNwcKernel {
        batch,
        t,
        c,
        t_out,
        stride: win.stride[0],
        pad_begin: win.pad_begin[0],
        rows: needed.max(win.pad_begin[0] + t),
        taps,
        weights,
        bias,
        activation: act.kernel(),
    })))
}

impl ConvNwcKernel {
    /// True if every window lies inside the input (A is X itself).
    fn in_place(&self) -> bool {
        self.pad_begin == 0 && self.rows <= self.t
    }

    fn frames(&self, src: &[f32], out: &mut [f32]) {
        let (c, k) = (self.c, self.taps * self.c);
        let a = MatRef { data: src, rows: self.t_out, cols: k, row_stride: self.stride * c, col_stride: 1 };
        let epi = Epilogue { bias: Bias::Cols(&self.bias), activation: self.activation, residual: None };
        gemm::sgemm_packed(1.0, a, &self.weights, 0.0, out, &epi);
    }
}

impl Kernel for ConvNwcKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = inputs.first().copied().flatten().ok_or_else(|| Error::Invalid("missing input X".into()))?;
        let x = x.as_slice::<f32>()?;
        let out = outputs.first_mut().ok_or_else(|| Error::Invalid("Conv has no output to write".into()))?;
        let out = out.as_mut_slice::<f32>()?;
        let (plane, out_plane) = (self.t * self.c, self.t_out * self.weights.n());
        if x.len() != self.batch * plane || out.len() != self.batch * out_plane {
            return Err(Error::Shape("channels-last Conv input or output size differs from the plan".into()));
        }
        if self.t_out == 0 {
            return Ok(());
        }
        if self.in_place() {
            for (xb, ob) in x.chunks_exact(plane).zip(out.chunks_exact_mut(out_plane)) {
                self.frames(xb, ob);
            }
            return Ok(());
        }
        PADDED.with_borrow_mut(|buf| {
            let (c, body) = (self.c, self.pad_begin * self.c);
            buf.resize(self.rows * c, 0.0);
            // the buffer is shared with other convs: zero this one's padding rows
            buf[..body].fill(0.0);
            buf[body + plane..].fill(0.0);
            for (xb, ob) in x.chunks_exact(plane).zip(out.chunks_exact_mut(out_plane)) {
                buf[body..body + plane].copy_from_slice(xb);
                self.frames(buf, ob);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::channels_last::ChannelsLastOp;
    use crate::ops::conv::{AutoPad, ConvAttrs, ConvOp};
    use crate::ops::fused::FusedActivation;
    use crate::ops::layout::tests::{assert_close, planned_vs_eval, Rng};
    use crate::ops::Op;
    use crate::tensor::Tensor;

    /// `act(b[o] + sum_{c, j} w[o, c, j] * x[t * stride + j - pad, c])` in f64, X `[T, C]`.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        c: usize,
        m: usize,
        k: usize,
        pads: (usize, usize),
        stride: usize,
    ) -> Vec<f64> {
        let t = x.len() / c;
        let out = (t + pads.0 + pads.1 - k) / stride + 1;
        let mut y = vec![0.0; out * m];
        for i in 0..out {
            for o in 0..m {
                let mut acc = b[o] as f64;
                for j in 0..k {
                    let at = (i * stride + j) as i64 - pads.0 as i64;
                    if at >= 0 && (at as usize) < t {
                        for ci in 0..c {
                            acc += w[(o * c + ci) * k + j] as f64 * x[at as usize * c + ci] as f64;
                        }
                    }
                }
                y[i * m + o] = acc;
            }
        }
        y
    }

    #[test]
    fn prepared_channels_last_convs_match_a_naive_conv_and_eval() {
        let mut rng = Rng(0x5eed_c0de);
        // (C, M, T, k, pads, stride, relu, batch): the keyword CNN's layers, ragged
        // M, strides that leave a tail, windows inside the input (read in place),
        // a kernel wider than the input
        let cases = [
            (40, 32, 49, 3, (1, 1), 1, true, 1),
            (32, 32, 24, 3, (1, 1), 1, true, 1),
            (5, 13, 30, 5, (2, 0), 2, false, 2),
            (3, 40, 9, 3, (0, 0), 1, true, 1),
            (7, 17, 4, 7, (3, 3), 1, false, 1),
            (6, 8, 20, 4, (0, 0), 3, false, 2),
        ];
        for (c, m, t, k, pads, stride, relu, batch) in cases {
            let attrs = ConvAttrs {
                auto_pad: AutoPad::NotSet,
                dilations: vec![],
                group: 1,
                kernel_shape: vec![k],
                pads: vec![pads.0, pads.1],
                strides: vec![stride],
            };
            let activation = if relu { FusedActivation::Relu } else { FusedActivation::None };
            let op = ChannelsLastOp { inner: Box::new(Op::Conv(ConvOp::ConvAct { attrs, activation })) };
            let (w, b) = (rng.tensor(&[m, c, k]), rng.tensor(&[m]));
            let xs = [rng.tensor(&[batch, t, c]), rng.tensor(&[batch, t, c])];
            let pairs = planned_vs_eval(op.into(), &xs, &[Some(w.clone()), Some(b.clone())], 1);
            for (x, (got, want)) in xs.iter().zip(&pairs) {
                let what = format!("C {c} M {m} T {t} k {k} pads {pads:?} stride {stride}");
                assert_close(got, want, 1e-4, &format!("{what} vs eval"));
                let x = x.as_slice::<f32>().unwrap();
                let mut naive_all = Vec::new();
                for xb in x.chunks_exact(t * c) {
                    let y = naive(xb, w.as_slice().unwrap(), b.as_slice().unwrap(), c, m, k, pads, stride);
                    naive_all.extend(y.into_iter().map(|v| if relu { v.max(0.0) } else { v } as f32));
                }
                let naive_t = Tensor::from_vec(got.shape(), naive_all).unwrap();
                assert_close(got, &naive_t, 1e-4, &format!("{what} vs naive"));
            }
        }
    }
}
