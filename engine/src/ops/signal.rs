//! Signal processing: DFT (forward, inverse, one-sided), STFT, the Hann / Hamming /
//! Blackman windows and MelWeightMatrix, as keyword spotters and speech front ends
//! export them. Reference: ONNX spec DFT-17/20, STFT-17, *Window-17,
//! MelWeightMatrix-17 and onnx/reference/ops/op_{dft,stft,mel_weight_matrix}.py.
//!
//! Complex tensors are real tensors with a trailing dim of 2 (re, im); a trailing
//! dim of 1 is a real signal. The transform is a direct O(n^2) sum in f64 here;
//! an FFT kernel replaces it without changing these semantics.

use super::{input, norm_axis, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::shape::Fact;
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};
use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SignalOp {
    /// `axis` from the attribute (opset 17) or input 2 (opset 20).
    Dft {
        inverse: bool,
        onesided: bool,
        axis: Option<i64>,
    },
    Stft {
        onesided: bool,
    },
    Window {
        kind: WindowKind,
        periodic: bool,
        dtype: DType,
    },
    MelWeightMatrix {
        dtype: DType,
    },
}

fn scalar_i64(t: &Tensor, what: &str) -> Result<i64> {
    match t.to_i64_vec()?.as_slice() {
        [v] => Ok(*v),
        _ => bail!("{what} must be a scalar, got shape {:?}", t.shape()),
    }
}

fn make<T: Element>(shape: &[usize], v: &[f64]) -> Result<Tensor> {
    Tensor::from_vec(shape, v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>())
}

fn to_dtype(dt: DType, shape: &[usize], v: &[f64]) -> Result<Tensor> {
    dispatch_float!(dt, T => make::<T>(shape, v), _ => {
        let t = make::<f64>(shape, v)?;
        t.cast(dt)
    })
}

/// Complex DFT along `axis` of `z` (shape `s`, complex values). Returns the
/// transformed values and the output length along `axis`.
fn dft_axis(
    z: &[(f64, f64)],
    s: &[usize],
    axis: usize,
    len: usize,
    inverse: bool,
    onesided: bool,
) -> (Vec<(f64, f64)>, usize) {
    let outer: usize = s[..axis].iter().product();
    let n = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let out_len = if onesided && !inverse { len / 2 + 1 } else { len };
    let mut out = vec![(0.0, 0.0); outer * out_len * inner];
    let sign = if inverse { 1.0 } else { -1.0 };
    let scale = if inverse { 1.0 / len as f64 } else { 1.0 };
    let mut buf = vec![(0.0f64, 0.0f64); len];
    for o in 0..outer {
        for i in 0..inner {
            buf.iter_mut().for_each(|b| *b = (0.0, 0.0));
            if inverse && onesided {
                // Hermitian completion of a one-sided spectrum (numpy irfft).
                let half = len / 2 + 1;
                for (k, b) in buf.iter_mut().enumerate().take(half.min(n)) {
                    *b = z[(o * n + k) * inner + i];
                }
                for k in 1..len.div_ceil(2) {
                    let (re, im) = buf[k];
                    buf[len - k] = (re, -im);
                }
                buf[0].1 = 0.0;
                if len.is_multiple_of(2) && len / 2 < buf.len() {
                    buf[len / 2].1 = 0.0;
                }
            } else {
                for (t, b) in buf.iter_mut().enumerate().take(n.min(len)) {
                    *b = z[(o * n + t) * inner + i];
                }
            }
            for k in 0..out_len {
                let (mut re, mut im) = (0.0, 0.0);
                for (t, &(xr, xi)) in buf.iter().enumerate() {
                    let ang = sign * 2.0 * PI * ((k * t) % len) as f64 / len as f64;
                    let (sn, cs) = ang.sin_cos();
                    re += xr * cs - xi * sn;
                    im += xr * sn + xi * cs;
                }
                out[(o * out_len + k) * inner + i] = (re * scale, im * scale);
            }
        }
    }
    (out, out_len)
}

/// Splits a `[..., 1|2]` tensor into complex values and the leading shape.
/// Complex values with the shape they are laid out in.
type Complex = (Vec<(f64, f64)>, Vec<usize>);

