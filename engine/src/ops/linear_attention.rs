//! Linear attention with an explicit recurrent state.
//!
//! - [`LinearAttentionOp::LinearAttention`]: ONNX `LinearAttention`-27, the four
//!   update rules (linear, gated, delta, gated_delta) over 3-D packed heads
//!   `[B, T, H * d]`, GQA, state `[B, H_kv, d_k, d_v]`.
//! - [`LinearAttentionOp::Normalized`]: Katharopoulos et al. (2020) linear attention
//!   with its normaliser, `out_t = φ(q_t)ᵀ S / (φ(q_t)·z + eps)`, `S = Σ φ(k_s) v_sᵀ`,
//!   `z = Σ φ(k_s)` (ALGORITHMS.md §2.1-2.3). ONNX has no op for it; the
//!   `fuse_linear_attention` pass builds it from the plain-op export, and its causal
//!   form carries `(S, z)` as state inputs and outputs, so a stream can be fed in
//!   pieces of any length, one token included.
//!
//! Both run in f32 through `floe_kernels::linear_attention` (f16 and f64 inputs are
//! converted): the recurrent per-token form for short inputs (streaming, `T = 1`),
//! the chunk-parallel form for long ones. The Katharopoulos op is the `linear` rule
//! with a column of ones appended to `V`: that state column is `z`.
//!
//! Reference: ONNX operator spec `LinearAttention`-27 and
//! onnx/reference/ops/op_linear_attention.py; Katharopoulos et al., "Transformers are
//! RNNs" (ICML 2020), fast-transformers `causal_linear_attention.py`.

use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, unsupported};
use floe_kernels::linear_attention::{self as kernel, Decay, Head, UpdateRule};
use std::borrow::Cow;

/// `LinearAttention`'s `update_rule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rule {
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

impl Rule {
    /// Parses the ONNX attribute value.
    pub fn parse(s: &str) -> Option<Rule> {
        Some(match s {
            "linear" => Rule::Linear,
            "gated" => Rule::Gated,
            "delta" => Rule::Delta,
            "gated_delta" => Rule::GatedDelta,
            _ => return None,
        })
    }

    fn kernel(self) -> UpdateRule {
        match self {
            Rule::Linear => UpdateRule::Linear,
            Rule::Gated => UpdateRule::Gated,
            Rule::Delta => UpdateRule::Delta,
            Rule::GatedDelta => UpdateRule::GatedDelta,
        }
    }
}

/// The feature map the normalised form applies to Q and K before the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FeatureMap {
    /// Q and K are used as given (already mapped, and positive, upstream).
    Identity,
    /// `φ(x) = elu(x) + 1` (fast-transformers' `elu_feature_map`).
    EluPlusOne,
}

impl FeatureMap {
    fn apply(self, x: &mut [f32]) {
        if self == FeatureMap::EluPlusOne {
            x.iter_mut().for_each(|v| *v = if *v > 0.0 { *v + 1.0 } else { v.exp() });
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum LinearAttentionOp {
    /// ONNX `LinearAttention`. Inputs: query, key, value `[B, T, H * d]`,
    /// past_state? `[B, H_kv, d_k, d_v]`, decay? `[B, T, H_kv]` or `[B, T, H_kv * d_k]`,
    /// beta? `[B, T, H_kv]` or `[B, T, 1]`. Outputs: output `[B, T, H_q * d_v]`,
    /// present_state?.
    LinearAttention {
        rule: Rule,
        q_num_heads: usize,
        kv_num_heads: usize,
        /// `None`: `1 / sqrt(d_k)`.
        scale: Option<f32>,
        /// Tokens per chunk of the parallel form (a tuning hint; 0 = the default).
        chunk_size: usize,
    },
    /// floe's Katharopoulos linear attention. Inputs: Q `[N, L, H, D]`,
    /// K `[N, S, H, D]`, V `[N, S, H, M]`, past_kv? `[N, H, D, M]`, past_z? `[N, H, D]`
    /// (zeros when absent). Outputs: Y `[N, L, H, M]`, present_kv?, present_z?.
    /// Causal requires `S == L`; non-causal reads every key (and the past).
    Normalized { causal: bool, eps: f32, feature_map: FeatureMap },
}

/// A tensor's values as f32, borrowed when it already is f32.
fn f32s(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    Ok(if t.dtype() == DType::F32 {
        Cow::Borrowed(t.as_slice::<f32>()?)
    } else {
        Cow::Owned(t.cast(DType::F32)?.as_slice::<f32>()?.to_vec())
    })
}

fn out_tensor(dtype: DType, shape: &[usize], v: Vec<f32>) -> Result<Tensor> {
    let t = Tensor::from_vec(shape, v)?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        t.cast(dtype)
    }
}

fn float_dtype(t: &Tensor, what: &str) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::F16 | DType::F64) => Ok(d),
        d => unsupported!("{what} must be float, got {d:?}"),
    }
}

