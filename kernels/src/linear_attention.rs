//! Linear attention with a recurrent state, for one key/value head at a time, as pure
//! functions on contiguous slices.
//!
//! One recurrence covers ONNX `LinearAttention`-27's four update rules (state
//! `S ∈ R^{dk x dv}`, decay `g_t` in log space, update rate `β_t`):
//!
//! ```text
//! linear       S_t = S_{t-1} + k_t v_tᵀ
//! gated        S_t = e^{g_t} S_{t-1} + k_t v_tᵀ
//! delta        S_t = S_{t-1} + β_t k_t (v_t - S_{t-1}ᵀ k_t)ᵀ
//! gated_delta  S_t = e^{g_t} S_{t-1} + β_t k_t (v_t - e^{g_t} S_{t-1}ᵀ k_t)ᵀ
//! o_t = scale · S_tᵀ q_t
//! ```
//!
//! (`e^{g_t}` is a scalar per head or a diagonal over the key dim, GLA-style.) Two
//! forms compute it and agree up to rounding:
//!
//! - [`recurrent`]: token by token, `O(dk·dv)` per token and head: the streaming
//!   (`T = 1`) path and the short-sequence path.
//! - [`chunked`]: the chunk-parallel form for prefill. With `Γ_t = Π_{s≤t} e^{g_s}`
//!   inside a chunk (`b_t = Σ g_s`, so `Γ_t Γ_s⁻¹ = diag(e^{b_t - b_s})`) and the
//!   state `S_0` entering it, every rule writes `S_t = Γ_t S_0 + Σ_{s≤t} Γ_tΓ_s⁻¹ k_s u_sᵀ`
//!   where `u_s = v_s` (linear, gated) or, for the delta rules, the WY-style
//!   pseudo-values `u_t = β_t (v_t - (Γ_t k_t)ᵀ S_0 - Σ_{s<t} (k_tᵀ Γ_tΓ_s⁻¹ k_s) u_s)`
//!   (a unit lower-triangular solve). Then
//!   `o_t = scale (q_tᵀ Γ_t S_0 + Σ_{s≤t} (q_tᵀ Γ_tΓ_s⁻¹ k_s) u_s)` and the state
//!   leaving the chunk is `Γ_C S_0 + K̂ᵀ U` with `k̂_s = Γ_CΓ_s⁻¹ k_s`. The products
//!   `Q S_0`, `Q Kᵀ`, `A U` and `K̂ᵀ U` are GEMMs; per-key-dim decay needs the
//!   `C x C` score matrices with the decay inside the dot product (a plain loop).
//!
//! Reference: ONNX operator spec `LinearAttention`-27 and onnx/reference/ops/
//! op_linear_attention.py; chunking after Yang et al., "Gated Linear Attention"
//! (2023) and "Parallelizing Linear Transformers with the Delta Rule" (2024).
//! Katharopoulos et al.'s normalised linear attention (ALGORITHMS.md §2.2-2.3)
//! runs on the `linear` rule with a column of ones appended to V: that column of
//! the state is the normaliser `z` (see [`normalize_rows`]).

use crate::gemm::{sgemm, MatRef};

/// The recurrence of an update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

impl UpdateRule {
    pub fn gated(self) -> bool {
        matches!(self, UpdateRule::Gated | UpdateRule::GatedDelta)
    }

    pub fn delta(self) -> bool {
        matches!(self, UpdateRule::Delta | UpdateRule::GatedDelta)
    }
}