fn complex_of(x: &Tensor) -> Result<Complex> {
    let c = *x.shape().last().unwrap_or(&0);
    if x.rank() < 2 || !(c == 1 || c == 2) {
        bail!("signal must end in a dim of 1 (real) or 2 (complex), got shape {:?}", x.shape());
    }
    let v = x.to_f64_vec();
    let z = if c == 1 { v.iter().map(|&r| (r, 0.0)).collect() } else { v.chunks(2).map(|p| (p[0], p[1])).collect() };
    Ok((z, x.shape()[..x.rank() - 1].to_vec()))
}

fn dft(x: &Tensor, len: Option<&Tensor>, axis: i64, inverse: bool, onesided: bool) -> Result<Tensor> {
    let (z, s) = complex_of(x)?;
    let a = norm_axis(axis, x.rank())?;
    if a >= s.len() {
        bail!("DFT axis {axis} points at the complex dim");
    }
    let n = s[a];
    let len = match len {
        Some(t) => scalar_i64(t, "dft_length")?,
        None if inverse && onesided => 2 * (n as i64 - 1),
        None => n as i64,
    };
    if len <= 0 || len > 1 << 20 {
        bail!("dft_length {len} is out of range");
    }
    let (out, out_len) = dft_axis(&z, &s, a, len as usize, inverse, onesided);
    let mut shape = s.clone();
    shape[a] = out_len;
    if inverse && onesided {
        shape.push(1);
        let v: Vec<f64> = out.iter().map(|c| c.0).collect();
        return to_dtype(x.dtype(), &shape, &v);
    }
    shape.push(2);
    let v: Vec<f64> = out.iter().flat_map(|c| [c.0, c.1]).collect();
    to_dtype(x.dtype(), &shape, &v)
}

fn stft(
    x: &Tensor,
    step: &Tensor,
    window: Option<&Tensor>,
    frame_len: Option<&Tensor>,
    onesided: bool,
) -> Result<Tensor> {
    let (z, s) = complex_of(x)?;
    if s.len() != 2 {
        bail!("STFT signal must be [batch, length, 1|2], got {:?}", x.shape());
    }
    let (batch, len) = (s[0], s[1]);
    let step = scalar_i64(step, "frame_step")?;
    let flen = match (frame_len, window) {
        (Some(f), _) => scalar_i64(f, "frame_length")?,
        (None, Some(w)) => w.numel() as i64,
        (None, None) => len as i64,
    };
    if step <= 0 || flen <= 0 || flen as usize > len {
        bail!("STFT frame_step {step} / frame_length {flen} do not fit a signal of length {len}");
    }
    let (step, flen) = (step as usize, flen as usize);
    let w: Vec<f64> = match window {
        Some(w) => w.to_f64_vec(),
        None => vec![1.0; flen],
    };
    if w.len() != flen {
        bail!("STFT window has {} values, frame_length is {flen}", w.len());
    }
    let frames = 1 + (len - flen) / step;
    let bins = if onesided { flen / 2 + 1 } else { flen };
    let mut out = Vec::with_capacity(batch * frames * bins * 2);
    for b in 0..batch {
        for f in 0..frames {
            let frame: Vec<(f64, f64)> = (0..flen)
                .map(|t| {
                    let (r, i) = z[b * len + f * step + t];
                    (r * w[t], i * w[t])
                })
                .collect();
            let (spec, _) = dft_axis(&frame, &[flen], 0, flen, false, onesided);
            out.extend(spec.iter().flat_map(|c| [c.0, c.1]));
        }
    }
    to_dtype(x.dtype(), &[batch, frames, bins, 2], &out)
}

fn window(kind: WindowKind, size: &Tensor, periodic: bool, dtype: DType) -> Result<Tensor> {
    let n = scalar_i64(size, "size")?;
    if !(0..=1 << 24).contains(&n) {
        bail!("window size {n} is out of range");
    }
    let n = n as usize;
    let denom = if periodic { n as f64 } else { n as f64 - 1.0 };
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let x = 2.0 * PI * i as f64 / denom;
            match kind {
                WindowKind::Hann => (PI * i as f64 / denom).sin().powi(2),
                WindowKind::Hamming => 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * x.cos(),
                WindowKind::Blackman => 0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos(),
            }
        })
        .collect();
    to_dtype(dtype, &[n], &v)
}

