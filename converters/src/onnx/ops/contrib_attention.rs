//! onnxruntime's fused attention contrib ops, `com.microsoft.Attention` and
//! `com.microsoft.MultiHeadAttention`, lowered onto floe's canonical ONNX
//! `Attention`-23/24 op (plus the MatMul / Add / Split / Cast / Where nodes of their
//! input projection and mask conversion).
//!
//! Why: ORT's transformer optimizer rewrites BERT / GPT-2 style models into these
//! ops, so models "optimized for ORT" only run in floe if they are imported; mapping
//! them onto the one canonical `Attention` node keeps a single attention kernel and
//! lets passes (e.g. the IceFormer rewrite, ALGORITHMS.md section 4.1, pattern P4)
//! treat them like any other attention.
//!
//! Reference: onnxruntime `docs/ContribOperators.md` (com.microsoft.Attention,
//! com.microsoft.MultiHeadAttention); the numbers are checked against onnxruntime's
//! CPU kernels by `converters/tests/contrib_attention.rs`.
//!
//! Semantics kept from ORT:
//! - A 0/1 mask (2-D `[B, total]` or 3-D `[B, S, total]`) becomes an *additive*
//!   float mask of `0` / `mask_filter_value` (default -10000), as ORT adds that value
//!   rather than -inf: a query whose keys are all masked averages the values, it does
//!   not become NaN.
//! - A 1-D `[B]` mask (key lengths, right padding) becomes `nonpad_kv_seqlen`, the
//!   canonical key-padding input (-inf beyond the length). The one difference to ORT:
//!   a batch entry of length 0 gives NaN where ORT averages the (padding) values.
//! - `unidirectional` becomes `is_causal` with the past length as offset (key `j` is
//!   visible to query `i` iff `j <= i + past`), which is what ORT computes; -inf or
//!   ORT's -10000 give the same weights there.
//!
//! Refused with [`ConvError::Unsupported`] (naming the attribute or input):
//! rotary embedding (`do_rotary`), shared past/present buffers
//! (`past_present_share_buffer`, `past_sequence_length`), the left-padding `[2B]`
//! and `[3B+2]` mask-index forms, 4-D Megatron masks, MHA packed QKV / packed KV
//! layouts, key/value given as a BNSH cache (cross-attention cache),
//! `cache_indirection`, and `unidirectional` with a key length different from the
//! query length and no past (ORT's result there follows no documented rule).

use crate::conv_unsupported;
use crate::onnx::lowering::{Lowering, Val};
use crate::onnx::registry::{ConvError, ConvResult, NodeCtx, Registry};
use floe_engine::ops::attention::{AttentionOp, QkOutput};
use floe_engine::ops::elementwise::{BinaryOp, ElementwiseOp};
use floe_engine::ops::gather::GatherOp;
use floe_engine::ops::layout::LayoutOp;
use floe_engine::ops::matmul::MatMulOp;
use floe_engine::{DType, Dim, Tensor};

/// ORT's default `mask_filter_value`.
const MASK_FILTER_DEFAULT: f32 = -10000.0;

/// The positive `num_heads` attribute (required by both ops).
fn num_heads(c: &NodeCtx) -> ConvResult<usize> {
    match c.int("num_heads")? {
        Some(n) if n > 0 => Ok(n as usize),
        Some(n) => Err(ConvError::Invalid(format!("num_heads must be positive, got {n}"))),
        None => Err(ConvError::Invalid("missing required attribute 'num_heads'".into())),
    }
}

/// `scale`: absent or 0 means ORT's default `1/sqrt(head_size)`.
fn scale(c: &NodeCtx) -> ConvResult<Option<f32>> {
    Ok(c.float("scale")?.filter(|&s| s != 0.0))
}

/// Refuses a non-zero integer attribute floe does not implement.
fn refuse_flag(c: &NodeCtx, name: &str, what: &str) -> ConvResult<()> {
    match c.int_or(name, 0)? {
        0 => Ok(()),
        v => conv_unsupported!("attribute '{name}'={v} ({what}) is not supported"),
    }
}

/// Refuses an optional input floe does not implement.
fn refuse_input(c: &NodeCtx, i: usize, name: &str, what: &str) -> ConvResult<()> {
    if c.has_input(i) {
        conv_unsupported!("input {i} '{name}' ({what}) is not supported");
    }
    Ok(())
}

/// Dims of input `i` if its rank is known.
fn dims(c: &NodeCtx, i: usize) -> Option<Vec<Dim>> {
    c.input_fact(i).shape.map(|s| s.0)
}

