//! Attention and RotaryEmbedding: the reference (exact, unfused) semantics of the
//! ONNX ops `Attention`-23/24 and `RotaryEmbedding`-23.
//!
//! Reference: ONNX operator spec (onnx.ai/onnx/operators/onnx__Attention.html and
//! onnx__RotaryEmbedding.html) and its numpy reference implementation
//! (`onnx/reference/ops/op_attention.py`, `op_rotary_embedding.py`).
//!
//! Everything is computed in f64 and rounded to the output dtype once at the end,
//! so this file is the yardstick a fused, tiled kernel is measured against, not a
//! fast path. Per batch `b` and query head `h` (GQA: key/value head `h / (Hq/Hkv)`):
//!
//! ```text
//! S = scale * Q Kᵀ            (scale defaults to 1/sqrt(head_size))
//! S = softcap * tanh(S / softcap)     if softcap > 0
//! S = S + bias                (attn_mask, causal, nonpad_kv_seqlen; masked = -inf)
//! Y = softmax_rows(S) V       (max subtracted per row)
//! ```
//!
//! A row whose every key is masked has no defined softmax; like the ONNX reference,
//! it comes out as NaN.

mod kernel;
mod knn;

pub use knn::{knn_attention, KnnCache, KnnConfig, KnnShapes};

use super::{input, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_float};

/// What the optional fourth output of `Attention` (`qk_matmul_output`) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QkOutput {
    /// 0: the scaled product `scale * Q Kᵀ`. This follows the spec text; the numpy
    /// reference (onnx 1.22) returns the softcapped scores here when softcap is on.
    Raw,
    /// 1: after softcap (equal to `Raw` when softcap is off).
    Softcapped,
    /// 2: after softcap and the attention bias (mask, causal, padding).
    Biased,
    /// 3: the softmax probabilities.
    Softmax,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum AttentionOp {
    /// ONNX `Attention`. Inputs: Q, K, V, attn_mask?, past_key?, past_value?,
    /// nonpad_kv_seqlen? (opset 24). Outputs: Y, present_key?, present_value?,
    /// qk_matmul_output?.
    Attention {
        is_causal: bool,
        /// Required for 3-D inputs (`[B, L, heads * head_size]`); checked against
        /// the heads dim of 4-D inputs when given.
        q_num_heads: Option<usize>,
        kv_num_heads: Option<usize>,
        /// `None`: `1 / sqrt(head_size)`.
        scale: Option<f32>,
        /// Off when `<= 0`.
        softcap: f32,
        qk_output: QkOutput,
    },
    /// ONNX `RotaryEmbedding`. Inputs: X, cos_cache, sin_cache, position_ids?.
    RotaryEmbedding {
        interleaved: bool,
        /// Required for 3-D inputs.
        num_heads: Option<usize>,
        /// `None`: rotate the whole head.
        rotary_dim: Option<usize>,
    },
    /// IceFormer k-NN attention (`knn.rs`), the approximate replacement of an
    /// `Attention` that the `lower_knn_attention` pass puts in when asked. Inputs: Q,
    /// K, V, nonpad_kv_seqlen?, past_key?, past_value?. Outputs: Y, present_key?,
    /// present_value?. Masks: `is_causal` and key padding only. With a KV cache the
    /// node keeps its indexes between calls (`cache`) and a decode step inserts its
    /// new keys instead of re-indexing the past. (Last variant: `.floe` files store
    /// the variant index.)
    KnnAttention {
        is_causal: bool,
        /// As for `Attention`: required for 3-D inputs.
        q_num_heads: Option<usize>,
        kv_num_heads: Option<usize>,
        /// `None`: `1 / sqrt(head_size)`.
        scale: Option<f32>,
        knn: KnnConfig,
        /// Run-time state, not stored in `.floe` files.
        #[serde(skip)]
        cache: KnnCache,
    },
}

/// A `[batch, heads, seq, dim]` tensor as f64: the layout every attention operand
/// is brought to before the math (3-D `[B, S, heads * dim]` inputs are split).
#[derive(Clone, Debug, PartialEq)]
pub struct Heads {
    pub batch: usize,
    pub heads: usize,
    pub seq: usize,
    pub dim: usize,
    pub data: Vec<f64>,
}

impl Heads {
    /// Zeros of the given dims.
    pub fn zeros(batch: usize, heads: usize, seq: usize, dim: usize) -> Heads {
        Heads { batch, heads, seq, dim, data: vec![0.0; batch * heads * seq * dim] }
    }

    /// A 4-D `[B, H, S, D]` tensor as is.
    pub fn from_4d(t: &Tensor, what: &str) -> Result<Heads> {
        let &[batch, heads, seq, dim] = t.shape() else {
            bail!("{what} must be 4-D [batch, heads, seq, head_size], got shape {:?}", t.shape());
        };
        Ok(Heads { batch, heads, seq, dim, data: t.to_f64_vec() })
    }