fn mel_weight_matrix(inputs: &[Option<&Tensor>], dtype: DType) -> Result<Tensor> {
    let num_mel = scalar_i64(input(inputs, 0, "num_mel_bins")?, "num_mel_bins")?;
    let dft_len = scalar_i64(input(inputs, 1, "dft_length")?, "dft_length")?;
    let rate = scalar_i64(input(inputs, 2, "sample_rate")?, "sample_rate")?;
    let lo = input(inputs, 3, "lower_edge_hertz")?.to_f64_vec().first().copied().unwrap_or(0.0);
    let hi = input(inputs, 4, "upper_edge_hertz")?.to_f64_vec().first().copied().unwrap_or(0.0);
    if num_mel <= 0 || dft_len <= 0 || rate <= 0 || num_mel > 1 << 16 || dft_len > 1 << 24 {
        bail!("MelWeightMatrix: num_mel_bins {num_mel}, dft_length {dft_len}, sample_rate {rate} out of range");
    }
    let (nm, nspec) = (num_mel as usize, dft_len as usize / 2 + 1);
    let mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let (lm, hm) = (mel(lo), mel(hi));
    let step = (hm - lm) / (nm + 2) as f64;
    let bins: Vec<i64> = (0..nm + 2)
        .map(|i| {
            let hz = 700.0 * (10f64.powf((i as f64 * step + lm) / 2595.0) - 1.0);
            (((dft_len + 1) as f64 * hz) / rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0.0; nspec * nm];
    let mut set = |j: i64, i: usize, v: f64| -> Result<()> {
        if j < 0 || j as usize >= nspec {
            bail!("MelWeightMatrix: band edge {j} outside {nspec} spectrogram bins");
        }
        out[j as usize * nm + i] = v;
        Ok(())
    };
    for i in 0..nm {
        let (l, c, h) = (bins[i], bins[i + 1], bins[i + 2]);
        if c - l == 0 {
            set(c, i, 1.0)?;
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64)?;
            }
        }
        if h - c > 0 {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64)?;
            }
        }
    }
    to_dtype(dtype, &[nspec, nm], &out)
}

impl OpImpl for SignalOp {
    fn name(&self) -> &'static str {
        match self {
            SignalOp::Dft { .. } => "DFT",
            SignalOp::Stft { .. } => "STFT",
            SignalOp::Window { kind: WindowKind::Hann, .. } => "HannWindow",
            SignalOp::Window { kind: WindowKind::Hamming, .. } => "HammingWindow",
            SignalOp::Window { kind: WindowKind::Blackman, .. } => "BlackmanWindow",
            SignalOp::MelWeightMatrix { .. } => "MelWeightMatrix",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let dt = match self {
            SignalOp::Window { dtype, .. } | SignalOp::MelWeightMatrix { dtype } => Some(*dtype),
            _ => inputs.first().and_then(|i| i.fact.dtype),
        };
        Ok(vec![Fact::dtype_only_opt(dt)])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let out = match self {
            SignalOp::Dft { inverse, onesided, axis } => {
                let x = input(inputs, 0, "input")?;
                let axis = match axis {
                    Some(a) => *a,
                    None => opt_input(inputs, 2).map(|t| scalar_i64(t, "axis")).transpose()?.unwrap_or(-2),
                };
                dft(x, opt_input(inputs, 1), axis, *inverse, *onesided)?
            }
            SignalOp::Stft { onesided } => stft(
                input(inputs, 0, "signal")?,
                input(inputs, 1, "frame_step")?,
                opt_input(inputs, 2),
                opt_input(inputs, 3),
                *onesided,
            )?,
            SignalOp::Window { kind, periodic, dtype } => window(*kind, input(inputs, 0, "size")?, *periodic, *dtype)?,
            SignalOp::MelWeightMatrix { dtype } => mel_weight_matrix(inputs, *dtype)?,
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dft_of_impulse_is_flat_and_inverse_restores_it() {
        let x = Tensor::from_slice(&[1, 4, 1], &[1.0f32, 0.0, 0.0, 0.0]).unwrap();
        let y = dft(&x, None, 1, false, false).unwrap();
        assert_eq!(y.shape(), &[1, 4, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let back = dft(&y, None, 1, true, false).unwrap();
        let v = back.as_slice::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && v[2..].iter().all(|x| x.abs() < 1e-6));
    }

    #[test]
    fn periodic_hann_window_matches_formula() {
        let w = window(WindowKind::Hann, &Tensor::scalar(4i64), true, DType::F32).unwrap();
        // sin^2(pi n / 4) = 0, 0.5, 1, 0.5
        let v = w.as_slice::<f32>().unwrap();
        for (a, b) in v.iter().zip([0.0, 0.5, 1.0, 0.5]) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