/// The log-space decay `g_t` of one key/value head.
#[derive(Clone, Copy, Debug)]
pub enum Decay<'a> {
    None,
    /// One value per token: `[T]`.
    PerHead(&'a [f32]),
    /// One value per token and key dim: `[T, dk]`.
    PerKey(&'a [f32]),
}

/// One key/value head's sequence and the query heads that read its state.
///
/// `q` is `[groups, T, dk]` (the query heads sharing this state, GQA), `k` is
/// `[T, dk]`, `v` is `[T, dv]`, `beta` (delta rules) is `[T]`.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub decay: Decay<'a>,
    pub beta: Option<&'a [f32]>,
    pub groups: usize,
    pub t: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Head<'_> {
    fn check(&self, rule: UpdateRule, state: &[f32], out: &[f32]) {
        let (t, dk, dv) = (self.t, self.dk, self.dv);
        assert!(self.q.len() >= self.groups * t * dk, "q shorter than [groups, T, dk]");
        assert!(self.k.len() >= t * dk && self.v.len() >= t * dv, "k or v shorter than [T, d]");
        assert!(state.len() >= dk * dv, "state shorter than [dk, dv]");
        assert!(out.len() >= self.groups * t * dv, "out shorter than [groups, T, dv]");
        match self.decay {
            Decay::None => assert!(!rule.gated(), "{rule:?} needs a decay"),
            Decay::PerHead(g) => assert!(g.len() >= t),
            Decay::PerKey(g) => assert!(g.len() >= t * dk),
        }
        if rule.delta() {
            assert!(self.beta.is_some_and(|b| b.len() >= t), "{rule:?} needs beta [T]");
        }
    }

    /// `g_t[d]` (0 when there is no decay).
    #[inline]
    fn g(&self, t: usize, d: usize) -> f32 {
        match self.decay {
            Decay::None => 0.0,
            Decay::PerHead(g) => g[t],
            Decay::PerKey(g) => g[t * self.dk + d],
        }
    }
}

/// Sequences at most this long run [`recurrent`] in [`run`]; longer ones [`chunked`].
pub const RECURRENT_MAX_T: usize = 16;

/// Runs the head with the form that suits its length: `state` (`[dk, dv]`, row-major)
/// enters as the past state and leaves as the present state; `out` is `[groups, T, dv]`.
pub fn run(h: &Head<'_>, rule: UpdateRule, scale: f32, chunk: usize, state: &mut [f32], out: &mut [f32]) {
    if h.t <= RECURRENT_MAX_T {
        recurrent(h, rule, scale, state, out)
    } else {
        chunked(h, rule, scale, chunk, state, out)
    }
}

/// The token-by-token recurrence (see the module doc).
pub fn recurrent(h: &Head<'_>, rule: UpdateRule, scale: f32, state: &mut [f32], out: &mut [f32]) {
    h.check(rule, state, out);
    let (dk, dv) = (h.dk, h.dv);
    let s = &mut state[..dk * dv];
    let mut u = vec![0f32; dv];
    for t in 0..h.t {
        if rule.gated() {
            for d in 0..dk {
                let a = h.g(t, d).exp();
                s[d * dv..(d + 1) * dv].iter_mut().for_each(|x| *x *= a);
            }
        }
        let k = &h.k[t * dk..(t + 1) * dk];
        u.copy_from_slice(&h.v[t * dv..(t + 1) * dv]);
        if rule.delta() {
            // u = β (v - Sᵀ k), S already decayed
            let beta = h.beta.expect("checked")[t];
            for (d, &kd) in k.iter().enumerate() {
                for (uj, &sj) in u.iter_mut().zip(&s[d * dv..(d + 1) * dv]) {
                    *uj -= kd * sj;
                }
            }
            u.iter_mut().for_each(|x| *x *= beta);
        }
        for (d, &kd) in k.iter().enumerate() {
            for (sj, &uj) in s[d * dv..(d + 1) * dv].iter_mut().zip(&u) {
                *sj += kd * uj;
            }
        }
        for gi in 0..h.groups {
            let q = &h.q[(gi * h.t + t) * dk..(gi * h.t + t + 1) * dk];
            let o = &mut out[(gi * h.t + t) * dv..(gi * h.t + t + 1) * dv];
            o.fill(0.0);
            for (d, &qd) in q.iter().enumerate() {
                for (oj, &sj) in o.iter_mut().zip(&s[d * dv..(d + 1) * dv]) {
                    *oj += qd * sj;
                }
            }
            o.iter_mut().for_each(|x| *x *= scale);
        }
    }
}

