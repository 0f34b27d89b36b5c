//! Lowering of exact `Attention` to IceFormer k-NN attention
//! ([`AttentionOp::KnnAttention`]), on request (`floe convert --attention knn`).
//!
//! This is a per-target step, not a portable rewrite (tract's `Sdpa::codegen`): the
//! result approximates the model, so it runs only when asked, after the portable
//! passes, and reports for every `Attention` node whether it was lowered and why.
//! The rule is ALGORITHMS.md section 4.1: lower only when
//!
//! - the key length `S` is known from the facts and `S >= min_keys` (default 1024;
//!   below that the exact kernel is faster and loses nothing). A symbolic or unknown
//!   `S` is lowered only when `min_keys` is 0: the pass cannot tell it will be long;
//! - the mask is only `is_causal` and/or key padding (`nonpad_kv_seqlen`): DCI ranks
//!   keys by `q . k` alone, so an `attn_mask` input (an additive float bias such as
//!   ALiBi or T5 relative positions, or a bool mask) is refused;
//! - `softcap` is off (the k-NN softmax weighs raw scaled scores);
//! - `qk_matmul_output` is not read (the full score matrix; unread, it is dropped).
//!
//! A KV cache is kept: `past_key`/`past_value` stay inputs and the read
//! `present_key`/`present_value` outputs stay (unread ones are dropped), and `S`
//! is then the past length plus the new keys. The lowered node keeps its indexes
//! between calls, so a decode step inserts its keys instead of re-indexing the past.
//!
//! Only the main graph is visited (not If/Loop bodies).

use super::util::consumers;
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{AttentionOp, KnnConfig};
use crate::ops::Op;
use crate::shape::Dim;
use floe_kernels::attention::knn::KnnParams;
use std::fmt;

/// Key lengths below this stay exact unless the user says otherwise.
pub const DEFAULT_MIN_KEYS: usize = 1024;

/// What `--attention knn[:...]` asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnLowering {
    /// The k-NN / DCI parameters every lowered node gets.
    pub params: KnnParams,
    /// Lower only attention over at least this many keys; 0 also lowers symbolic lengths.
    pub min_keys: usize,
}

impl Default for KnnLowering {
    fn default() -> Self {
        KnnLowering { params: KnnParams::default(), min_keys: DEFAULT_MIN_KEYS }
    }
}

impl KnnLowering {
    /// Reads a `key=value,...` list: `min_keys=N` plus any [`KnnParams::set`] key
    /// (`k=20,levels=3,seed=7`). Empty: the defaults.
    pub fn parse(list: &str) -> Result<KnnLowering, String> {
        let mut out = KnnLowering::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((key, value)) if key.trim() == "min_keys" => {
                    out.min_keys = value
                        .trim()
                        .parse()
                        .map_err(|e| format!("knn parameter `min_keys`: `{value}` is not a count ({e})"))?
                }
                _ => out.params.apply(item)?,
            }
        }
        Ok(out)
    }
}

/// How long the key axis of an attention node is.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyLen {
    Fixed(usize),
    /// A named dim, bound only when a plan is made.
    Symbolic(String),
    Unknown,
}

impl fmt::Display for KeyLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLen::Fixed(n) => write!(f, "S = {n}"),
            KeyLen::Symbolic(s) => write!(f, "S = {s} (symbolic)"),
            KeyLen::Unknown => write!(f, "S unknown"),
        }
    }
}

/// Why an `Attention` node stayed exact.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Fewer keys than `min_keys`.
    ShortKeys {
        keys: usize,
        min_keys: usize,
    },
    /// The key length is not known at conversion time and `min_keys > 0`.
    UnknownKeys {
        keys: KeyLen,
        min_keys: usize,
    },
    /// An `attn_mask` input: an additive float bias or a bool mask.
    AttnMask,
    Softcap(f32),
    /// `qk_matmul_output` is read.
    QkOutput,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ShortKeys { keys, min_keys } => {
                write!(f, "S = {keys} keys < min_keys {min_keys} (exact attention is as fast there)")
            }
            Reason::UnknownKeys { keys, min_keys } => write!(
                f,
                "{keys}: the key length is not known to reach min_keys {min_keys} (min_keys=0 lowers it anyway)"
            ),
            Reason::AttnMask => write!(
                f,
                "attn_mask input (additive bias or bool mask): k-NN ranks keys by q.k alone, \
                 only is_causal and nonpad_kv_seqlen are supported"
            ),
            Reason::Softcap(c) => write!(f, "softcap {c} is not supported"),
            Reason::QkOutput => write!(f, "its qk_matmul_output (the full score matrix) is read"),
        }
    }
}