/// The float dtype the query computes in (f32 when unknown).
fn float_dtype(c: &NodeCtx, i: usize) -> DType {
    c.input_fact(i).dtype.filter(|d| d.is_float()).unwrap_or(DType::F32)
}

/// The two ways a key mask reaches the canonical `Attention` op.
#[derive(Default)]
struct Masks {
    /// Additive float mask, `[B, 1, 1|S, total]`, possibly plus `attention_bias`.
    additive: Option<Val>,
    /// `nonpad_kv_seqlen` (int64 `[B]`).
    nonpad: Option<Val>,
}

/// Lowers a mask input (`mask_index` / `key_padding_mask`, input `i`) and the
/// additive `attention_bias` (input `bias_i`, `[B|1, H|1, S, total]`).
/// `batch` is the batch dim of the query, used to tell `[B]` from `[2B]` masks.
fn masks(
    low: &mut Lowering,
    c: &NodeCtx,
    (i, what): (usize, &str),
    bias_i: usize,
    batch: Option<Dim>,
    dtype: DType,
) -> ConvResult<Masks> {
    let mut m = Masks::default();
    if c.has_input(i) {
        let Some(d) = dims(c, i) else {
            conv_unsupported!(
                "input {i} '{what}' has a rank unknown at import; floe needs it to tell key lengths [batch] from \
                 a 0/1 mask [batch, total_sequence_length] (declare its shape in value_info)"
            )
        };
        match d.len() {
            1 => {
                if let (Dim::Fixed(n), Some(Dim::Fixed(b))) = (&d[0], &batch) {
                    if *n == 2 * b && *b > 0 {
                        conv_unsupported!(
                            "input {i} '{what}' of shape [2 * batch] (left padding: end and start positions) is not \
                             supported; only [batch] key lengths (right padding) are"
                        );
                    }
                    if *n != *b {
                        conv_unsupported!(
                            "input {i} '{what}' of shape [{n}] with batch {b}: only [batch] key lengths are supported \
                             (not the [2 * batch] or [3 * batch + 2] forms)"
                        );
                    }
                }
                let lens = low.node("key_lengths", LayoutOp::Cast { to: DType::I64 }, vec![Some(Val::Input(i))]);
                m.nonpad = Some(lens);
            }
            2 | 3 => {
                let filter = c.float_or("mask_filter_value", MASK_FILTER_DEFAULT)?;
                let as_f32 = low.node("mask_f32", LayoutOp::Cast { to: DType::F32 }, vec![Some(Val::Input(i))]);
                let zero = low.constant("zero", Tensor::scalar(0.0f32));
                let keep =
                    low.node("mask_keep", ElementwiseOp::Binary(BinaryOp::Greater), vec![Some(as_f32), Some(zero)]);
                let fill = low.constant("mask_filter_value", Tensor::scalar(filter));
                let mut add = low.node("mask_additive", ElementwiseOp::Where, vec![Some(keep), Some(zero), Some(fill)]);
                if dtype != DType::F32 {
                    add = low.node("mask_cast", LayoutOp::Cast { to: dtype }, vec![Some(add)]);
                }
                // [B, T] -> [B, 1, 1, T]; [B, S, T] -> [B, 1, S, T] (the op broadcasts from the right).
                let axes = if d.len() == 2 { vec![1, 2] } else { vec![1] };
                m.additive = Some(low.node("mask_4d", LayoutOp::Unsqueeze { axes: Some(axes) }, vec![Some(add)]));
            }
            4 => conv_unsupported!(
                "input {i} '{what}' of rank 4 ([batch, 1, max_sequence_length, max_sequence_length]) is not supported"
            ),
            r => {
                return Err(ConvError::Invalid(format!("input {i} '{what}' must have rank 1 to 4, got rank {r}")));
            }
        }
    }
    if c.has_input(bias_i) {
        let bias = Some(Val::Input(bias_i));
        m.additive = Some(match m.additive {
            None => Val::Input(bias_i),
            Some(mask) => low.node("mask_plus_bias", ElementwiseOp::Binary(BinaryOp::Add), vec![Some(mask), bias]),
        });
    }
    Ok(m)
}