/// The chunk-parallel form (see the module doc); `chunk` tokens per chunk (0 = 64).
pub fn chunked(h: &Head<'_>, rule: UpdateRule, scale: f32, chunk: usize, state: &mut [f32], out: &mut [f32]) {
    h.check(rule, state, out);
    let (dk, dv, tt) = (h.dk, h.dv, h.t);
    let cs = if chunk == 0 { 64 } else { chunk }.min(tt.max(1));
    let per_key = matches!(h.decay, Decay::PerKey(_));
    // Scratch, sized for a full chunk.
    let mut b = vec![0f32; cs * dk]; // cumulative log decay b_t (per key dim, or broadcast)
    let mut qg = vec![0f32; cs * dk]; // Γ_t q_t
    let mut kg = vec![0f32; cs * dk]; // Γ_t k_t
    let mut kh = vec![0f32; cs * dk]; // Γ_CΓ_s⁻¹ k_s
    let mut a = vec![0f32; cs * cs]; // scores, with the decay and the causal mask
    let mut u = vec![0f32; cs * dv]; // pseudo-values
    let mut o = vec![0f32; cs * dv];
    let mut s0 = vec![0f32; dk * dv];
    let mut c0 = 0;
    while c0 < tt {
        let c = cs.min(tt - c0);
        let k = &h.k[c0 * dk..(c0 + c) * dk];
        let v = &h.v[c0 * dv..(c0 + c) * dv];
        // b_t = Σ_{s≤t} g_s inside the chunk.
        for t in 0..c {
            for d in 0..dk {
                let prev = if t == 0 { 0.0 } else { b[(t - 1) * dk + d] };
                b[t * dk + d] = prev + h.g(c0 + t, d);
            }
        }
        let decay = |t: usize, s: usize, d: usize| (b[t * dk + d] - b[s * dk + d]).exp();
        let scale_rows = |dst: &mut [f32], src: &[f32], f: &dyn Fn(usize, usize) -> f32| {
            for t in 0..c {
                for d in 0..dk {
                    dst[t * dk + d] = src[t * dk + d] * f(t, d);
                }
            }
        };
        // Key-key scores for the triangular solve (strictly lower).
        let scores = |a: &mut [f32], x: &[f32], strict: bool| {
            if per_key {
                for t in 0..c {
                    for s in 0..c {
                        a[t * c + s] = if s < t || (!strict && s == t) {
                            (0..dk).map(|d| x[t * dk + d] * k[s * dk + d] * decay(t, s, d)).sum()
                        } else {
                            0.0
                        };
                    }
                }
            } else {
                sgemm(1.0, MatRef::new(x, c, dk), MatRef::new(k, c, dk).t(), 0.0, &mut a[..c * c]);
                for t in 0..c {
                    for s in 0..c {
                        let keep = s < t || (!strict && s == t);
                        a[t * c + s] = if keep { a[t * c + s] * decay(t, s, 0) } else { 0.0 };
                    }
                }
            }
        };
        s0.copy_from_slice(&state[..dk * dv]);
        // Pseudo-values U.
        u[..c * dv].copy_from_slice(v);
        if rule.delta() {
            let beta = &h.beta.expect("checked")[c0..c0 + c];
            scale_rows(&mut kg, k, &|t, d| if rule.gated() { b[t * dk + d].exp() } else { 1.0 });
            // U = V - (Γ K) S_0
            sgemm(-1.0, MatRef::new(&kg[..c * dk], c, dk), MatRef::new(&s0, dk, dv), 1.0, &mut u[..c * dv]);
            scores(&mut a, k, true);
            // Forward substitution: u_t = β_t (u_t - Σ_{s<t} a_ts u_s).
            for t in 0..c {
                let (done, rest) = u.split_at_mut(t * dv);
                let ut = &mut rest[..dv];
                for s in 0..t {
                    let w = a[t * c + s];
                    if w != 0.0 {
                        for (x, &y) in ut.iter_mut().zip(&done[s * dv..(s + 1) * dv]) {
                            *x -= w * y;
                        }
                    }
                }
                ut.iter_mut().for_each(|x| *x *= beta[t]);
            }
        }
        // Outputs per query head: scale (Γ Q S_0 + A U).
        for gi in 0..h.groups {
            let q = &h.q[(gi * tt + c0) * dk..(gi * tt + c0 + c) * dk];
            let q_in: &[f32] = if rule.gated() {
                scale_rows(&mut qg, q, &|t, d| b[t * dk + d].exp());
                &qg[..c * dk]
            } else {
                q
            };
            sgemm(1.0, MatRef::new(q_in, c, dk), MatRef::new(&s0, dk, dv), 0.0, &mut o[..c * dv]);
            scores(&mut a, q, false);
            sgemm(1.0, MatRef::new(&a[..c * c], c, c), MatRef::new(&u[..c * dv], c, dv), 1.0, &mut o[..c * dv]);
            let dst = &mut out[(gi * tt + c0) * dv..(gi * tt + c0 + c) * dv];
            for (x, &y) in dst.iter_mut().zip(&o[..c * dv]) {
                *x = scale * y;
            }
        }
        // State leaving the chunk: Γ_C S_0 + K̂ᵀ U.
        let last = c - 1;
        let st = &mut state[..dk * dv];
        st.copy_from_slice(&s0);
        if rule.gated() {
            for d in 0..dk {
                let g = b[last * dk + d].exp();
                st[d * dv..(d + 1) * dv].iter_mut().for_each(|x| *x *= g);
            }
            scale_rows(&mut kh, k, &|s, d| decay(last, s, d));
        } else {
            kh[..c * dk].copy_from_slice(k);
        }
        sgemm(1.0, MatRef::new(&kh[..c * dk], c, dk).t(), MatRef::new(&u[..c * dv], c, dv), 1.0, st);
        c0 += c;
    }
}