/// The outcome for one `Attention` node.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Replaced by `KnnAttention`.
    Lowered { keys: KeyLen },
    /// Left exact, with every reason that applies.
    Kept(Vec<Reason>),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Lowered { keys } => write!(f, "lowered to KnnAttention ({keys})"),
            Decision::Kept(reasons) => {
                write!(f, "kept exact: ")?;
                for (i, r) in reasons.iter().enumerate() {
                    write!(f, "{}{r}", if i > 0 { "; " } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

/// The sequence dim of K (3-D or 4-D), or of the 4-D past key.
fn seq_dim(g: &Graph, k: ValueId, past: bool) -> Option<&Dim> {
    let shape = g.values.get(k).and_then(|v| v.fact.shape.as_ref())?;
    match (shape.rank(), past) {
        (4, _) => Some(&shape.0[2]),
        (3, false) => Some(&shape.0[1]),
        _ => None,
    }
}

/// Keys the attention spans: K's length, plus the past length with a KV cache.
fn key_len(g: &Graph, k: ValueId, past_key: Option<ValueId>) -> KeyLen {
    let new = seq_dim(g, k, false);
    let past = match past_key {
        Some(p) => seq_dim(g, p, true),
        None => Some(&Dim::Fixed(0)),
    };
    match (new, past) {
        (Some(Dim::Fixed(n)), Some(Dim::Fixed(p))) => KeyLen::Fixed(n + p),
        (Some(Dim::Sym(s)), Some(Dim::Fixed(0))) => KeyLen::Symbolic(s.clone()),
        (Some(Dim::Fixed(0)), Some(Dim::Sym(s))) => KeyLen::Symbolic(s.clone()),
        (Some(a @ (Dim::Sym(_) | Dim::Fixed(_))), Some(b @ (Dim::Sym(_) | Dim::Fixed(_)))) => {
            KeyLen::Symbolic(format!("{} + {}", dim_text(b), dim_text(a)))
        }
        _ => KeyLen::Unknown,
    }
}

fn dim_text(d: &Dim) -> String {
    match d {
        Dim::Fixed(n) => n.to_string(),
        Dim::Sym(s) => s.clone(),
        Dim::Unknown => "?".into(),
    }
}

/// Read by a node or a graph output.
fn is_read(g: &Graph, v: ValueId) -> bool {
    g.outputs.contains(&v) || !consumers(g, v).is_empty()
}

/// Turns each `Attention` node of `g` that can be served by k-NN attention into a
/// `KnnAttention` with `lowering.params`; returns every `Attention` node's name and
/// what was decided, in graph order.
pub fn lower_knn_attention(g: &mut Graph, lowering: &KnnLowering) -> Vec<(String, Decision)> {
    let mut report = Vec::new();
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        let Op::Attention(AttentionOp::Attention { is_causal, q_num_heads, kv_num_heads, scale, softcap, .. }) =
            node.op
        else {
            continue;
        };
        let has = |j: usize| node.inputs.get(j).copied().flatten();
        let mut reasons = Vec::new();
        let keys = has(1).map_or(KeyLen::Unknown, |k| key_len(g, k, has(4)));
        match &keys {
            KeyLen::Fixed(n) if *n < lowering.min_keys => {
                reasons.push(Reason::ShortKeys { keys: *n, min_keys: lowering.min_keys })
            }
            KeyLen::Symbolic(_) | KeyLen::Unknown if lowering.min_keys > 0 => {
                reasons.push(Reason::UnknownKeys { keys: keys.clone(), min_keys: lowering.min_keys })
            }
            _ => {}
        }
        if has(3).is_some() {
            reasons.push(Reason::AttnMask);
        }
        if softcap > 0.0 {
            reasons.push(Reason::Softcap(softcap));
        }
        let out = |j: usize| node.outputs.get(j).copied();
        // Y, then present_key/present_value up to the last one read.
        let n_out = 1 + [1, 2].iter().filter(|&&j| out(j).is_some_and(|v| is_read(g, v))).max().unwrap_or(&0);
        if out(3).is_some_and(|v| is_read(g, v)) {
            reasons.push(Reason::QkOutput);
        }
        let name = node.name.clone();
        if !reasons.is_empty() {
            report.push((name, Decision::Kept(reasons)));
            continue;
        }
        let (nonpad, past) = (has(6), [has(4), has(5)]);
        let node = &mut g.nodes[i];
        node.op = AttentionOp::KnnAttention {
            is_causal,
            q_num_heads,
            kv_num_heads,
            scale,
            knn: KnnConfig::from(&lowering.params),
            cache: Default::default(),
        }
        .into();
        node.inputs.truncate(3);
        if nonpad.is_some() || past.iter().any(Option::is_some) {
            node.inputs.push(nonpad);
        }
        if past.iter().any(Option::is_some) {
            node.inputs.extend(past);
        }
        node.outputs.truncate(n_out);
        report.push((name, Decision::Lowered { keys }));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::ops::attention::QkOutput;
    use crate::shape::{Fact, Shape};

    /// Attention over Q `[1, 2, 8, 16]` and K, V `[1, 2, keys, 16]`, with the given
    /// extra inputs (3..=6) wired to fresh graph inputs and `n_out` outputs, all of
    /// them graph outputs when `read_all`.
    fn graph(keys: Dim, softcap: f32, extra: &[usize], n_out: usize, read_all: bool) -> Graph {
        let mut g = Graph::default();
        let f = |g: &mut Graph, name: &str, dims: Vec<Dim>| {
            let v = g.add_value(name, Fact::new(DType::F32, Shape(dims)));
            g.inputs.push(v);
            v
        };
        let fx = Dim::Fixed;
        let q = f(&mut g, "q", vec![fx(1), fx(2), fx(8), fx(16)]);
        let k = f(&mut g, "k", vec![fx(1), fx(2), keys.clone(), fx(16)]);
        let v = f(&mut g, "v", vec![fx(1), fx(2), keys, fx(16)]);
        let mut inputs = vec![Some(q), Some(k), Some(v), None, None, None, None];
        for &j in extra {
            inputs[j] = Some(f(&mut g, &format!("in{j}"), vec![fx(1)]));
        }
        let outs: Vec<ValueId> = (0..n_out).map(|j| g.add_value(format!("out{j}"), Fact::unknown())).collect();
        let op = AttentionOp::Attention {
            is_causal: true,
            q_num_heads: None,
            kv_num_heads: None,
            scale: Some(0.25),
            softcap,
            qk_output: QkOutput::Raw,
        };
        g.add_node("attn", op.into(), inputs, outs.clone());
        g.outputs = if read_all { outs } else { outs[..1].to_vec() };
        g
    }

    fn decide(mut g: Graph, lowering: &KnnLowering) -> (Decision, Graph) {
        let mut r = lower_knn_attention(&mut g, lowering);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "attn");
        (r.remove(0).1, g)
    }

    fn kept(g: Graph, lowering: &KnnLowering) -> Vec<Reason> {
        match decide(g, lowering).0 {
            Decision::Kept(r) => r,
            d => panic!("lowered: {d}"),
        }
    }

    #[test]
    fn long_causal_attention_with_key_padding_is_lowered_with_its_attributes() {
        let lowering = KnnLowering::parse("k=8,seed=5").unwrap();
        let (d, g) = decide(graph(Dim::Fixed(1024), 0.0, &[6], 3, false), &lowering);
        assert_eq!(d, Decision::Lowered { keys: KeyLen::Fixed(1024) });
        assert_eq!(d.to_string(), "lowered to KnnAttention (S = 1024)");
        let n = &g.nodes[0];
        let Op::Attention(AttentionOp::KnnAttention { is_causal, scale, knn, .. }) = &n.op else { panic!("{n:?}") };
        assert!(*is_causal);
        assert_eq!((*scale, knn.k, knn.seed), (Some(0.25), 8, 5));
        // Q, K, V, nonpad_kv_seqlen; only Y (the unread present outputs are dropped)
        assert_eq!(n.inputs, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(n.outputs.len(), 1);
        g.validate().unwrap();
    }

    #[test]
    fn one_key_short_of_the_threshold_stays_exact() {
        let r = kept(graph(Dim::Fixed(1023), 0.0, &[], 1, true), &KnnLowering::default());
        assert_eq!(r, vec![Reason::ShortKeys { keys: 1023, min_keys: 1024 }]);
        let low = KnnLowering::parse("min_keys=1000").unwrap();
        assert!(matches!(decide(graph(Dim::Fixed(1023), 0.0, &[], 1, true), &low).0, Decision::Lowered { .. }));
    }

    #[test]
    fn symbolic_key_length_stays_exact_unless_min_keys_is_zero() {
        let sym = || graph(Dim::Sym("S".into()), 0.0, &[], 1, true);
        let r = kept(sym(), &KnnLowering::default());
        assert_eq!(r, vec![Reason::UnknownKeys { keys: KeyLen::Symbolic("S".into()), min_keys: 1024 }]);
        assert!(r[0].to_string().contains("S = S (symbolic)"), "{}", r[0]);
        let (d, _) = decide(sym(), &KnnLowering::parse("min_keys=0").unwrap());
        assert_eq!(d, Decision::Lowered { keys: KeyLen::Symbolic("S".into()) });
    }

    #[test]
    fn attn_mask_and_softcap_each_keep_attention_exact() {
        let long = Dim::Fixed(2048);
        let low = KnnLowering::default();
        assert_eq!(kept(graph(long.clone(), 0.0, &[3], 1, true), &low), vec![Reason::AttnMask]);
        assert_eq!(kept(graph(long.clone(), 30.0, &[], 1, true), &low), vec![Reason::Softcap(30.0)]);
        // all reasons at once, in one line
        let d = decide(graph(Dim::Fixed(16), 30.0, &[3], 4, true), &low).0;
        let text = d.to_string();
        assert!(text.starts_with("kept exact: S = 16 keys < min_keys 1024"), "{text}");
        assert!(text.contains("attn_mask") && text.contains("qk_matmul_output") && text.contains("softcap"), "{text}");
    }

    #[test]
    fn a_read_qk_output_keeps_attention_exact_and_unread_outputs_are_dropped() {
        let low = KnnLowering::default();
        let r = kept(graph(Dim::Fixed(2048), 0.0, &[], 4, true), &low);
        assert_eq!(r, vec![Reason::QkOutput]);
        // unread: dropped, and the node is lowered
        let (d, g) = decide(graph(Dim::Fixed(2048), 0.0, &[], 4, false), &low);
        assert!(matches!(d, Decision::Lowered { .. }));
        assert_eq!(g.nodes[0].outputs.len(), 1);
    }

    #[test]
    fn a_kv_cache_is_lowered_keeping_its_past_inputs_and_read_present_outputs() {
        let low = KnnLowering::default();
        // 8 new keys after a past of 2040: S = 2048.
        let mut g = graph(Dim::Fixed(8), 0.0, &[4, 5], 3, true);
        for j in [3, 4] {
            let past = Shape(vec![Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(2040), Dim::Fixed(16)]);
            g.values[j].fact = Fact::new(DType::F32, past);
        }
        let (d, g) = decide(g, &low);
        assert_eq!(d, Decision::Lowered { keys: KeyLen::Fixed(2048) });
        let n = &g.nodes[0];
        // Q, K, V, no nonpad_kv_seqlen, past_key, past_value; Y, present_key, present_value
        assert_eq!(n.inputs, vec![Some(0), Some(1), Some(2), None, Some(3), Some(4)]);
        assert_eq!(n.outputs.len(), 3);
        g.validate().unwrap();
        // A symbolic past (decode) needs min_keys=0, and says why.
        let mut g = graph(Dim::Fixed(1), 0.0, &[4, 5], 3, false);
        for j in [3, 4] {
            let past = Shape(vec![Dim::Fixed(1), Dim::Fixed(2), Dim::Sym("P".into()), Dim::Fixed(16)]);
            g.values[j].fact = Fact::new(DType::F32, past);
        }
        let r = kept(g.clone(), &low);
        assert_eq!(r, vec![Reason::UnknownKeys { keys: KeyLen::Symbolic("P + 1".into()), min_keys: 1024 }]);
        let (d, g) = decide(g, &KnnLowering::parse("min_keys=0").unwrap());
        assert!(matches!(d, Decision::Lowered { .. }));
        assert_eq!(g.nodes[0].outputs.len(), 1, "unread present outputs are dropped");
    }

    #[test]
    fn parse_reads_min_keys_and_knn_parameters_and_names_bad_ones() {
        let l = KnnLowering::parse("k=32, min_keys=256,levels=2").unwrap();
        assert_eq!((l.params.k, l.params.levels, l.min_keys), (32, 2, 256));
        assert_eq!(KnnLowering::parse("").unwrap(), KnnLowering::default());
        assert!(KnnLowering::parse("min_keys=x").unwrap_err().contains("min_keys"));
        assert!(KnnLowering::parse("kk=3").unwrap_err().contains("kk"));
    }
}