/// Refuses `unidirectional` when the key length is known to differ from the query
/// length without a past (there ORT's causal mask follows no documented alignment).
fn check_causal(q_seq: Option<&Dim>, k_seq: Option<&Dim>, has_past: bool) -> ConvResult<()> {
    if let (Some(Dim::Fixed(s)), Some(Dim::Fixed(l)), false) = (q_seq, k_seq, has_past) {
        if s != l {
            conv_unsupported!(
                "attribute 'unidirectional'=1 with {s} query positions but {l} key positions (causal cross-attention) \
                 is not supported"
            );
        }
    }
    Ok(())
}

/// `com.microsoft.Attention`: `qkv = input @ weights + bias`, split into Q, K, V
/// (sizes from `qkv_hidden_sizes`, else three equal parts), then attention.
/// Inputs: input, weights, bias?, mask_index?, past?, attention_bias?,
/// past_sequence_length?. Outputs: output, present? (`[2, B, H, total, D]`).
fn attention(c: &NodeCtx) -> ConvResult<Lowering> {
    let heads = num_heads(c)?;
    refuse_flag(c, "do_rotary", "rotary position embedding")?;
    refuse_flag(c, "past_present_share_buffer", "past and present sharing one buffer")?;
    refuse_input(c, 6, "past_sequence_length", "shared past/present buffer")?;
    let unidirectional = c.int_or("unidirectional", 0)? != 0;
    let sizes = match c.ints("qkv_hidden_sizes")? {
        None => None,
        Some(s) if s.len() == 3 && s.iter().all(|&x| x > 0) && s[0] == s[1] => Some(s),
        Some(s) => {
            return Err(ConvError::Invalid(format!(
                "qkv_hidden_sizes must be 3 positive sizes with Q and K equal, got {s:?}"
            )))
        }
    };
    let dtype = float_dtype(c, 0);
    let x = dims(c, 0);
    let mut low = Lowering::new();
    let mut qkv = low.node("qkv_proj", MatMulOp::MatMul, vec![Some(Val::Input(0)), Some(Val::Input(1))]);
    if c.has_input(2) {
        qkv = low.node("qkv_bias", ElementwiseOp::Binary(BinaryOp::Add), vec![Some(qkv), Some(Val::Input(2))]);
    }
    let split = LayoutOp::Split { axis: -1, num_outputs: Some(3), split: sizes };
    let qkv = low.node_n("qkv_split", split, vec![Some(qkv)], 3);
    let has_past = c.has_input(4);
    let (past_k, past_v) = if has_past {
        let mut half = |k: i64, label: &str| {
            let idx = low.constant(&format!("{label}_index"), Tensor::scalar(k));
            low.node(label, GatherOp::Gather { axis: 0 }, vec![Some(Val::Input(4)), Some(idx)])
        };
        (Some(half(0, "past_key")), Some(half(1, "past_value")))
    } else {
        (None, None)
    };
    if unidirectional {
        // Self-attention: K has the query's positions.
        let s = x.as_ref().and_then(|d| d.get(1));
        check_causal(s, s, has_past)?;
    }
    let batch = x.as_ref().and_then(|d| d.first().cloned());
    let m = masks(&mut low, c, (3, "mask_index"), 5, batch, dtype)?;
    let op = AttentionOp::Attention {
        is_causal: unidirectional,
        q_num_heads: Some(heads),
        kv_num_heads: Some(heads),
        scale: scale(c)?,
        softcap: 0.0,
        qk_output: QkOutput::Raw,
    };
    let inputs = vec![Some(qkv[0]), Some(qkv[1]), Some(qkv[2]), m.additive, past_k, past_v, m.nonpad];
    if c.has_output(1) {
        let (pk, pv) = (low.temp("present_key"), low.temp("present_value"));
        low.node_to("attention", op, inputs, vec![Val::Output(0), pk, pv]);
        let unsq = |low: &mut Lowering, v: Val, label: &str| {
            low.node(label, LayoutOp::Unsqueeze { axes: Some(vec![0]) }, vec![Some(v)])
        };
        let (pk, pv) = (unsq(&mut low, pk, "present_key_5d"), unsq(&mut low, pv, "present_value_5d"));
        low.node_to("present", LayoutOp::Concat { axis: 0 }, vec![Some(pk), Some(pv)], vec![Val::Output(1)]);
    } else {
        low.node_to("attention", op, inputs, vec![Val::Output(0)]);
    }
    Ok(low)
}