    /// A 3-D `[B, S, heads * D]` tensor split into `heads` heads.
    pub fn from_3d(t: &Tensor, heads: usize, what: &str) -> Result<Heads> {
        let &[batch, seq, hidden] = t.shape() else {
            bail!("{what} must be 3-D [batch, seq, hidden], got shape {:?}", t.shape());
        };
        if heads == 0 || !hidden.is_multiple_of(heads) {
            bail!("{what} hidden size {hidden} is not a multiple of its {heads} heads");
        }
        let dim = hidden / heads;
        let src = t.to_f64_vec();
        let mut out = Heads::zeros(batch, heads, seq, dim);
        for b in 0..batch {
            for s in 0..seq {
                for h in 0..heads {
                    let from = (b * seq + s) * hidden + h * dim;
                    out.row_mut(b, h, s).copy_from_slice(&src[from..from + dim]);
                }
            }
        }
        Ok(out)
    }

    fn offset(&self, b: usize, h: usize, s: usize) -> usize {
        ((b * self.heads + h) * self.seq + s) * self.dim
    }

    /// The `dim` values at (batch, head, position).
    pub fn row(&self, b: usize, h: usize, s: usize) -> &[f64] {
        let o = self.offset(b, h, s);
        &self.data[o..o + self.dim]
    }

    pub fn row_mut(&mut self, b: usize, h: usize, s: usize) -> &mut [f64] {
        let o = self.offset(b, h, s);
        &mut self.data[o..o + self.dim]
    }

    /// `past` followed by `new` along the sequence axis (the KV-cache update).
    pub fn concat_seq(past: &Heads, new: &Heads, what: &str) -> Result<Heads> {
        if (past.batch, past.heads, past.dim) != (new.batch, new.heads, new.dim) {
            bail!(
                "past_{what} has [batch, heads, head_size] = [{}, {}, {}], but {what} has [{}, {}, {}]",
                past.batch,
                past.heads,
                past.dim,
                new.batch,
                new.heads,
                new.dim
            );
        }
        let mut out = Heads::zeros(new.batch, new.heads, past.seq + new.seq, new.dim);
        for b in 0..new.batch {
            for h in 0..new.heads {
                for s in 0..past.seq {
                    out.row_mut(b, h, s).copy_from_slice(past.row(b, h, s));
                }
                for s in 0..new.seq {
                    out.row_mut(b, h, past.seq + s).copy_from_slice(new.row(b, h, s));
                }
            }
        }
        Ok(out)
    }

    /// As a `[B, H, S, D]` tensor of `dtype`.
    pub fn to_tensor(&self, dtype: DType) -> Result<Tensor> {
        to_float_tensor(&[self.batch, self.heads, self.seq, self.dim], &self.data, dtype)
    }

    /// As a `[B, S, H * D]` tensor of `dtype` (heads merged back).
    pub fn to_tensor_3d(&self, dtype: DType) -> Result<Tensor> {
        let mut merged = Vec::with_capacity(self.data.len());
        for b in 0..self.batch {
            for s in 0..self.seq {
                for h in 0..self.heads {
                    merged.extend_from_slice(self.row(b, h, s));
                }
            }
        }
        to_float_tensor(&[self.batch, self.seq, self.heads * self.dim], &merged, dtype)
    }
}

fn to_float_tensor(shape: &[usize], v: &[f64], dtype: DType) -> Result<Tensor> {
    dispatch_float!(dtype, T => Tensor::from_vec(shape, v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>()),
        _ => bail!("expected a float dtype, got {dtype}"))
}

/// The additive bias of the score matrix of (batch, query head): `attn_mask`
/// broadcast to `[B, Hq, L, S_total]`, the causal triangle, and key padding.
#[derive(Clone, Debug, Default)]
pub struct Bias {
    /// Mask values (bool already turned into 0 / -inf), right-aligned to 4 dims,
    /// and the `[B, Hq, L, S_total]` they were checked against.
    mask: Option<(Vec<f64>, [usize; 4], [usize; 4])>,
    /// Causal with this many past positions: key `j` is hidden from query `i`
    /// when `j > i + past`.
    causal_past: Option<usize>,
    /// Per batch, the number of real (non-padding) keys.
    nonpad: Option<Vec<i64>>,
}

impl Bias {
    /// No bias at all.
    pub fn none() -> Bias {
        Bias::default()
    }

    /// A float (additive) or bool (`true` = attend) mask of rank 1..=4, broadcastable
    /// to `[B, Hq, L, S_total]`. Its last dim may be shorter than `S_total`; the
    /// missing keys are masked, as the spec says (it is never broadcast).
    /// A bool mask means the same with or without `is_causal` (the numpy reference
    /// turns every `true` into NaN when both are used: `0 * -inf`).
    pub fn with_mask(mut self, mask: &Tensor, target: [usize; 4]) -> Result<Bias> {
        let r = mask.rank();
        if r == 0 || r > 4 {
            bail!("attn_mask must have rank 1 to 4 (broadcastable to {target:?}), got shape {:?}", mask.shape());
        }
        let mut dims = [1usize; 4];
        dims[4 - r..].copy_from_slice(mask.shape());
        for i in 0..3 {
            if dims[i] != 1 && dims[i] != target[i] {
                bail!(
                    "attn_mask shape {:?} does not broadcast to [batch, q_heads, q_seq, total_seq] = {target:?}",
                    mask.shape()
                );
            }
        }
        if dims[3] > target[3] {
            bail!("attn_mask covers {} keys, but there are only {} (past + new)", dims[3], target[3]);
        }
        let vals = if mask.dtype() == DType::Bool {
            mask.to_f64_vec().into_iter().map(|v| if v != 0.0 { 0.0 } else { f64::NEG_INFINITY }).collect()
        } else {
            mask.to_f64_vec()
        };
        self.mask = Some((vals, dims, target));
        Ok(self)
    }