fn shape3<'a>(t: &'a Tensor, what: &str) -> Result<&'a [usize]> {
    match t.shape() {
        s @ [_, _, _] => Ok(s),
        s => bail!("{what} must be rank 3 [batch, seq, heads * dim], got shape {s:?}"),
    }
}

/// Copies head `h` (of `heads`, each `d` wide) of batch `b` out of a `[B, T, heads * d]`
/// buffer into `dst` as `[T, d]`.
fn gather_head(src: &[f32], b: usize, t: usize, heads: usize, h: usize, d: usize, dst: &mut [f32]) {
    for i in 0..t {
        let o = (b * t + i) * heads * d + h * d;
        dst[i * d..(i + 1) * d].copy_from_slice(&src[o..o + d]);
    }
}

fn scatter_head(src: &[f32], b: usize, t: usize, heads: usize, h: usize, d: usize, dst: &mut [f32]) {
    for i in 0..t {
        let o = (b * t + i) * heads * d + h * d;
        dst[o..o + d].copy_from_slice(&src[i * d..(i + 1) * d]);
    }
}

impl LinearAttentionOp {
    #[allow(clippy::too_many_arguments)]
    fn eval_onnx(
        &self,
        inputs: &[Option<&Tensor>],
        rule: Rule,
        hq: usize,
        hkv: usize,
        scale: Option<f32>,
        chunk: usize,
    ) -> Result<Vec<Tensor>> {
        let (q, k, v) = (input(inputs, 0, "query")?, input(inputs, 1, "key")?, input(inputs, 2, "value")?);
        let (past, decay, beta) = (opt_input(inputs, 3), opt_input(inputs, 4), opt_input(inputs, 5));
        let dtype = float_dtype(q, "query")?;
        if hq == 0 || hkv == 0 || !hq.is_multiple_of(hkv) {
            bail!("q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})");
        }
        let (qs, ks, vs) = (shape3(q, "query")?, shape3(k, "key")?, shape3(v, "value")?);
        let (b, t) = (qs[0], qs[1]);
        if qs[2] % hq != 0 || vs[2] % hkv != 0 {
            bail!(
                "query width {} / q_num_heads {hq} or value width {} / kv_num_heads {hkv} is not whole",
                qs[2],
                vs[2]
            );
        }
        let (dk, dv) = (qs[2] / hq, vs[2] / hkv);
        if ks != [b, t, hkv * dk] || vs[..2] != [b, t] {
            bail!("key {ks:?} must be [{b}, {t}, {}] and value {vs:?} [{b}, {t}, kv_heads * d_v]", hkv * dk);
        }
        let rule_k = rule.kernel();
        match (rule_k.gated(), decay.is_some()) {
            (true, false) => bail!("update_rule {rule:?} requires the decay input"),
            (false, true) => bail!("update_rule {rule:?} forbids the decay input"),
            _ => {}
        }
        match (rule_k.delta(), beta.is_some()) {
            (true, false) => bail!("update_rule {rule:?} requires the beta input"),
            (false, true) => bail!("update_rule {rule:?} forbids the beta input"),
            _ => {}
        }
        let decay_per_key = match decay {
            None => false,
            Some(d) => match shape3(d, "decay")? {
                [db, dt, w] if [*db, *dt] == [b, t] && *w == hkv => false,
                [db, dt, w] if [*db, *dt] == [b, t] && *w == hkv * dk => true,
                s => bail!("decay {s:?} must be [{b}, {t}, {hkv}] or [{b}, {t}, {}]", hkv * dk),
            },
        };
        let beta_heads = match beta {
            None => 0,
            Some(x) => match shape3(x, "beta")? {
                [bb, bt, w] if [*bb, *bt] == [b, t] && (*w == hkv || *w == 1) => *w,
                s => bail!("beta {s:?} must be [{b}, {t}, {hkv}] or [{b}, {t}, 1]"),
            },
        };
        let state_shape = [b, hkv, dk, dv];
        let (mut state, state_dtype) = match past {
            Some(p) => {
                if p.shape() != state_shape {
                    bail!("past_state {:?} must be {state_shape:?}", p.shape());
                }
                (f32s(p)?.into_owned(), float_dtype(p, "past_state")?)
            }
            None => (vec![0f32; b * hkv * dk * dv], dtype),
        };
        let scale = match scale {
            Some(s) if s != 0.0 => s,
            _ => 1.0 / (dk as f32).sqrt(),
        };
        let (qf, kf, vf) = (f32s(q)?, f32s(k)?, f32s(v)?);
        let df = decay.map(f32s).transpose()?;
        let bf = beta.map(f32s).transpose()?;
        let g = hq / hkv;
        let mut out = vec![0f32; b * t * hq * dv];
        let (mut qh, mut kh, mut vh) = (vec![0f32; g * t * dk], vec![0f32; t * dk], vec![0f32; t * dv]);
        let mut dh = vec![0f32; t * if decay_per_key { dk } else { 1 }];
        let mut bh = vec![0f32; t];
        let mut oh = vec![0f32; g * t * dv];
        for bi in 0..b {
            for h in 0..hkv {
                for gi in 0..g {
                    gather_head(&qf, bi, t, hq, h * g + gi, dk, &mut qh[gi * t * dk..]);
                }
                gather_head(&kf, bi, t, hkv, h, dk, &mut kh);
                gather_head(&vf, bi, t, hkv, h, dv, &mut vh);
                let decay = match &df {
                    None => Decay::None,
                    Some(d) if decay_per_key => {
                        gather_head(d, bi, t, hkv, h, dk, &mut dh);
                        Decay::PerKey(&dh)
                    }
                    Some(d) => {
                        gather_head(d, bi, t, hkv, h, 1, &mut dh);
                        Decay::PerHead(&dh)
                    }
                };
                let beta = bf.as_ref().map(|x| {
                    gather_head(x, bi, t, beta_heads, if beta_heads == 1 { 0 } else { h }, 1, &mut bh);
                    &bh[..]
                });
                let head = Head { q: &qh, k: &kh, v: &vh, decay, beta, groups: g, t, dk, dv };
                let st = &mut state[(bi * hkv + h) * dk * dv..(bi * hkv + h + 1) * dk * dv];
                kernel::run(&head, rule_k, scale, chunk, st, &mut oh);
                for gi in 0..g {
                    scatter_head(&oh[gi * t * dv..], bi, t, hq, h * g + gi, dv, &mut out);
                }
            }
        }
        Ok(vec![out_tensor(dtype, &[b, t, hq * dv], out)?, out_tensor(state_dtype, &state_shape, state)?])
    }