/// `com.microsoft.MultiHeadAttention` with separate 3-D query, key and value.
/// Inputs: query, key, value, bias? (`[Hq + Hk + Hv]`, added to Q, K, V),
/// key_padding_mask?, attention_bias?, past_key?, past_value? (`[B, H, P, D]`),
/// past_sequence_length?, cache_indirection?. Outputs: output, present_key?,
/// present_value?, qk? (the scaled scores plus bias and mask, before softmax).
fn multi_head_attention(c: &NodeCtx) -> ConvResult<Lowering> {
    let heads = num_heads(c)?;
    refuse_input(c, 8, "past_sequence_length", "shared past/present buffer")?;
    refuse_input(c, 9, "cache_indirection", "beam-search cache indirection")?;
    let q = dims(c, 0);
    if q.as_ref().is_some_and(|d| d.len() == 5) || !c.has_input(1) {
        conv_unsupported!("packed QKV (query [batch, seq, num_heads, 3, head_size], no key/value) is not supported");
    }
    if !c.has_input(2) {
        conv_unsupported!("packed KV (key [batch, kv_seq, num_heads, 2, head_size], no value) is not supported");
    }
    let (k, v) = (dims(c, 1), dims(c, 2));
    match k.as_ref().map(Vec::len) {
        Some(5) => conv_unsupported!("packed KV (key [batch, kv_seq, num_heads, 2, head_size]) is not supported"),
        Some(4) => conv_unsupported!(
            "key/value given as a [batch, num_heads, kv_seq, head_size] cache (cross-attention cache) is not supported"
        ),
        _ => {}
    }
    if v.as_ref().is_some_and(|d| d.len() == 4) {
        conv_unsupported!(
            "key/value given as a [batch, num_heads, kv_seq, head_size] cache (cross-attention cache) is not supported"
        );
    }
    let unidirectional = c.int_or("unidirectional", 0)? != 0;
    let has_past = c.has_input(6) || c.has_input(7);
    if unidirectional {
        let seq = |d: &Option<Vec<Dim>>| d.as_ref().filter(|d| d.len() == 3).map(|d| d[1].clone());
        check_causal(seq(&q).as_ref(), seq(&k).as_ref(), has_past)?;
    }
    if c.has_output(3) && unidirectional {
        conv_unsupported!("output 3 'qk' together with 'unidirectional'=1 is not supported");
    }
    let dtype = float_dtype(c, 0);
    let mut low = Lowering::new();
    let (mut qv, mut kv, mut vv) = (Val::Input(0), Val::Input(1), Val::Input(2));
    if c.has_input(3) {
        // [Hq + Hk + Hv]: equal thirds unless the hidden sizes are known to differ.
        let hidden = |d: &Option<Vec<Dim>>| match d.as_ref().and_then(|d| d.last()) {
            Some(Dim::Fixed(n)) => Some(*n as i64),
            _ => None,
        };
        let split = match (hidden(&q), hidden(&k), hidden(&v)) {
            (Some(a), Some(b), Some(cc)) => Some(vec![a, b, cc]),
            _ => None,
        };
        let parts = low.node_n(
            "bias_split",
            LayoutOp::Split { axis: 0, num_outputs: Some(3), split },
            vec![Some(Val::Input(3))],
            3,
        );
        let add = ElementwiseOp::Binary(BinaryOp::Add);
        qv = low.node("query_bias", add.clone(), vec![Some(qv), Some(parts[0])]);
        kv = low.node("key_bias", add.clone(), vec![Some(kv), Some(parts[1])]);
        vv = low.node("value_bias", add, vec![Some(vv), Some(parts[2])]);
    }
    let batch = q.as_ref().and_then(|d| d.first().cloned());
    let m = masks(&mut low, c, (4, "key_padding_mask"), 5, batch, dtype)?;
    let op = AttentionOp::Attention {
        is_causal: unidirectional,
        q_num_heads: Some(heads),
        kv_num_heads: Some(heads),
        scale: scale(c)?,
        softcap: 0.0,
        qk_output: QkOutput::Biased,
    };
    let past = |i: usize| c.has_input(i).then_some(Val::Input(i));
    let inputs = vec![Some(qv), Some(kv), Some(vv), m.additive, past(6), past(7), m.nonpad];
    let outputs = (0..c.n_outputs().clamp(1, 4)).map(Val::Output).collect();
    low.node_to("attention", op, inputs, outputs);
    Ok(low)
}

pub fn register(r: &mut Registry) {
    r.add_lowering("com.microsoft", "Attention", 1, 1, attention);
    r.add_lowering("com.microsoft", "MultiHeadAttention", 1, 1, multi_head_attention);
}