    pub fn with_causal(mut self, past: usize) -> Bias {
        self.causal_past = Some(past);
        self
    }

    pub fn with_nonpad(mut self, lens: Vec<i64>) -> Bias {
        self.nonpad = Some(lens);
        self
    }

    /// The bias added to the score of query `i` and key `j`.
    pub fn at(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        if self.causal_past.is_some_and(|p| j > i + p) || self.nonpad.as_ref().is_some_and(|n| j as i64 >= n[b]) {
            return f64::NEG_INFINITY;
        }
        match &self.mask {
            None => 0.0,
            Some((_, d, _)) if j >= d[3] => f64::NEG_INFINITY,
            Some((v, d, _)) => {
                let pick = |x: usize, n: usize| if n == 1 { 0 } else { x };
                v[((pick(b, d[0]) * d[1] + pick(h, d[1])) * d[2] + pick(i, d[2])) * d[3] + j]
            }
        }
    }
}

/// Exact scaled-dot-product attention.
///
/// `q` is `[B, Hq, L, D]`, `k` `[B, Hkv, S, D]`, `v` `[B, Hkv, S, Dv]`, with `Hq` a
/// multiple of `Hkv` (query head `h` reads key/value head `h / (Hq / Hkv)`).
/// Returns `Y` (`[B, Hq, L, Dv]`) and, when `qk_output` is set, the chosen
/// intermediate score matrix (`[B, Hq, L, S]`).
pub fn attention(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    bias: &Bias,
    scale: f64,
    softcap: f64,
    qk_output: Option<QkOutput>,
) -> Result<(Heads, Option<Heads>)> {
    if q.batch != k.batch || k.batch != v.batch {
        bail!("Q, K and V have batch sizes {}, {} and {}; they must be equal", q.batch, k.batch, v.batch);
    }
    if q.dim != k.dim {
        bail!("Q head_size {} differs from K head_size {}", q.dim, k.dim);
    }
    if k.seq != v.seq {
        bail!("K has {} positions but V has {}", k.seq, v.seq);
    }
    if k.heads != v.heads {
        bail!("K has {} heads but V has {}", k.heads, v.heads);
    }
    if k.heads == 0 || !q.heads.is_multiple_of(k.heads) {
        bail!("q_num_heads ({}) must be a multiple of kv_num_heads ({})", q.heads, k.heads);
    }
    let group = q.heads / k.heads;
    let (l, s) = (q.seq, k.seq);
    if let Some((_, _, t)) = &bias.mask {
        if *t != [q.batch, q.heads, l, s] {
            bail!("the mask was built for scores {t:?}, but they are {:?}", [q.batch, q.heads, l, s]);
        }
    }
    if let Some(n) = bias.nonpad.as_ref().filter(|n| n.len() != q.batch) {
        bail!("nonpad_kv_seqlen has {} entries for a batch of {}", n.len(), q.batch);
    }
    let mut y = Heads::zeros(q.batch, q.heads, l, v.dim);
    let mut qk = qk_output.map(|_| Heads::zeros(q.batch, q.heads, l, s));
    let mut scores = vec![0.0; s];
    for b in 0..q.batch {
        for h in 0..q.heads {
            let kvh = h / group;
            for i in 0..l {
                let qrow = q.row(b, h, i);
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc = scale * qrow.iter().zip(k.row(b, kvh, j)).map(|(a, c)| a * c).sum::<f64>();
                }
                let mut record = |stage: QkOutput, vals: &[f64]| {
                    if let Some(t) = qk.as_mut().filter(|_| qk_output == Some(stage)) {
                        t.row_mut(b, h, i).copy_from_slice(vals);
                    }
                };
                record(QkOutput::Raw, &scores);
                if softcap > 0.0 {
                    // Before the bias, so that -inf stays -inf (a zero weight).
                    scores.iter_mut().for_each(|x| *x = softcap * (*x / softcap).tanh());
                }
                record(QkOutput::Softcapped, &scores);
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc += bias.at(b, h, i, j);
                }
                record(QkOutput::Biased, &scores);
                // Max-subtracted softmax; an all -inf row gives NaN (no defined value).
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                scores.iter_mut().for_each(|x| *x = (*x - m).exp());
                let total: f64 = scores.iter().sum();
                scores.iter_mut().for_each(|x| *x /= total);
                record(QkOutput::Softmax, &scores);
                let out = y.row_mut(b, h, i);
                for (j, &p) in scores.iter().enumerate() {
                    for (o, &val) in out.iter_mut().zip(v.row(b, kvh, j)) {
                        *o += p * val;
                    }
                }
            }
        }
    }
    Ok((y, qk))
}