    fn eval_normalized(
        &self,
        inputs: &[Option<&Tensor>],
        causal: bool,
        eps: f32,
        fmap: FeatureMap,
    ) -> Result<Vec<Tensor>> {
        let (q, k, v) = (input(inputs, 0, "Q")?, input(inputs, 1, "K")?, input(inputs, 2, "V")?);
        let dtype = float_dtype(q, "Q")?;
        let [n, l, h, d] = *q.shape() else { bail!("Q must be [N, L, H, D], got {:?}", q.shape()) };
        let [_, s, _, _] = *k.shape() else { bail!("K must be [N, S, H, D], got {:?}", k.shape()) };
        let [_, _, _, m] = *v.shape() else { bail!("V must be [N, S, H, M], got {:?}", v.shape()) };
        if k.shape() != [n, s, h, d] || v.shape() != [n, s, h, m] {
            bail!("K {:?} must be [{n}, S, {h}, {d}] and V {:?} [{n}, S, {h}, M]", k.shape(), v.shape());
        }
        if causal && s != l {
            bail!("causal linear attention needs as many keys as queries, got {s} and {l}");
        }
        let (kv_shape, z_shape) = ([n, h, d, m], [n, h, d]);
        let past_kv = opt_input(inputs, 3).map(f32s).transpose()?;
        let past_z = opt_input(inputs, 4).map(f32s).transpose()?;
        if past_kv.as_ref().is_some_and(|p| p.len() != n * h * d * m)
            || past_z.as_ref().is_some_and(|p| p.len() != n * h * d)
        {
            bail!("past state must be {kv_shape:?} and {z_shape:?}");
        }
        let mut qf = f32s(q)?.into_owned();
        let mut kf = f32s(k)?.into_owned();
        fmap.apply(&mut qf);
        fmap.apply(&mut kf);
        let vf = f32s(v)?;
        let ma = m + 1;
        let mut out = vec![0f32; n * l * h * m];
        let (mut present_kv, mut present_z) = (vec![0f32; n * h * d * m], vec![0f32; n * h * d]);
        let (mut qh, mut kh, mut vh) = (vec![0f32; l * d], vec![0f32; s * d], vec![0f32; s * m]);
        let mut va = vec![1f32; s * ma];
        let mut st = vec![0f32; d * ma];
        let mut oa = vec![0f32; l * ma];
        let mut oh = vec![0f32; l * m];
        for ni in 0..n {
            for hi in 0..h {
                let sh = ni * h + hi;
                gather_head(&qf, ni, l, h, hi, d, &mut qh);
                gather_head(&kf, ni, s, h, hi, d, &mut kh);
                gather_head(&vf, ni, s, h, hi, m, &mut vh);
                for i in 0..s {
                    va[i * ma..i * ma + m].copy_from_slice(&vh[i * m..(i + 1) * m]);
                }
                // Augmented state [S | z], D x (M + 1).
                for r in 0..d {
                    let row = &mut st[r * ma..(r + 1) * ma];
                    match &past_kv {
                        Some(p) => row[..m].copy_from_slice(&p[(sh * d + r) * m..(sh * d + r + 1) * m]),
                        None => row[..m].fill(0.0),
                    }
                    row[m] = past_z.as_ref().map_or(0.0, |z| z[sh * d + r]);
                }
                if causal {
                    let head =
                        Head { q: &qh, k: &kh, v: &va, decay: Decay::None, beta: None, groups: 1, t: l, dk: d, dv: ma };
                    kernel::run(&head, UpdateRule::Linear, 1.0, 64, &mut st, &mut oa);
                } else {
                    // Every query reads the state after all keys: one pass over S.
                    let head =
                        Head { q: &[], k: &kh, v: &va, decay: Decay::None, beta: None, groups: 0, t: s, dk: d, dv: ma };
                    kernel::run(&head, UpdateRule::Linear, 1.0, 64, &mut st, &mut []);
                    floe_kernels::gemm::sgemm(
                        1.0,
                        floe_kernels::gemm::MatRef::new(&qh, l, d),
                        floe_kernels::gemm::MatRef::new(&st, d, ma),
                        0.0,
                        &mut oa,
                    );
                }
                kernel::normalize_rows(&oa, l, m, eps, &mut oh);
                scatter_head(&oh, ni, l, h, hi, m, &mut out);
                for r in 0..d {
                    present_kv[(sh * d + r) * m..(sh * d + r + 1) * m].copy_from_slice(&st[r * ma..r * ma + m]);
                    present_z[sh * d + r] = st[r * ma + m];
                }
            }
        }
        Ok(vec![
            out_tensor(dtype, &[n, l, h, m], out)?,
            out_tensor(dtype, &kv_shape, present_kv)?,
            out_tensor(dtype, &z_shape, present_z)?,
        ])
    }
}