/// Katharopoulos normalisation in place: `rows` rows of `dv + 1` values, where the
/// last value of each row is the denominator `φ(q)·z`; the first `dv` become
/// `num / (den + eps)`. Output row `i` is written to `out[i * dv..]`.
pub fn normalize_rows(aug: &[f32], rows: usize, dv: usize, eps: f32, out: &mut [f32]) {
    for i in 0..rows {
        let r = &aug[i * (dv + 1)..(i + 1) * (dv + 1)];
        let inv = 1.0 / (r[dv] + eps);
        for (o, &x) in out[i * dv..(i + 1) * dv].iter_mut().zip(&r[..dv]) {
            *o = x * inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dev-dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            (0..n).map(|_| lo + (self.next() + 1.0) * 0.5 * (hi - lo)).collect()
        }
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Unit-norm keys, as the delta rules expect.
    fn l2_rows(x: &mut [f32], d: usize) {
        for r in x.chunks_mut(d) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            r.iter_mut().for_each(|v| *v /= n);
        }
    }

    #[test]
    fn chunked_matches_recurrent_for_every_rule_and_chunk_size() {
        let (groups, t, dk, dv) = (2, 37, 5, 3);
        let mut rng = Lcg(7);
        let q = rng.vec(groups * t * dk, -1.0, 1.0);
        let mut k = rng.vec(t * dk, -1.0, 1.0);
        l2_rows(&mut k, dk);
        let v = rng.vec(t * dv, -1.0, 1.0);
        let gh = rng.vec(t, -0.5, 0.0);
        let gk = rng.vec(t * dk, -0.5, 0.0);
        let beta = rng.vec(t, 0.1, 0.9);
        let s_init = rng.vec(dk * dv, -0.5, 0.5);
        for rule in [UpdateRule::Linear, UpdateRule::Gated, UpdateRule::Delta, UpdateRule::GatedDelta] {
            for decay in [Decay::PerHead(&gh), Decay::PerKey(&gk)] {
                let decay = if rule.gated() { decay } else { Decay::None };
                let h = Head { q: &q, k: &k, v: &v, decay, beta: Some(&beta), groups, t, dk, dv };
                let (mut s1, mut o1) = (s_init.clone(), vec![0f32; groups * t * dv]);
                recurrent(&h, rule, 0.7, &mut s1, &mut o1);
                for chunk in [1, 4, 16, 64] {
                    let (mut s2, mut o2) = (s_init.clone(), vec![0f32; groups * t * dv]);
                    chunked(&h, rule, 0.7, chunk, &mut s2, &mut o2);
                    assert!(max_err(&o1, &o2) < 1e-5, "{rule:?} {decay:?} chunk {chunk}: {}", max_err(&o1, &o2));
                    assert!(max_err(&s1, &s2) < 1e-5, "{rule:?} chunk {chunk} state");
                }
            }
        }
    }

    #[test]
    fn one_token_linear_is_scaled_outer_product_read() {
        // S = k vᵀ = [[2, 4], [-1, -2]] (k = [2, -1], v = [1, 2]); o = 0.5 Sᵀ q, q = [1, 1].
        let h = Head {
            q: &[1.0, 1.0],
            k: &[2.0, -1.0],
            v: &[1.0, 2.0],
            decay: Decay::None,
            beta: None,
            groups: 1,
            t: 1,
            dk: 2,
            dv: 2,
        };
        let (mut s, mut o) = (vec![0f32; 4], vec![0f32; 2]);
        recurrent(&h, UpdateRule::Linear, 0.5, &mut s, &mut o);
        assert_eq!(s, [2.0, 4.0, -1.0, -2.0]);
        assert_eq!(o, [0.5, 1.0]);
    }
}