/// Rotates `x` (`[B, H, L, D]`) in place by the angles whose cosines and sines are
/// `cos` / `sin` (`[B, L, rot/2]`), on the first `rot` values of each head.
/// Non-interleaved pairs are `(x[i], x[i + rot/2])`; interleaved, `(x[2i], x[2i+1])`.
pub fn rotary_embedding(x: &mut Heads, cos: &[f64], sin: &[f64], rot: usize, interleaved: bool) -> Result<()> {
    let half = rot / 2;
    if !rot.is_multiple_of(2) || rot > x.dim {
        bail!("rotary_embedding_dim {rot} must be even and at most head_size {}", x.dim);
    }
    let want = x.batch * x.seq * half;
    if cos.len() != want || sin.len() != want {
        bail!("cos/sin have {}/{} values, expected [batch, seq, rot/2] = {want}", cos.len(), sin.len());
    }
    let seq = x.seq;
    for b in 0..x.batch {
        for h in 0..x.heads {
            for s in 0..seq {
                let at = (b * seq + s) * half;
                let (c, sn) = (&cos[at..at + half], &sin[at..at + half]);
                let row = x.row_mut(b, h, s);
                for i in 0..half {
                    let (i1, i2) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                    let (x1, x2) = (row[i1], row[i2]);
                    row[i1] = c[i] * x1 - sn[i] * x2;
                    row[i2] = sn[i] * x1 + c[i] * x2;
                }
            }
        }
    }
    Ok(())
}

fn check_float(t: &Tensor, what: &str) -> Result<()> {
    if !t.dtype().is_float() {
        bail!("{what} must be a float tensor, got {}", t.dtype());
    }
    Ok(())
}

/// Checks a head-count attribute against the heads dim of a 4-D input.
fn check_heads(attr: Option<usize>, actual: usize, what: &str) -> Result<()> {
    match attr {
        Some(n) if n != actual => bail!("{what} is {n}, but the 4-D input has {actual} heads"),
        _ => Ok(()),
    }
}

impl AttentionOp {
    #[allow(clippy::too_many_arguments)]
    fn eval_attention(
        &self,
        n_outputs: usize,
        inputs: &[Option<&Tensor>],
        is_causal: bool,
        q_num_heads: Option<usize>,
        kv_num_heads: Option<usize>,
        scale: Option<f32>,
        softcap: f32,
        qk_output: QkOutput,
    ) -> Result<Vec<Tensor>> {
        if n_outputs == 0 || n_outputs > 4 {
            bail!("Attention has 1 to 4 outputs (Y, present_key, present_value, qk_matmul_output), got {n_outputs}");
        }
        let (qt, kt, vt) = (input(inputs, 0, "Q")?, input(inputs, 1, "K")?, input(inputs, 2, "V")?);
        check_float(qt, "Q")?;
        check_float(kt, "K")?;
        check_float(vt, "V")?;
        if qt.dtype() != kt.dtype() {
            bail!("Q and K must have the same dtype, got {} and {}", qt.dtype(), kt.dtype());
        }
        let rank = qt.rank();
        if kt.rank() != rank || vt.rank() != rank || !(rank == 3 || rank == 4) {
            bail!(
                "Q, K and V must all be 3-D or all 4-D, got shapes {:?}, {:?} and {:?}",
                qt.shape(),
                kt.shape(),
                vt.shape()
            );
        }
        let (q, mut k, mut v) = if rank == 4 {
            let (q, k, v) = (Heads::from_4d(qt, "Q")?, Heads::from_4d(kt, "K")?, Heads::from_4d(vt, "V")?);
            check_heads(q_num_heads, q.heads, "q_num_heads")?;
            check_heads(kv_num_heads, k.heads, "kv_num_heads")?;
            (q, k, v)
        } else {
            let (Some(qh), Some(kvh)) = (q_num_heads, kv_num_heads) else {
                bail!("3-D Q, K and V need the q_num_heads and kv_num_heads attributes");
            };
            (Heads::from_3d(qt, qh, "Q")?, Heads::from_3d(kt, kvh, "K")?, Heads::from_3d(vt, kvh, "V")?)
        };
        let past = match (opt_input(inputs, 4), opt_input(inputs, 5)) {
            (Some(pk), Some(pv)) => {
                if pk.dtype() != kt.dtype() || pv.dtype() != vt.dtype() {
                    bail!(
                        "past_key/past_value dtypes ({}, {}) must match K/V ({}, {})",
                        pk.dtype(),
                        pv.dtype(),
                        kt.dtype(),
                        vt.dtype()
                    );
                }
                let (pk, pv) = (Heads::from_4d(pk, "past_key")?, Heads::from_4d(pv, "past_value")?);
                k = Heads::concat_seq(&pk, &k, "key")?;
                v = Heads::concat_seq(&pv, &v, "value")?;
                pk.seq
            }
            (None, None) => 0,
            _ => bail!("past_key and past_value must be given together"),
        };
        let target = [q.batch, q.heads, q.seq, k.seq];
        let mut bias = Bias::none();
        if let Some(m) = opt_input(inputs, 3) {
            bias = bias.with_mask(m, target)?;
        }
        if is_causal {
            bias = bias.with_causal(past);
        }
        if let Some(n) = opt_input(inputs, 6) {
            let lens = n.to_i64_vec()?;
            if n.rank() != 1 || lens.len() != q.batch {
                bail!("nonpad_kv_seqlen must have shape [batch] = [{}], got {:?}", q.batch, n.shape());
            }
            bias = bias.with_nonpad(lens);
        }
        let scale = scale.map_or(1.0 / (q.dim as f64).sqrt(), f64::from);
        let want_qk = (n_outputs == 4).then_some(qk_output);
        let (y, qk) = attention(&q, &k, &v, &bias, scale, softcap as f64, want_qk)?;
        let mut outs = vec![if rank == 3 { y.to_tensor_3d(qt.dtype())? } else { y.to_tensor(qt.dtype())? }];
        if n_outputs > 1 {
            outs.push(k.to_tensor(kt.dtype())?);
        }
        if n_outputs > 2 {
            outs.push(v.to_tensor(vt.dtype())?);
        }
        if let Some(qk) = qk {
            outs.push(qk.to_tensor(qt.dtype())?);
        }
        Ok(outs)
    }