fn dim_div(a: &Dim, n: usize) -> Dim {
    match a {
        Dim::Fixed(x) if n > 0 && x.is_multiple_of(n) => Dim::Fixed(x / n),
        _ => Dim::Unknown,
    }
}

fn dim_mul(a: &Dim, n: usize) -> Dim {
    match a {
        Dim::Fixed(x) => Dim::Fixed(x * n),
        _ => Dim::Unknown,
    }
}

impl OpImpl for LinearAttentionOp {
    fn name(&self) -> &'static str {
        match self {
            LinearAttentionOp::LinearAttention { .. } => "LinearAttention",
            LinearAttentionOp::Normalized { .. } => "NormalizedLinearAttention",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let fact = |i: usize| inputs.get(i).map(|x| x.fact.clone()).unwrap_or_else(Fact::unknown);
        let dims = |i: usize, r: usize| fact(i).shape.filter(|s| s.rank() == r).map(|s| s.0);
        let dtype = fact(0).dtype;
        let facts: Vec<Fact> = match self {
            LinearAttentionOp::LinearAttention { q_num_heads: hq, kv_num_heads: hkv, .. } => {
                let (hq, hkv) = (*hq, *hkv);
                let state_dtype =
                    if inputs.len() > 3 && inputs[3].fact.dtype.is_some() { fact(3).dtype } else { dtype };
                match (dims(0, 3), dims(2, 3)) {
                    (Some(q), Some(v)) => {
                        let dv = dim_div(&v[2], hkv);
                        vec![
                            Fact { dtype, shape: Some(Shape(vec![q[0].clone(), q[1].clone(), dim_mul(&dv, hq)])) },
                            Fact {
                                dtype: state_dtype,
                                shape: Some(Shape(vec![q[0].clone(), Dim::Fixed(hkv), dim_div(&q[2], hq), dv])),
                            },
                        ]
                    }
                    _ => vec![Fact { dtype, shape: None }, Fact { dtype: state_dtype, shape: None }],
                }
            }
            LinearAttentionOp::Normalized { .. } => match (dims(0, 4), dims(2, 4)) {
                (Some(q), Some(v)) => vec![
                    Fact { dtype, shape: Some(Shape(vec![q[0].clone(), q[1].clone(), q[2].clone(), v[3].clone()])) },
                    Fact { dtype, shape: Some(Shape(vec![q[0].clone(), q[2].clone(), q[3].clone(), v[3].clone()])) },
                    Fact { dtype, shape: Some(Shape(vec![q[0].clone(), q[2].clone(), q[3].clone()])) },
                ],
                _ => super::dtype_facts(dtype, 3),
            },
        };
        Ok(facts.into_iter().take(n).collect())
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut out = match *self {
            LinearAttentionOp::LinearAttention { rule, q_num_heads, kv_num_heads, scale, chunk_size } => {
                self.eval_onnx(inputs, rule, q_num_heads, kv_num_heads, scale, chunk_size)?
            }
            LinearAttentionOp::Normalized { causal, eps, feature_map } => {
                self.eval_normalized(inputs, causal, eps, feature_map)?
            }
        };
        out.truncate(ctx.n_outputs.max(1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    lo + ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo)
                })
                .collect()
        }
    }

    fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    /// Columns `range` of axis 1 of a `[B, T, W]` tensor.
    fn slice_t(x: &Tensor, r: std::ops::Range<usize>) -> Tensor {
        let s = x.shape().to_vec();
        let v = x.as_slice::<f32>().unwrap();
        let mut out = Vec::new();
        for b in 0..s[0] {
            for i in r.clone() {
                let o = (b * s[1] + i) * s[2];
                out.extend_from_slice(&v[o..o + s[2]]);
            }
        }
        tensor(&[s[0], r.len(), s[2]], out)
    }

    fn cat_t(parts: &[Tensor]) -> Vec<f32> {
        let (b, w) = (parts[0].shape()[0], parts[0].shape()[2]);
        let mut out = Vec::new();
        for bi in 0..b {
            for p in parts {
                let n = p.shape()[1];
                out.extend_from_slice(&p.as_slice::<f32>().unwrap()[bi * n * w..(bi + 1) * n * w]);
            }
        }
        out
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Splits `0..t` into pieces of the lengths in `sizes`, cycling.
    fn pieces(t: usize, sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
        let (mut out, mut at, mut i) = (Vec::new(), 0, 0);
        while at < t {
            let n = sizes[i % sizes.len()].min(t - at);
            out.push(at..at + n);
            at += n;
            i += 1;
        }
        out
    }

    #[test]
    fn streaming_matches_whole_sequence_for_any_chunking_for_every_rule() {
        let (b, t, hq, hkv, dk, dv) = (2, 50, 4, 2, 4, 3);
        let mut rng = Lcg(3);
        let q = tensor(&[b, t, hq * dk], rng.vec(b * t * hq * dk, -1.0, 1.0));
        // Unit-norm keys keep the delta rules contractive.
        let mut kv = rng.vec(b * t * hkv * dk, -1.0, 1.0);
        for r in kv.chunks_mut(dk) {
            let nrm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= nrm);
        }
        let k = tensor(&[b, t, hkv * dk], kv);
        let v = tensor(&[b, t, hkv * dv], rng.vec(b * t * hkv * dv, -1.0, 1.0));
        let decay_head = tensor(&[b, t, hkv], rng.vec(b * t * hkv, -0.3, 0.0));
        let decay_key = tensor(&[b, t, hkv * dk], rng.vec(b * t * hkv * dk, -0.3, 0.0));
        let beta = tensor(&[b, t, hkv], rng.vec(b * t * hkv, 0.1, 0.9));
        let cases: [(Rule, Option<&Tensor>, Option<&Tensor>); 5] = [
            (Rule::Linear, None, None),
            (Rule::Gated, Some(&decay_head), None),
            (Rule::Gated, Some(&decay_key), None),
            (Rule::Delta, None, Some(&beta)),
            (Rule::GatedDelta, Some(&decay_key), Some(&beta)),
        ];
        for (rule, decay, beta) in cases {
            let op = LinearAttentionOp::LinearAttention {
                rule,
                q_num_heads: hq,
                kv_num_heads: hkv,
                scale: None,
                chunk_size: 8,
            };
            let ctx = EvalCtx { n_outputs: 2 };
            let whole = op.eval(&ctx, &[Some(&q), Some(&k), Some(&v), None, decay, beta]).unwrap();
            for sizes in [&[1][..], &[3, 1, 20], &[17, 33]] {
                let mut state: Option<Tensor> = None;
                let mut outs = Vec::new();
                for r in pieces(t, sizes) {
                    let sl = |x: Option<&Tensor>| x.map(|x| slice_t(x, r.clone()));
                    let (dp, bp) = (sl(decay), sl(beta));
                    let ins = [
                        Some(&slice_t(&q, r.clone())),
                        Some(&slice_t(&k, r.clone())),
                        Some(&slice_t(&v, r.clone())),
                        state.as_ref(),
                        dp.as_ref(),
                        bp.as_ref(),
                    ]
                    .map(|x| x.cloned());
                    let refs: Vec<Option<&Tensor>> = ins.iter().map(|x| x.as_ref()).collect();
                    let mut o = op.eval(&ctx, &refs).unwrap();
                    state = Some(o.pop().unwrap());
                    outs.push(o.pop().unwrap());
                }
                let err = max_err(&cat_t(&outs), whole[0].as_slice::<f32>().unwrap());
                let serr = max_err(state.unwrap().as_slice::<f32>().unwrap(), whole[1].as_slice::<f32>().unwrap());
                assert!(err <= 1e-5 && serr <= 1e-5, "{rule:?} {sizes:?}: output {err}, state {serr}");
            }
        }
    }

    #[test]
    fn normalized_causal_streams_with_its_state() {
        let (n, l, h, d, m) = (1, 45, 2, 4, 3);
        let mut rng = Lcg(11);
        let q = tensor(&[n, l, h, d], rng.vec(n * l * h * d, -1.0, 1.0));
        let k = tensor(&[n, l, h, d], rng.vec(n * l * h * d, -1.0, 1.0));
        let v = tensor(&[n, l, h, m], rng.vec(n * l * h * m, -1.0, 1.0));
        let op = LinearAttentionOp::Normalized { causal: true, eps: 1e-6, feature_map: FeatureMap::EluPlusOne };
        let ctx = EvalCtx { n_outputs: 3 };
        let whole = op.eval(&ctx, &[Some(&q), Some(&k), Some(&v)]).unwrap();
        // [N, L, H, D] slices along L are [N, L, H * D] slices.
        let flat = |x: &Tensor| x.reshaped(&[n, l, x.shape()[2] * x.shape()[3]]).unwrap();
        let (qf, kf, vf) = (flat(&q), flat(&k), flat(&v));
        let mut state: Vec<Tensor> = Vec::new();
        let mut outs = Vec::new();
        for r in pieces(l, &[1, 5, 30]) {
            let rs = |x: &Tensor, w: usize| slice_t(x, r.clone()).reshaped(&[n, r.len(), h, w]).unwrap();
            let (qp, kp, vp) = (rs(&qf, d), rs(&kf, d), rs(&vf, m));
            let mut ins = vec![Some(&qp), Some(&kp), Some(&vp)];
            ins.extend(state.iter().map(Some));
            let mut o = op.eval(&ctx, &ins).unwrap();
            state = o.split_off(1);
            outs.push(o.pop().unwrap().reshaped(&[n, r.len(), h * m]).unwrap());
        }
        let err = max_err(&cat_t(&outs), whole[0].as_slice::<f32>().unwrap());
        assert!(err <= 1e-5, "output {err}");
        // Reference: out_i = φ(q_i)ᵀ Σ_{j≤i} φ(k_j) v_jᵀ / (φ(q_i)·Σ_{j≤i} φ(k_j) + eps), in f64.
        let phi = |x: f32| if x > 0.0 { x as f64 + 1.0 } else { (x as f64).exp() };
        let (qv, kv, vv) = (q.as_slice::<f32>().unwrap(), k.as_slice::<f32>().unwrap(), v.as_slice::<f32>().unwrap());
        let got = whole[0].as_slice::<f32>().unwrap();
        for hi in 0..h {
            for i in 0..l {
                let mut den = 1e-6;
                let mut num = vec![0f64; m];
                for j in 0..=i {
                    let dot: f64 = (0..d).map(|c| phi(qv[(i * h + hi) * d + c]) * phi(kv[(j * h + hi) * d + c])).sum();
                    den += dot;
                    (0..m).for_each(|c| num[c] += dot * vv[(j * h + hi) * m + c] as f64);
                }
                for c in 0..m {
                    let want = num[c] / den;
                    assert!((got[(i * h + hi) * m + c] as f64 - want).abs() < 1e-5, "i {i} h {hi}");
                }
            }
        }
    }
}