    fn eval_rotary(
        &self,
        inputs: &[Option<&Tensor>],
        interleaved: bool,
        num_heads: Option<usize>,
        rotary_dim: Option<usize>,
    ) -> Result<Tensor> {
        let xt = input(inputs, 0, "X")?;
        let (cos_t, sin_t) = (input(inputs, 1, "cos_cache")?, input(inputs, 2, "sin_cache")?);
        check_float(xt, "X")?;
        if cos_t.dtype() != xt.dtype() || sin_t.dtype() != xt.dtype() {
            bail!("cos_cache/sin_cache ({}, {}) must have X's dtype {}", cos_t.dtype(), sin_t.dtype(), xt.dtype());
        }
        let mut x = match xt.rank() {
            4 => {
                let x = Heads::from_4d(xt, "X")?;
                check_heads(num_heads, x.heads, "num_heads")?;
                x
            }
            3 => match num_heads {
                Some(n) => Heads::from_3d(xt, n, "X")?,
                None => bail!("a 3-D RotaryEmbedding input needs the num_heads attribute"),
            },
            _ => {
                bail!("X must be 3-D [batch, seq, hidden] or 4-D [batch, heads, seq, head_size], got {:?}", xt.shape())
            }
        };
        let rot = rotary_dim.unwrap_or(x.dim);
        let half = rot / 2;
        if cos_t.shape() != sin_t.shape() {
            bail!("cos_cache {:?} and sin_cache {:?} must have the same shape", cos_t.shape(), sin_t.shape());
        }
        let (cos_all, sin_all) = (cos_t.to_f64_vec(), sin_t.to_f64_vec());
        let (cos, sin) = match opt_input(inputs, 3) {
            Some(pos) => {
                let want = [x.batch, x.seq];
                if pos.shape() != want {
                    bail!("position_ids must have shape [batch, seq] = {want:?}, got {:?}", pos.shape());
                }
                let &[max_pos, w] = cos_t.shape() else {
                    bail!("with position_ids, cos_cache must be 2-D [max_position, rot/2], got {:?}", cos_t.shape());
                };
                if w != half {
                    bail!("cos_cache last dim is {w}, expected rotary_embedding_dim/2 = {half}");
                }
                let (mut c, mut s) = (Vec::with_capacity(x.batch * x.seq * half), Vec::new());
                for p in pos.to_i64_vec()? {
                    if p < 0 || p as usize >= max_pos {
                        bail!("position id {p} is outside the cos/sin cache of {max_pos} positions");
                    }
                    let at = p as usize * half;
                    c.extend_from_slice(&cos_all[at..at + half]);
                    s.extend_from_slice(&sin_all[at..at + half]);
                }
                (c, s)
            }
            None => {
                let want = [x.batch, x.seq, half];
                if cos_t.shape() != want {
                    bail!(
                        "without position_ids, cos_cache must have shape [batch, seq, rot/2] = {want:?}, got {:?}",
                        cos_t.shape()
                    );
                }
                (cos_all, sin_all)
            }
        };
        rotary_embedding(&mut x, &cos, &sin, rot, interleaved)?;
        if xt.rank() == 3 {
            x.to_tensor_3d(xt.dtype())
        } else {
            x.to_tensor(xt.dtype())
        }
    }
}

/// `a + b` when both are known.
fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => Dim::Fixed(x + y),
        (d, Dim::Fixed(0)) | (Dim::Fixed(0), d) => d.clone(),
        _ => Dim::Unknown,
    }
}

/// `a / n` when `a` is known and divisible.
fn dim_div(a: &Dim, n: Option<usize>) -> Dim {
    match (a, n) {
        (Dim::Fixed(x), Some(n)) if n > 0 && x.is_multiple_of(n) => Dim::Fixed(x / n),
        _ => Dim::Unknown,
    }
}

fn dim_mul(a: &Dim, n: Option<usize>) -> Dim {
    match (a, n) {
        (Dim::Fixed(x), Some(n)) => Dim::Fixed(x * n),
        _ => Dim::Unknown,
    }
}

impl OpImpl for AttentionOp {
    fn name(&self) -> &'static str {
        match self {
            AttentionOp::Attention { .. } => "Attention",
            AttentionOp::RotaryEmbedding { .. } => "RotaryEmbedding",
            AttentionOp::KnnAttention { .. } => "KnnAttention",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let fact = |i: usize| inputs.get(i).map(|x| x.fact.clone()).unwrap_or_else(Fact::unknown);
        match self {
            AttentionOp::RotaryEmbedding { .. } => Ok(vec![fact(0)]),
            // Y, present_key and present_value have the shapes `Attention` gives
            // them (its inputs 4 and 5 are the past, as here; no attn_mask).
            AttentionOp::KnnAttention { q_num_heads, kv_num_heads, .. } => {
                let unknown = Fact::unknown();
                let none = InferInput { fact: &unknown, value: None };
                let mut ins: Vec<InferInput<'_>> = inputs.iter().take(3).cloned().collect();
                if inputs.len() > 4 {
                    ins.push(none);
                    ins.extend(inputs[4..].iter().take(2).cloned());
                }
                AttentionOp::Attention {
                    is_causal: false,
                    q_num_heads: *q_num_heads,
                    kv_num_heads: *kv_num_heads,
                    scale: None,
                    softcap: 0.0,
                    qk_output: QkOutput::Raw,
                }
                .infer(&ins, n.min(3))
            }
            AttentionOp::Attention { q_num_heads, kv_num_heads, .. } => {
                let (q, k, v) = (fact(0), fact(1), fact(2));
                let dims = |f: &Fact, r: usize| f.shape.as_ref().filter(|s| s.rank() == r).map(|s| s.0.clone());
                // Past length: 0 when no past input is wired; unknown when its shape is.
                let past =
                    if inputs.len() <= 4 { Some(Dim::Fixed(0)) } else { dims(&fact(4), 4).map(|d| d[2].clone()) };
                let total = |s: &Dim| past.as_ref().map_or(Dim::Unknown, |p| dim_add(p, s));
                // (y, present_key, present_value, qk) shapes.
                let shapes: [Option<Vec<Dim>>; 4] = match (dims(&q, 4), dims(&k, 4), dims(&v, 4)) {
                    (Some(q), Some(k), Some(v)) => [
                        Some(vec![q[0].clone(), q[1].clone(), q[2].clone(), v[3].clone()]),
                        Some(vec![k[0].clone(), k[1].clone(), total(&k[2]), k[3].clone()]),
                        Some(vec![v[0].clone(), v[1].clone(), total(&v[2]), v[3].clone()]),
                        Some(vec![q[0].clone(), q[1].clone(), q[2].clone(), total(&k[2])]),
                    ],
                    _ => match (dims(&q, 3), dims(&k, 3), dims(&v, 3)) {
                        (Some(q), Some(k), Some(v)) => {
                            let kvh = kv_num_heads.map_or(Dim::Unknown, Dim::Fixed);
                            let qh = q_num_heads.map_or(Dim::Unknown, Dim::Fixed);
                            let v_head = dim_div(&v[2], *kv_num_heads);
                            [
                                Some(vec![q[0].clone(), q[1].clone(), dim_mul(&v_head, *q_num_heads)]),
                                Some(vec![k[0].clone(), kvh.clone(), total(&k[1]), dim_div(&k[2], *kv_num_heads)]),
                                Some(vec![v[0].clone(), kvh, total(&v[1]), v_head]),
                                Some(vec![q[0].clone(), qh, q[1].clone(), total(&k[1])]),
                            ]
                        }
                        _ => [None, None, None, None],
                    },
                };
                let dtypes = [q.dtype, k.dtype, v.dtype, q.dtype];
                Ok((0..n.min(4)).map(|i| Fact { dtype: dtypes[i], shape: shapes[i].clone().map(Shape) }).collect())
            }
        }
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        if let AttentionOp::KnnAttention { .. } = self {
            return Ok(knn::KnnKernel::plan(self, inputs, outputs)?.map(|k| Box::new(k) as Box<dyn Kernel>));
        }
        Ok(kernel::AttentionKernel::plan(self, inputs, outputs)?.map(|k| Box::new(k) as Box<dyn Kernel>))
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        match *self {
            AttentionOp::Attention { is_causal, q_num_heads, kv_num_heads, scale, softcap, qk_output } => self
                .eval_attention(ctx.n_outputs, inputs, is_causal, q_num_heads, kv_num_heads, scale, softcap, qk_output),
            AttentionOp::RotaryEmbedding { interleaved, num_heads, rotary_dim } => {
                Ok(vec![self.eval_rotary(inputs, interleaved, num_heads, rotary_dim)?])
            }
            AttentionOp::KnnAttention { .. } => knn::eval_knn(self, ctx.n_outputs, inputs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mha(is_causal: bool, qk_output: QkOutput) -> AttentionOp {
        AttentionOp::Attention {
            is_causal,
            q_num_heads: None,
            kv_num_heads: None,
            scale: None,
            softcap: 0.0,
            qk_output,
        }
    }

    fn t4(shape: [usize; 4], v: &[f32]) -> Tensor {
        Tensor::from_slice(&shape, v).unwrap()
    }

    fn run(op: &AttentionOp, n_outputs: usize, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        op.eval(&EvalCtx { n_outputs }, inputs)
    }

    fn close(got: &Tensor, want: &[f64]) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len(), "{got:?}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "got {g:?}, want {want:?}");
        }
    }

    #[test]
    fn one_key_returns_its_value_for_any_query() {
        let q = t4([1, 1, 2, 2], &[3.0, -1.0, 0.5, 7.0]);
        let k = t4([1, 1, 1, 2], &[0.2, 0.4]);
        let v = t4([1, 1, 1, 3], &[1.0, 2.0, 3.0]);
        let y = run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&k), Some(&v)]).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 2, 3]);
        close(&y[0], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn scores_ln3_apart_weigh_values_one_to_three() {
        // head_size 1: scale 1, scores 0 and ln 3 -> softmax (1/4, 3/4).
        let q = t4([1, 1, 1, 1], &[1.0]);
        let k = t4([1, 1, 2, 1], &[0.0, 3f32.ln()]);
        let v = t4([1, 1, 2, 1], &[4.0, 8.0]);
        let out = run(&mha(false, QkOutput::Softmax), 4, &[Some(&q), Some(&k), Some(&v)]).unwrap();
        close(&out[0], &[0.25 * 4.0 + 0.75 * 8.0]);
        close(&out[3], &[0.25, 0.75]);
    }

    #[test]
    fn causal_mask_on_two_positions_hides_the_future_key() {
        // Equal scores: position 0 sees only v0, position 1 averages v0 and v1.
        let q = t4([1, 1, 2, 1], &[1.0, 1.0]);
        let k = t4([1, 1, 2, 1], &[0.0, 0.0]);
        let v = t4([1, 1, 2, 1], &[2.0, 6.0]);
        let out = run(&mha(true, QkOutput::Biased), 4, &[Some(&q), Some(&k), Some(&v)]).unwrap();
        close(&out[0], &[2.0, 4.0]);
        let qk = out[3].to_f64_vec();
        assert_eq!(qk[1], f64::NEG_INFINITY);
        assert_eq!((qk[0], qk[2], qk[3]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn causal_with_past_shifts_the_diagonal_and_returns_the_cache() {
        // One new query after one past key: it sees both keys (equal scores).
        let q = t4([1, 1, 1, 1], &[1.0]);
        let k = t4([1, 1, 1, 1], &[0.0]);
        let v = t4([1, 1, 1, 1], &[6.0]);
        let pk = t4([1, 1, 1, 1], &[0.0]);
        let pv = t4([1, 1, 1, 1], &[2.0]);
        let out =
            run(&mha(true, QkOutput::Raw), 3, &[Some(&q), Some(&k), Some(&v), None, Some(&pk), Some(&pv)]).unwrap();
        close(&out[0], &[4.0]);
        assert_eq!(out[1].shape(), &[1, 1, 2, 1]);
        close(&out[2], &[2.0, 6.0]);
    }

    #[test]
    fn bool_mask_false_removes_a_key_and_short_mask_pads_with_false() {
        // Mask [true] covers only key 0 of 2: key 1 is padded out.
        let q = t4([1, 1, 1, 1], &[1.0]);
        let k = t4([1, 1, 2, 1], &[5.0, -5.0]);
        let v = t4([1, 1, 2, 1], &[3.0, 9.0]);
        let m = Tensor::from_bools(&[1], &[true]).unwrap();
        let out = run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&k), Some(&v), Some(&m)]).unwrap();
        close(&out[0], &[3.0]);
        let m = Tensor::from_bools(&[1, 2], &[false, true]).unwrap();
        let out = run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&k), Some(&v), Some(&m)]).unwrap();
        close(&out[0], &[9.0]);
    }

    #[test]
    fn nonpad_kv_seqlen_hides_padding_keys_per_batch() {
        let q = t4([2, 1, 1, 1], &[0.0, 0.0]);
        let k = t4([2, 1, 2, 1], &[0.0; 4]);
        let v = t4([2, 1, 2, 1], &[2.0, 6.0, 2.0, 6.0]);
        let lens = Tensor::from_slice(&[2], &[1i64, 2]).unwrap();
        let out =
            run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&k), Some(&v), None, None, None, Some(&lens)]).unwrap();
        close(&out[0], &[2.0, 4.0]);
    }

    #[test]
    fn grouped_query_heads_share_their_kv_head_in_3d_layout() {
        // 4 query heads over 2 kv heads, head_size 1, one key: head h returns V of kv head h / 2.
        let op = AttentionOp::Attention {
            is_causal: false,
            q_num_heads: Some(4),
            kv_num_heads: Some(2),
            scale: Some(0.5),
            softcap: 1.0,
            qk_output: QkOutput::Raw,
        };
        let q = Tensor::from_slice(&[1, 1, 4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let k = Tensor::from_slice(&[1, 1, 2], &[1.0f32, 1.0]).unwrap();
        let v = Tensor::from_slice(&[1, 1, 2], &[10.0f32, 20.0]).unwrap();
        let out = run(&op, 4, &[Some(&q), Some(&k), Some(&v)]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 4]);
        close(&out[0], &[10.0, 10.0, 20.0, 20.0]);
        assert_eq!(out[1].shape(), &[1, 2, 1, 1]);
        // Raw scores are scale * q * k, before the softcap.
        close(&out[3], &[0.5, 1.0, 1.5, 2.0]);
    }

    #[test]
    fn softcap_bounds_scores_by_tanh() {
        let op = AttentionOp::Attention {
            is_causal: false,
            q_num_heads: None,
            kv_num_heads: None,
            scale: Some(1.0),
            softcap: 2.0,
            qk_output: QkOutput::Softcapped,
        };
        let q = t4([1, 1, 1, 1], &[1.0]);
        let k = t4([1, 1, 1, 1], &[100.0]);
        let out = run(&op, 4, &[Some(&q), Some(&k), Some(&k)]).unwrap();
        close(&out[3], &[2.0 * (50f64).tanh()]);
    }

    #[test]
    fn bad_head_counts_and_shapes_are_errors_not_panics() {
        let q = t4([1, 3, 1, 2], &[0.0; 6]);
        let k = t4([1, 2, 1, 2], &[0.0; 4]);
        let e = run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&k), Some(&k)]).unwrap_err();
        assert!(e.to_string().contains("multiple of kv_num_heads"), "{e}");
        let k3 = Tensor::from_slice(&[1, 1, 4], &[0.0f32; 4]).unwrap();
        let e = run(&mha(false, QkOutput::Raw), 1, &[Some(&k3), Some(&k3), Some(&k3)]).unwrap_err();
        assert!(e.to_string().contains("q_num_heads"), "{e}");
        let kd = t4([1, 3, 1, 3], &[0.0; 9]);
        assert!(run(&mha(false, QkOutput::Raw), 1, &[Some(&q), Some(&kd), Some(&kd)]).is_err());
        let m = Tensor::from_slice(&[3, 1, 1], &[0.0f32; 3]).unwrap();
        let q1 = t4([1, 1, 1, 2], &[0.0; 2]);
        let k1 = t4([1, 1, 1, 2], &[0.0; 2]);
        assert!(run(&mha(false, QkOutput::Raw), 1, &[Some(&q1), Some(&k1), Some(&k1), Some(&m)]).is_err());
    }

    #[test]
    fn infer_adds_past_length_and_leaves_unknown_past_unknown() {
        let f = |d: &[usize]| Fact::new(DType::F32, Shape::fixed(d));
        let (q, k, v) = (f(&[2, 9, 4, 8]), f(&[2, 3, 6, 8]), f(&[2, 3, 6, 10]));
        let (m, pk, pv) = (f(&[4, 18]), f(&[2, 3, 12, 8]), f(&[2, 3, 12, 10]));
        let ins: Vec<InferInput> =
            [&q, &k, &v, &m, &pk, &pv].iter().map(|&fact| InferInput { fact, value: None }).collect();
        let out = mha(false, QkOutput::Raw).infer(&ins, 4).unwrap();
        let shapes: Vec<Shape> = out.into_iter().map(|o| o.shape.unwrap()).collect();
        assert_eq!(
            shapes,
            [[2, 9, 4, 10], [2, 3, 18, 8], [2, 3, 18, 10], [2, 9, 4, 18]].map(|d| Shape::fixed(&d)).to_vec()
        );
        // An omitted past (unknown fact) before nonpad_kv_seqlen: total length unknown.
        let (u, n) = (Fact::unknown(), f(&[2]));
        let ins: Vec<InferInput> =
            [&q, &k, &v, &m, &u, &u, &n].iter().map(|&fact| InferInput { fact, value: None }).collect();
        let out = mha(false, QkOutput::Raw).infer(&ins, 2).unwrap();
        assert_eq!(out[1].shape.as_ref().unwrap().0[2], Dim::Unknown);
    }

    fn rope(interleaved: bool, rotary_dim: Option<usize>) -> AttentionOp {
        AttentionOp::RotaryEmbedding { interleaved, num_heads: None, rotary_dim }
    }

    #[test]
    fn rotary_by_a_quarter_turn_maps_pairs_to_minus_second_first() {
        let x = t4([1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let cos = Tensor::from_slice(&[1, 1, 2], &[0.0f32, 0.0]).unwrap();
        let sin = Tensor::from_slice(&[1, 1, 2], &[1.0f32, 1.0]).unwrap();
        let ins = [Some(&x), Some(&cos), Some(&sin)];
        // halves: pairs (1,3), (2,4)
        close(&run(&rope(false, None), 1, &ins).unwrap()[0], &[-3.0, -4.0, 1.0, 2.0]);
        // interleaved: pairs (1,2), (3,4)
        close(&run(&rope(true, None), 1, &ins).unwrap()[0], &[-2.0, 1.0, -4.0, 3.0]);
    }

    #[test]
    fn partial_rotary_with_position_ids_leaves_the_tail_alone() {
        // rot 2 of head 4; position 1 of the cache is a quarter turn.
        let x = Tensor::from_slice(&[1, 1, 4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let cos = Tensor::from_slice(&[2, 1], &[1.0f32, 0.0]).unwrap();
        let sin = Tensor::from_slice(&[2, 1], &[0.0f32, 1.0]).unwrap();
        let pos = Tensor::from_slice(&[1, 1], &[1i64]).unwrap();
        let op = AttentionOp::RotaryEmbedding { interleaved: false, num_heads: Some(1), rotary_dim: Some(2) };
        let out = run(&op, 1, &[Some(&x), Some(&cos), Some(&sin), Some(&pos)]).unwrap();
        close(&out[0], &[-2.0, 1.0, 3.0, 4.0]);
        let bad = Tensor::from_slice(&[1, 1], &[2i64]).unwrap();
        assert!(run(&op, 1, &[Some(&x), Some(&cos), Some(&sin), Some(&bad)]).is_err());
        assert!(run(&rope(false, None), 1, &[Some(&x), Some(&cos), Some(&sin), Some(&pos)]).is_err());
    }
}
