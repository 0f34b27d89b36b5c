//! Softmax-attention fusion: the decomposed forms exporters emit for
//! `softmax(scale * Q Kᵀ + mask) V` become one ONNX `Attention` op
//! ([`AttentionOp::Attention`]), so a single kernel sees the whole computation.
//!
//! ```text
//! Y = MatMul(Softmax(Add(scale(MatMul(scale(Q), scale(Transpose(K)))), mask), axis=-1), V)
//! ```
//!
//! - P1, hand-written / HF eager code: `MatMul(Q, Transpose(K, [0,1,3,2]))` (or `K`
//!   already transposed by `Transpose(Reshape(k), [0,2,3,1])`), then `Div(√d)` or
//!   `Mul(1/√d)`; scalar factors on either MatMul operand are folded in as well.
//! - P2, TorchScript's export of `F.scaled_dot_product_attention`
//!   (torch/onnx/symbolic_opset14.py): `Mul(Q, √s)` and `Mul(Transpose(K), √s)`
//!   (scale `s = √s²`), a bool mask as `Where(mask, 0, -inf)` (the op reads `mask`
//!   itself), `is_causal` as `Where(Equal(Trilu(Expand(1, [L, S])), 0), -inf, 0)`:
//!   with `L`, `S` fixed it folds to a constant that becomes `is_causal` only if it is
//!   exactly the upper-left triangle (any other constant stays a float mask); with
//!   them symbolic the subgraph itself is recognised, its lengths traced to the
//!   shapes of this block's Q and K.
//! - ONNX's own function body of `Attention` (the `_expanded` conformance cases) is
//!   the same shape of graph, and fuses back (softcap and `qk_matmul_output` do not).
//! - A mask is carried only if it broadcasts to `[B, H, L, S]` the way the ONNX op
//!   reads it (rank 1..=4, right-aligned, last dim exactly `S`: the op pads a
//!   shorter one with -inf instead of broadcasting it).
//! - With the head split (`Reshape [B,L,H,d]` + `Transpose [0,2,1,3]`) on Q, K, V
//!   and the merge (`Transpose [0,2,1,3]` + `Reshape [B,L,H*d]`) on the output,
//!   the 3-D form of the op is emitted and the transposes disappear; otherwise the
//!   4-D form.
//! - K and V repeated to the query heads (`repeat_kv`: `Unsqueeze(kv, 2)`, `Expand`
//!   by a constant shape, `Reshape`) are read un-repeated as grouped-query heads.
//!
//! Every intermediate (scores, masked scores, probabilities) must feed only the
//! next step: anything else reading them means the pattern does not fire. The
//! bypassed nodes are left for dead-node removal.
//!
//! Reference: ONNX `Attention`-23 (onnx.ai/onnx/operators/onnx__Attention.html);
//! the patterns are listed in ALGORITHMS.md §4.1.

use super::util::{const_of, consumers, scalar_const};
use crate::dtype::DType;
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{AttentionOp, QkOutput};
use crate::ops::elementwise::{BinaryOp, ElementwiseOp};
use crate::ops::layout::LayoutOp;
use crate::ops::matmul::MatMulOp;
use crate::ops::softmax::{SoftmaxKind, SoftmaxOp};
use crate::ops::Op;
use crate::shape::Dim;

/// What the fused node reads as its mask.
#[derive(Debug, PartialEq)]
enum Mask {
    None,
    /// The upper-left causal triangle (`is_causal = 1`).
    Causal,
    /// An `attn_mask` input (float additive, or bool with `true` = attend).
    Input(ValueId),
}

/// One recognised attention block.
struct Match {
    /// The node whose output becomes the fused node's output.
    out_node: usize,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    /// `Some((q_heads, kv_heads))`: 3-D inputs `[B, L, heads * d]`.
    heads: Option<(usize, usize)>,
    mask: Mask,
    scale: f64,
}

/// Rewrites every softmax-attention block into one `Attention` node. Returns how
/// many were fused.
pub fn fuse_attention(g: &mut Graph) -> usize {
    let mut fused = 0;
    for i in 0..g.nodes.len() {
        let Some(m) = match_at(g, i) else { continue };
        let (is_causal, mask) = match m.mask {
            Mask::None => (false, None),
            Mask::Causal => (true, None),
            Mask::Input(v) => (false, Some(v)),
        };
        let n = &mut g.nodes[m.out_node];
        n.op = AttentionOp::Attention {
            is_causal,
            q_num_heads: m.heads.map(|h| h.0),
            kv_num_heads: m.heads.map(|h| h.1),
            scale: Some(m.scale as f32),
            softcap: 0.0,
            qk_output: QkOutput::Raw,
        }
        .into();
        n.inputs = vec![Some(m.q), Some(m.k), Some(m.v)];
        n.inputs.extend(mask.map(Some));
        n.name = format!("{}(attention)", n.name);
        fused += 1;
    }
    fused
}

/// The node that produces `v`.
fn producer(g: &Graph, v: ValueId) -> Option<usize> {
    g.nodes.iter().position(|n| n.outputs.contains(&v))
}

/// The only reader of `v`, which is not a graph output.
fn sole_consumer(g: &Graph, v: ValueId) -> Option<usize> {
    match consumers(g, v).as_slice() {
        [i] if !g.outputs.contains(&v) => Some(*i),
        _ => None,
    }
}

fn input(g: &Graph, node: usize, i: usize) -> Option<ValueId> {
    g.nodes[node].inputs.get(i).copied().flatten()
}

fn output(g: &Graph, node: usize) -> Option<ValueId> {
    g.nodes[node].outputs.first().copied()
}

fn dims(g: &Graph, v: ValueId) -> Option<&[Dim]> {
    g.values.get(v)?.fact.shape.as_ref().map(|s| s.0.as_slice())
}

fn dtype(g: &Graph, v: ValueId) -> Option<DType> {
    g.values.get(v)?.fact.dtype
}

/// Equal and known (two unknown dims are not known to be equal).
fn same(a: &Dim, b: &Dim) -> bool {
    a == b && *a != Dim::Unknown
}

/// The input of a node that passes its input through unchanged: Identity,
/// inference Dropout, or a Cast to the dtype it already has.
fn passthrough(g: &Graph, node: usize) -> Option<ValueId> {
    let n = &g.nodes[node];
    let x = input(g, node, 0)?;
    let extra_outputs_used = n.outputs.iter().skip(1).any(|&o| g.outputs.contains(&o) || !consumers(g, o).is_empty());
    match &n.op {
        Op::Layout(LayoutOp::Identity) => Some(x),
        Op::Layout(LayoutOp::Dropout) if !extra_outputs_used => Some(x),
        Op::Layout(LayoutOp::Cast { to }) if dtype(g, x) == Some(*to) => Some(x),
        _ => None,
    }
}

/// `v` with pass-through producers skipped; with `private`, only through values
/// nothing else reads.
fn skip_up(g: &Graph, mut v: ValueId, private: bool) -> ValueId {
    while let Some(p) = producer(g, v) {
        if private && sole_consumer(g, v).is_none() {
            break;
        }
        match passthrough(g, p) {
            Some(x) => v = x,
            None => break,
        }
    }
    v
}

/// The value read after `v` through pass-through consumers (each the only one).
fn skip_down(g: &Graph, mut v: ValueId) -> Option<(ValueId, usize)> {
    loop {
        let c = sole_consumer(g, v)?;
        match passthrough(g, c) {
            Some(_) => v = output(g, c)?,
            None => return Some((v, c)),
        }
    }
}

fn binary(g: &Graph, node: usize) -> Option<(BinaryOp, ValueId, ValueId)> {
    match &g.nodes[node].op {
        Op::Elementwise(ElementwiseOp::Binary(b)) => Some((*b, input(g, node, 0)?, input(g, node, 1)?)),
        _ => None,
    }
}

/// `x * c`, `c * x` or `x / c` with `c` a one-element float constant: (x, factor).
fn scaled_by_constant(g: &Graph, node: usize) -> Option<(ValueId, f64)> {
    let float_const = |v| scalar_const(g, v).filter(|_| const_of(g, v).is_some_and(|t| t.dtype().is_float()));
    match binary(g, node)? {
        (BinaryOp::Mul, x, c) if float_const(c).is_some() && const_of(g, x).is_none() => Some((x, float_const(c)?)),
        (BinaryOp::Mul, c, x) if float_const(c).is_some() && const_of(g, x).is_none() => Some((x, float_const(c)?)),
        (BinaryOp::Div, x, c) => float_const(c).filter(|&c| c != 0.0).map(|c| (x, 1.0 / c)),
        _ => None,
    }
}

/// Strips constant scale factors (and pass-throughs) above `v`, multiplying them
/// into `scale`. With `private`, every stripped value must feed only the next step.
fn strip_scale(g: &Graph, mut v: ValueId, scale: &mut f64, private: bool) -> ValueId {
    loop {
        v = skip_up(g, v, private);
        if private && sole_consumer(g, v).is_none() {
            return v;
        }
        match producer(g, v).and_then(|p| scaled_by_constant(g, p)) {
            Some((x, c)) => {
                *scale *= c;
                v = x;
            }
            None => return v,
        }
    }
}

fn transpose_perm(g: &Graph, node: usize) -> Option<&[usize]> {
    match &g.nodes[node].op {
        Op::Layout(LayoutOp::Transpose { perm: Some(p) }) => Some(p),
        _ => None,
    }
}

fn is_op_matmul(g: &Graph, node: usize) -> bool {
    matches!(g.nodes[node].op, Op::MatMul(MatMulOp::MatMul)) && g.nodes[node].inputs.len() == 2
}

/// `[B, L, H, d]` split from a 3-D `[B, L, H * d]` by a Reshape: (3-D input, H, d).
fn head_split_source(g: &Graph, split: ValueId) -> Option<(ValueId, usize, usize)> {
    let r = producer(g, skip_up(g, split, false))?;
    if !matches!(g.nodes[r].op, Op::Layout(LayoutOp::Reshape { .. })) {
        return None;
    }
    let x3 = input(g, r, 0)?;
    let (from, to) = (dims(g, x3)?, dims(g, output(g, r)?)?);
    let [b, l, e] = from else { return None };
    let [b2, l2, h, d] = to else { return None };
    let (h, d) = (h.fixed()?, d.fixed()?);
    (same(b, b2) && same(l, l2) && e.fixed() == Some(h * d)).then_some((x3, h, d))
}

/// `x4 = Transpose(Reshape(x3, [B, L, H, d]), [0, 2, 1, 3])`: (x3, H).
fn heads_of(g: &Graph, x4: ValueId) -> Option<(ValueId, usize)> {
    let t = producer(g, skip_up(g, x4, false))?;
    if transpose_perm(g, t)? != [0, 2, 1, 3] {
        return None;
    }
    head_split_source(g, input(g, t, 0)?).map(|(x3, h, _)| (x3, h))
}

/// `Reshape(Transpose(y4, [0, 2, 1, 3]), [B, L, H * dv])` reading `y4` (each step
/// the only reader): the Reshape node.
fn heads_merged(g: &Graph, y4: ValueId) -> Option<usize> {
    let (_, t) = skip_down(g, y4)?;
    if transpose_perm(g, t)? != [0, 2, 1, 3] {
        return None;
    }
    let (_, r) = skip_down(g, output(g, t)?)?;
    if !matches!(g.nodes[r].op, Op::Layout(LayoutOp::Reshape { .. })) {
        return None;
    }
    let (from, to) = (dims(g, output(g, t)?)?, dims(g, output(g, r)?)?);
    let [b, l, h, dv] = from else { return None };
    let [b2, l2, e] = to else { return None };
    let merged = e.fixed().is_some_and(|e| Some(e) == h.fixed().zip(dv.fixed()).map(|(h, d)| h * d));
    (same(b, b2) && same(l, l2) && merged).then_some(r)
}

/// `x4` repeated along heads the way HF's `repeat_kv` and ONNX's own Attention
/// function do it, `Reshape(Expand(Unsqueeze(kv, 2), [B, Hkv, G, S, d]), [B, Hkv * G, S, d])`
/// with a constant Expand shape: the `[B, Hkv, S, d]` operand, which the op reads as
/// grouped-query K or V.
fn unrepeated_kv(g: &Graph, x4: ValueId) -> Option<ValueId> {
    let r = producer(g, skip_up(g, x4, false))?;
    let e = producer(g, skip_up(g, input(g, r, 0)?, false))?;
    let u = producer(g, skip_up(g, input(g, e, 0)?, false))?;
    let axes = match &g.nodes[u].op {
        Op::Layout(LayoutOp::Unsqueeze { axes: Some(a) }) => a.clone(),
        Op::Layout(LayoutOp::Unsqueeze { axes: None }) => const_of(g, input(g, u, 1)?)?.to_i64_vec().ok()?,
        _ => return None,
    };
    let ops_ok = matches!(g.nodes[r].op, Op::Layout(LayoutOp::Reshape { .. }))
        && matches!(g.nodes[e].op, Op::Layout(LayoutOp::Expand))
        && (axes == [2] || axes == [-3]);
    let kv = input(g, u, 0)?;
    let to = const_of(g, input(g, e, 1)?)?.to_i64_vec().ok()?;
    let ([b, h, s, d], [b4, hq, s4, d4], &[t0, t1, group, t3, t4]) = (dims(g, kv)?, dims(g, x4)?, to.as_slice()) else {
        return None;
    };
    // Only the inserted axis grows; every other one keeps its size (1 or equal).
    let keeps = |t: i64, d: &Dim| t == 1 || d.fixed().is_some_and(|n| n as i64 == t);
    let heads_ok = h.fixed().zip(hq.fixed()).is_some_and(|(h, hq)| group > 0 && h * group as usize == hq);
    let kept = keeps(t0, b) && keeps(t1, h) && keeps(t3, s) && keeps(t4, d);
    let same_dims = same(b, b4) && same(s, s4) && same(d, d4);
    (ops_ok && heads_ok && kept && same_dims).then_some(kv)
}

/// Key operand: `[B, H, S, d]` as a value, or (for `Transpose(k_split, [0,2,3,1])`)
/// only as the 3-D source of the split.
enum Key {
    Heads(ValueId),
    SplitOnly { k3: ValueId, dims: [Dim; 4], heads: usize },
}

/// The key behind the right operand `kt` of `Q Kᵀ`, with its scale factors.
fn key_of(g: &Graph, kt: ValueId, scale: &mut f64) -> Option<Key> {
    let kt = strip_scale(g, kt, scale, false);
    let t = producer(g, kt)?;
    let x = input(g, t, 0)?;
    match transpose_perm(g, t)? {
        [0, 1, 3, 2] => Some(Key::Heads(strip_scale(g, x, scale, false))),
        [0, 2, 3, 1] => {
            let ks = strip_scale(g, x, scale, false);
            let (k3, heads, _) = head_split_source(g, ks)?;
            let [b, s, h, d] = dims(g, ks)? else { return None };
            Some(Key::SplitOnly { k3, dims: [b.clone(), h.clone(), s.clone(), d.clone()], heads })
        }
        _ => None,
    }
}

/// `Where(cond, 0, -inf)` with one-element constants: the bool `cond`.
fn bool_mask_of(g: &Graph, m: ValueId) -> Option<ValueId> {
    let w = producer(g, m)?;
    if !matches!(g.nodes[w].op, Op::Elementwise(ElementwiseOp::Where)) {
        return None;
    }
    let (c, zero, neg) = (input(g, w, 0)?, input(g, w, 1)?, input(g, w, 2)?);
    let ok = dtype(g, c) == Some(DType::Bool)
        && scalar_const(g, zero) == Some(0.0)
        && scalar_const(g, neg) == Some(f64::NEG_INFINITY);
    ok.then_some(c)
}

/// Whether a mask of these dims reaches `[B, H, L, S]` the way the ONNX op
/// broadcasts it: rank 1..=4, right-aligned, each leading dim 1 or equal, and the
/// last exactly `S`.
fn broadcasts_like_the_op(m: &[Dim], target: &[Dim; 4]) -> bool {
    let r = m.len();
    if r == 0 || r > 4 || !same(&m[r - 1], &target[3]) {
        return false;
    }
    m[..r - 1].iter().zip(&target[4 - r..3]).all(|(d, t)| *d == Dim::Fixed(1) || same(d, t))
}

/// A constant additive mask that is exactly the upper-left causal triangle
/// (0 on and below the diagonal, -inf above) over the scores' `[L, S]` (leading 1s).
fn is_causal_constant(g: &Graph, m: ValueId, target: &[Dim; 4]) -> bool {
    let Some(t) = const_of(g, m) else { return false };
    let r = t.rank();
    if r < 2 || t.shape()[..r - 2].iter().any(|&d| d != 1) {
        return false;
    }
    let (l, s) = (t.shape()[r - 2], t.shape()[r - 1]);
    if target[2].fixed() != Some(l) || target[3].fixed() != Some(s) {
        return false;
    }
    let v = t.to_f64_vec();
    (0..l).all(|i| (0..s).all(|j| v[i * s + j] == if j > i { f64::NEG_INFINITY } else { 0.0 }))
}

/// `Slice(Shape(x), [-2], [-1])` or `Shape(x, start=-2, end=-1)`: the `x` whose
/// sequence length this is.
fn seq_len_source(g: &Graph, v: ValueId) -> Option<ValueId> {
    let n = producer(g, v)?;
    let ints = |i: usize| const_of(g, input(g, n, i)?)?.to_i64_vec().ok();
    let shape_of = match &g.nodes[n].op {
        Op::Layout(LayoutOp::Shape { start: -2, end: Some(-1) }) => return Some(skip_up(g, input(g, n, 0)?, false)),
        Op::Layout(LayoutOp::Slice { starts: None, ends: None, axes: None }) => {
            let default_or = |i: usize, want: i64| input(g, n, i).is_none() || ints(i) == Some(vec![want]);
            let ok = ints(1)? == [-2] && ints(2)? == [-1] && default_or(3, 0) && default_or(4, 1);
            producer(g, input(g, n, 0)?).filter(|_| ok)?
        }
        _ => return None,
    };
    match g.nodes[shape_of].op {
        Op::Layout(LayoutOp::Shape { start: 0, end: None }) => Some(skip_up(g, input(g, shape_of, 0)?, false)),
        _ => None,
    }
}

/// Whether `v` is the sequence length `len` of `x`: computed from `Shape(x)`, or
/// already folded to the constant `[len]`.
fn is_seq_len(g: &Graph, v: ValueId, x: ValueId, len: &Dim) -> bool {
    match const_of(g, v) {
        Some(t) => len.fixed().is_some_and(|n| t.to_i64_vec().ok() == Some(vec![n as i64])),
        None => seq_len_source(g, v) == Some(x),
    }
}

/// The causal mask TorchScript builds for `is_causal` while `L` or `S` is still
/// symbolic (with both known it folds to a constant):
/// `Where(Equal(Trilu(Expand(1, Concat(L, S)), upper=0), 0), -inf, 0)`, with `L` and
/// `S` read from the shapes of this block's `q` and `k`.
fn is_causal_subgraph(g: &Graph, m: ValueId, q: ValueId, k: ValueId, target: &[Dim; 4]) -> Option<()> {
    let w = producer(g, m)?;
    let (eq, neg_inf, zero) = (input(g, w, 0)?, input(g, w, 1)?, input(g, w, 2)?);
    let is_where = matches!(g.nodes[w].op, Op::Elementwise(ElementwiseOp::Where));
    if !is_where || scalar_const(g, neg_inf)? != f64::NEG_INFINITY || scalar_const(g, zero)? != 0.0 {
        return None;
    }
    let tri = match binary(g, producer(g, eq)?)? {
        (BinaryOp::Equal, t, z) | (BinaryOp::Equal, z, t) if scalar_const(g, z) == Some(0.0) => t,
        _ => return None,
    };
    let t = producer(g, tri)?;
    let diag_zero = input(g, t, 1).is_none_or(|d| scalar_const(g, d) == Some(0.0));
    if !matches!(g.nodes[t].op, Op::Layout(LayoutOp::Trilu { upper: false })) || !diag_zero {
        return None;
    }
    let e = producer(g, input(g, t, 0)?)?;
    if !matches!(g.nodes[e].op, Op::Layout(LayoutOp::Expand)) || scalar_const(g, input(g, e, 0)?)? != 1.0 {
        return None;
    }
    let c = producer(g, input(g, e, 1)?)?;
    let [Some(l), Some(s)] = g.nodes[c].inputs[..] else { return None };
    let ok = matches!(g.nodes[c].op, Op::Layout(LayoutOp::Concat { axis: 0 }))
        && is_seq_len(g, l, q, &target[2])
        && is_seq_len(g, s, k, &target[3]);
    ok.then_some(())
}

/// How the mask `m` added to the scores is carried, if it can be. `qk` are this
/// block's 4-D `q` and `k`, for recognising a causal mask built from their shapes.
fn carry_mask(
    g: &Graph,
    m: ValueId,
    target: &[Dim; 4],
    scores_dtype: Option<DType>,
    qk: Option<(ValueId, ValueId)>,
) -> Option<Mask> {
    if dtype(g, m) != scores_dtype {
        return None;
    }
    if qk.is_some_and(|(q, k)| is_causal_subgraph(g, m, q, k, target).is_some()) {
        return Some(Mask::Causal);
    }
    if let Some(t) = const_of(g, m) {
        if t.to_f64_vec().iter().all(|&x| x == 0.0) && broadcasts_like_the_op(dims(g, m)?, target) {
            return Some(Mask::None);
        }
        if is_causal_constant(g, m, target) && broadcasts_like_the_op(dims(g, m)?, target) {
            return Some(Mask::Causal);
        }
    }
    if let Some(c) = bool_mask_of(g, m).filter(|&c| dims(g, c).is_some_and(|d| broadcasts_like_the_op(d, target))) {
        // Where(cond, 0, -inf) is the op's own reading of a bool mask.
        return Some(Mask::Input(c));
    }
    broadcasts_like_the_op(dims(g, m)?, target).then_some(Mask::Input(m))
}

/// The candidate (scores, mask) pairs feeding the Softmax input `x`: both orders
/// of an `Add`, or `x` itself with no mask.
fn scores_and_mask(g: &Graph, x: ValueId) -> Vec<(ValueId, Option<ValueId>)> {
    let x = skip_up(g, x, true);
    let add = producer(g, x).filter(|_| sole_consumer(g, x).is_some());
    match add.and_then(|a| binary(g, a)) {
        Some((BinaryOp::Add, a, b)) => vec![(a, Some(b)), (b, Some(a))],
        _ => vec![(x, None)],
    }
}

/// Tries to match an attention block whose Softmax is node `s`.
fn match_at(g: &Graph, s: usize) -> Option<Match> {
    let Op::Softmax(SoftmaxOp { kind: SoftmaxKind::Softmax, axis, .. }) = g.nodes[s].op else { return None };
    let x = input(g, s, 0)?;
    // The scores are 4-D by the operand checks below, and a carried mask keeps them
    // so; their fact may still be unknown when the mask's shape is.
    if dims(g, x).is_some_and(|d| d.len() != 4) || (axis != -1 && axis != 3) {
        return None;
    }
    // probabilities -> MatMul(probs, V)
    let (probs, mm2) = skip_down(g, output(g, s)?)?;
    if !is_op_matmul(g, mm2) || input(g, mm2, 0)? != probs {
        return None;
    }
    let v4 = skip_up(g, input(g, mm2, 1)?, false);
    let y4 = output(g, mm2)?;
    scores_and_mask(g, x).into_iter().find_map(|(scores, mask)| match_scores(g, scores, mask, v4, y4, mm2))
}

/// The rest of [`match_at`] once the mask (if any) is told apart from the scores.
fn match_scores(
    g: &Graph,
    scores: ValueId,
    mask: Option<ValueId>,
    v4: ValueId,
    y4: ValueId,
    mm2: usize,
) -> Option<Match> {
    let mut scale = 1.0;
    let qk = strip_scale(g, scores, &mut scale, true);
    let mm1 = producer(g, qk).filter(|_| sole_consumer(g, qk).is_some())?;
    if !is_op_matmul(g, mm1) {
        return None;
    }
    let q4 = strip_scale(g, input(g, mm1, 0)?, &mut scale, false);
    let key = key_of(g, input(g, mm1, 1)?, &mut scale)?;
    let k_dims: [Dim; 4] = match &key {
        Key::Heads(k4) => dims(g, *k4)?.to_vec().try_into().ok()?,
        Key::SplitOnly { dims, .. } => dims.clone(),
    };
    let (qd, vd) = (dims(g, q4)?, dims(g, v4)?);
    let ([b, h, l, d], [kb, kh, s, kd], [vb, vh, vs, _]) = (qd, &k_dims, vd) else { return None };
    let consistent = same(b, kb) && same(b, vb) && same(h, kh) && same(h, vh) && same(s, vs) && same(d, kd);
    let float = dtype(g, q4).is_some_and(|t| t.is_float());
    if !consistent || !float || dtype(g, v4) != dtype(g, q4) || !scale.is_finite() {
        return None;
    }
    let target = [b.clone(), h.clone(), l.clone(), s.clone()];
    let mask = match mask {
        None => Mask::None,
        Some(m) => {
            let q_and_k = match &key {
                Key::Heads(k4) => Some((q4, *k4)),
                Key::SplitOnly { .. } => None,
            };
            carry_mask(g, m, &target, dtype(g, qk), q_and_k)?
        }
    };
    // Grouped-query K and V repeated to the query heads are read before the repeat.
    let (key, v4) = match key {
        Key::Heads(k4) => match (unrepeated_kv(g, k4), unrepeated_kv(g, v4)) {
            (Some(k), Some(v)) if dims(g, k).zip(dims(g, v)).is_some_and(|(k, v)| same(&k[1], &v[1])) => {
                (Key::Heads(k), v)
            }
            _ => (Key::Heads(k4), v4),
        },
        split_only => (split_only, v4),
    };
    // 3-D form when the head split and merge are all there.
    let split = (|| {
        let (q3, hq) = heads_of(g, q4)?;
        let (k3, hk) = match &key {
            Key::Heads(k4) => heads_of(g, *k4)?,
            Key::SplitOnly { k3, heads, .. } => (*k3, *heads),
        };
        let (v3, hv) = heads_of(g, v4)?;
        let merge = heads_merged(g, y4)?;
        (hk == hv && hq.is_multiple_of(hk)).then_some((q3, k3, v3, (hq, hk), merge))
    })();
    if let Some((q, k, v, heads, out_node)) = split {
        return Some(Match { out_node, q, k, v, heads: Some(heads), mask, scale });
    }
    let Key::Heads(k) = key else { return None };
    Some(Match { out_node: mm2, q: q4, k, v: v4, heads: None, mask, scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::run_graph;
    use crate::ops::gather::GatherOp;
    use crate::ops::layout::tests::{assert_close, Rng};
    use crate::passes::{infer_and_fold, remove_dead_nodes, FoldOptions};
    use crate::shape::{Fact, Shape};
    use crate::Tensor;

    /// Builds test graphs node by node, the way exporters lay them out.
    #[derive(Default)]
    struct B {
        g: Graph,
    }

    impl B {
        fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> ValueId {
            self.input_dims(name, dtype, shape.iter().map(|&d| Dim::Fixed(d)).collect())
        }

        fn input_dims(&mut self, name: &str, dtype: DType, dims: Vec<Dim>) -> ValueId {
            let v = self.g.add_value(name, Fact::new(dtype, Shape(dims)));
            self.g.inputs.push(v);
            v
        }

        fn k(&mut self, t: Tensor) -> ValueId {
            self.g.add_const(format!("c{}", self.g.values.len()), t)
        }

        fn f(&mut self, x: f32) -> ValueId {
            self.k(Tensor::scalar(x))
        }

        fn ints(&mut self, v: &[i64]) -> ValueId {
            self.k(Tensor::from_slice(&[v.len()], v).unwrap())
        }

        fn op(&mut self, op: impl Into<Op>, ins: &[ValueId]) -> ValueId {
            let o = self.g.add_value(format!("v{}", self.g.values.len()), Fact::unknown());
            let name = format!("n{}", self.g.nodes.len());
            self.g.add_node(name, op.into(), ins.iter().map(|&i| Some(i)).collect(), vec![o]);
            o
        }

        fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
            self.op(ElementwiseOp::Binary(b), &[x, y])
        }

        fn transpose(&mut self, x: ValueId, perm: &[usize]) -> ValueId {
            self.op(LayoutOp::Transpose { perm: Some(perm.to_vec()) }, &[x])
        }

        fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
            self.op(MatMulOp::MatMul, &[a, b])
        }

        fn softmax(&mut self, x: ValueId, axis: i64) -> ValueId {
            self.op(SoftmaxOp { kind: SoftmaxKind::Softmax, axis, legacy: false }, &[x])
        }

        fn shape_slice(&mut self, x: ValueId, start: i64, end: i64) -> ValueId {
            let s = self.op(LayoutOp::Shape { start: 0, end: None }, &[x]);
            let (st, en) = (self.ints(&[start]), self.ints(&[end]));
            self.op(LayoutOp::Slice { starts: None, ends: None, axes: None }, &[s, st, en])
        }

        /// `[B, L, H*d] -> [B, H, L, d]`, with the target shape computed from
        /// `Shape(x)` as PyTorch exports `x.view(b, l, h, d).transpose(1, 2)`.
        fn split_heads(&mut self, x: ValueId, heads: i64, d: i64, perm: &[usize]) -> ValueId {
            let s = self.op(LayoutOp::Shape { start: 0, end: None }, &[x]);
            let mut parts = Vec::new();
            for i in 0..2 {
                let idx = self.k(Tensor::scalar(i as i64));
                let gth = self.op(GatherOp::Gather { axis: 0 }, &[s, idx]);
                let ax = self.ints(&[0]);
                parts.push(self.op(LayoutOp::Unsqueeze { axes: None }, &[gth, ax]));
            }
            parts.push(self.ints(&[heads]));
            parts.push(self.ints(&[d]));
            let shape = self.op(LayoutOp::Concat { axis: 0 }, &parts);
            let r = self.op(LayoutOp::Reshape { allowzero: false }, &[x, shape]);
            self.transpose(r, perm)
        }

        /// `[B, H, L, d] -> [B, L, H*d]`.
        fn merge_heads(&mut self, y: ValueId, hidden: i64) -> ValueId {
            let t = self.transpose(y, &[0, 2, 1, 3]);
            let shape = self.ints(&[0, 0, hidden]);
            self.op(LayoutOp::Reshape { allowzero: false }, &[t, shape])
        }

        /// The graph with `outs` as outputs, facts inferred and constants folded,
        /// as the pipeline has it before the fusions run.
        fn finish(mut self, outs: &[ValueId]) -> Graph {
            self.g.outputs = outs.to_vec();
            infer_and_fold(&mut self.g, FoldOptions::default()).unwrap();
            self.g
        }
    }

    /// Random inputs for `g`, with symbolic dims bound by `bind`.
    fn random_inputs(g: &Graph, seed: u64, bind: &[(&str, usize)]) -> Vec<Tensor> {
        let mut rng = Rng(seed);
        let symbols: std::collections::HashMap<String, usize> = bind.iter().map(|&(s, n)| (s.to_string(), n)).collect();
        g.inputs
            .iter()
            .map(|&i| {
                let f = &g.values[i].fact;
                let shape = f.shape.as_ref().unwrap().bind(&symbols).as_fixed().unwrap();
                if f.dtype == Some(DType::Bool) {
                    // Key 0 always visible: a fully masked row has no defined softmax.
                    let n: usize = shape.iter().product();
                    let last = shape[shape.len() - 1];
                    let v: Vec<bool> = (0..n).map(|j| j % last == 0 || rng.below(3) > 0).collect();
                    Tensor::from_bools(&shape, &v).unwrap()
                } else {
                    let t = rng.tensor(&shape);
                    // Scores stay in a range where f32 rounding is far below the tolerance.
                    Tensor::from_vec(&shape, t.to_f64_vec().iter().map(|&x| x as f32 * 0.25).collect()).unwrap()
                }
            })
            .collect()
    }

    fn attention_nodes(g: &Graph) -> Vec<&AttentionOp> {
        g.nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Attention(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Fuses `g`, checks one Attention node replaced the softmax (and no Transpose
    /// remains when `no_transpose`), and that outputs match the unfused graph on
    /// random inputs. Returns the fused graph.
    fn fuses_with_same_outputs(g: &Graph, no_transpose: bool) -> Graph {
        fuses_with_same_outputs_bound(g, no_transpose, &[])
    }

    /// [`fuses_with_same_outputs`] for a graph with symbolic dims, run with `bind`.
    fn fuses_with_same_outputs_bound(g: &Graph, no_transpose: bool, bind: &[(&str, usize)]) -> Graph {
        let mut f = g.clone();
        assert_eq!(fuse_attention(&mut f), 1);
        remove_dead_nodes(&mut f);
        f.validate().unwrap();
        let names: Vec<&str> = f.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(attention_nodes(&f).len(), 1, "{names:?}");
        assert!(!names.contains(&"Softmax"), "{names:?}");
        if no_transpose {
            assert!(!names.contains(&"Transpose"), "{names:?}");
        }
        for seed in [7, 99] {
            let inputs = random_inputs(g, seed, bind);
            let (want, got) = (run_graph(g, inputs.clone()).unwrap(), run_graph(&f, inputs).unwrap());
            assert_eq!(want.len(), got.len());
            for (a, b) in got.iter().zip(&want) {
                assert_close(a, b, 1e-5, "fused vs unfused");
            }
        }
        f
    }

    fn attr(g: &Graph) -> (bool, Option<usize>, Option<f32>, usize) {
        let n = g.nodes.iter().find(|n| matches!(n.op, Op::Attention(_))).unwrap();
        match &n.op {
            Op::Attention(AttentionOp::Attention { is_causal, q_num_heads, scale, .. }) => {
                (*is_causal, *q_num_heads, *scale, n.inputs.len())
            }
            _ => unreachable!(),
        }
    }

    /// HF BERT eager attention on `[2, 5, 16]` hidden states with 4 heads: head
    /// split/merge, `Transpose(K, [0,1,3,2])`, `Div(sqrt d)`, the `(1 - m) * -10000`
    /// padding mask, `Softmax(-1)`.
    fn hf_eager(softmax_axis: i64, extra_output: bool) -> Graph {
        let mut b = B::default();
        let (q3, k3, v3) = (
            b.input("q", DType::F32, &[2, 5, 16]),
            b.input("k", DType::F32, &[2, 5, 16]),
            b.input("v", DType::F32, &[2, 5, 16]),
        );
        let am = b.input("attention_mask", DType::F32, &[2, 5]);
        let ax = b.ints(&[1, 2]);
        let m = b.op(LayoutOp::Unsqueeze { axes: None }, &[am, ax]);
        let one = b.f(1.0);
        let inv = b.bin(BinaryOp::Sub, one, m);
        let big = b.f(-10000.0);
        let mask = b.bin(BinaryOp::Mul, inv, big);
        let q = b.split_heads(q3, 4, 4, &[0, 2, 1, 3]);
        let k = b.split_heads(k3, 4, 4, &[0, 2, 1, 3]);
        let v = b.split_heads(v3, 4, 4, &[0, 2, 1, 3]);
        let kt = b.transpose(k, &[0, 1, 3, 2]);
        let qk = b.matmul(q, kt);
        let sqrt_d = b.f(2.0);
        let s = b.bin(BinaryOp::Div, qk, sqrt_d);
        let s = b.bin(BinaryOp::Add, s, mask);
        let p = b.softmax(s, softmax_axis);
        let y = b.matmul(p, v);
        let y = b.merge_heads(y, 16);
        let outs = if extra_output { vec![y, p] } else { vec![y] };
        b.finish(&outs)
    }

    #[test]
    fn hf_eager_attention_with_head_split_becomes_one_3d_attention() {
        let f = fuses_with_same_outputs(&hf_eager(-1, false), true);
        let (causal, heads, scale, n_in) = attr(&f);
        assert_eq!((causal, heads, scale, n_in), (false, Some(4), Some(0.5), 4));
    }

    #[test]
    fn repeated_kv_heads_become_grouped_query_attention() {
        // Llama eager: 4 query heads over 2 kv heads, repeat_kv as
        // Reshape(Expand(Unsqueeze(kv, 2), [B, 2, 2, S, d]), [B, 4, S, d]).
        let mut b = B::default();
        let q3 = b.input("q", DType::F32, &[1, 5, 32]);
        let k3 = b.input("k", DType::F32, &[1, 6, 16]);
        let v3 = b.input("v", DType::F32, &[1, 6, 16]);
        let bias = b.input("bias", DType::F32, &[1, 1, 5, 6]);
        let q = b.split_heads(q3, 4, 8, &[0, 2, 1, 3]);
        let mut kv = Vec::new();
        for x in [k3, v3] {
            let x = b.split_heads(x, 2, 8, &[0, 2, 1, 3]);
            let ax = b.ints(&[2]);
            let u = b.op(LayoutOp::Unsqueeze { axes: None }, &[x, ax]);
            let shape = b.ints(&[1, 2, 2, 6, 8]);
            let e = b.op(LayoutOp::Expand, &[u, shape]);
            let shape = b.ints(&[1, 4, 6, 8]);
            kv.push(b.op(LayoutOp::Reshape { allowzero: false }, &[e, shape]));
        }
        let kt = b.transpose(kv[0], &[0, 1, 3, 2]);
        let qk = b.matmul(q, kt);
        let c = b.f(1.0 / 8f32.sqrt());
        let s = b.bin(BinaryOp::Mul, qk, c);
        let s = b.bin(BinaryOp::Add, s, bias);
        let p = b.softmax(s, -1);
        let y = b.matmul(p, kv[1]);
        let y = b.merge_heads(y, 32);
        let g = b.finish(&[y]);
        let f = fuses_with_same_outputs(&g, true);
        let names: Vec<&str> = f.nodes.iter().map(|n| n.op.name()).collect();
        assert!(!names.contains(&"Expand"), "{names:?}");
        let Op::Attention(AttentionOp::Attention { q_num_heads, kv_num_heads, .. }) = &f.nodes[0].op else { panic!() };
        assert_eq!((*q_num_heads, *kv_num_heads), (Some(4), Some(2)));
        assert_eq!(f.nodes[0].inputs, [Some(q3), Some(k3), Some(v3), Some(bias)]);
    }

    #[test]
    fn pretransposed_key_and_scale_on_the_left_of_the_scores_fuse_too() {
        // K as Transpose(Reshape(k), [0,2,3,1]); Mul(1/sqrt d, scores); Softmax(axis=3).
        let mut b = B::default();
        let (q3, k3, v3) = (
            b.input("q", DType::F32, &[1, 6, 24]),
            b.input("k", DType::F32, &[1, 7, 24]),
            b.input("v", DType::F32, &[1, 7, 24]),
        );
        let q = b.split_heads(q3, 3, 8, &[0, 2, 1, 3]);
        let kt = b.split_heads(k3, 3, 8, &[0, 2, 3, 1]);
        let v = b.split_heads(v3, 3, 8, &[0, 2, 1, 3]);
        let qk = b.matmul(q, kt);
        let c = b.f(1.0 / 8f32.sqrt());
        let s = b.bin(BinaryOp::Mul, c, qk);
        let p = b.softmax(s, 3);
        let y = b.matmul(p, v);
        let y = b.merge_heads(y, 24);
        let f = fuses_with_same_outputs(&b.finish(&[y]), true);
        let (causal, heads, _, n_in) = attr(&f);
        assert_eq!((causal, heads, n_in), (false, Some(3), 3));
    }

    #[test]
    fn four_d_operands_with_scales_on_both_sides_give_4d_attention_with_the_mask() {
        // Mul(Q, 0.5) before the MatMul and Div(2) after: scale 0.25. Rank-2 float bias.
        let mut b = B::default();
        let q = b.input("q", DType::F32, &[2, 2, 4, 8]);
        let k = b.input("k", DType::F32, &[2, 2, 6, 8]);
        let v = b.input("v", DType::F32, &[2, 2, 6, 5]);
        let bias = b.input("bias", DType::F32, &[4, 6]);
        let half = b.f(0.5);
        let qs = b.bin(BinaryOp::Mul, q, half);
        let kt = b.transpose(k, &[0, 1, 3, 2]);
        let qk = b.matmul(qs, kt);
        let two = b.f(2.0);
        let s = b.bin(BinaryOp::Div, qk, two);
        let s = b.bin(BinaryOp::Add, bias, s);
        let p = b.softmax(s, -1);
        let y = b.matmul(p, v);
        let g = b.finish(&[y]);
        let f = fuses_with_same_outputs(&g, true);
        assert_eq!(attr(&f), (false, None, Some(0.25), 4));
        assert_eq!(f.nodes[0].inputs[3], Some(bias));
    }

    /// `F.scaled_dot_product_attention(q, k, v, mask?, is_causal?)` as
    /// torch/onnx/symbolic_opset14.py exports it, on 4-D `[1, 2, L, 8]` / `[1, 2, S, 8]`.
    fn sdpa(l: usize, s: usize, bool_mask: bool, causal_k: Option<i64>) -> Graph {
        sdpa_dims(Dim::Fixed(l), Dim::Fixed(s), bool_mask, causal_k)
    }

    fn sdpa_dims(l: Dim, s: Dim, bool_mask: bool, causal_k: Option<i64>) -> Graph {
        let mut b = B::default();
        let heads = |n: Dim| vec![Dim::Fixed(1), Dim::Fixed(2), n, Dim::Fixed(8)];
        let q = b.input_dims("q", DType::F32, heads(l));
        let k = b.input_dims("k", DType::F32, heads(s.clone()));
        let v = b.input_dims("v", DType::F32, heads(s.clone()));
        let m =
            bool_mask.then(|| b.input_dims("mask", DType::Bool, vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(1), s]));
        // scale = 1 / sqrt(Cast(Slice(Shape(q), -1)))
        let e = b.shape_slice(q, -1, i64::MAX);
        let e = b.op(LayoutOp::Cast { to: DType::F32 }, &[e]);
        let e = b.op(ElementwiseOp::Unary(crate::ops::elementwise::UnaryOp::Sqrt), &[e]);
        let one = b.k(Tensor::from_slice(&[1], &[1.0f32]).unwrap());
        let scale = b.bin(BinaryOp::Div, one, e);
        let root = b.op(ElementwiseOp::Unary(crate::ops::elementwise::UnaryOp::Sqrt), &[scale]);
        let zero = b.k(Tensor::from_slice(&[1], &[0.0f32]).unwrap());
        let neg_inf = b.k(Tensor::from_slice(&[1], &[f32::NEG_INFINITY]).unwrap());
        let mut mask = m.map(|m| b.op(ElementwiseOp::Where, &[m, zero, neg_inf]));
        if let Some(diag) = causal_k {
            let (lq, sk) = (b.shape_slice(q, -2, -1), b.shape_slice(k, -2, -1));
            let size = b.op(LayoutOp::Concat { axis: 0 }, &[lq, sk]);
            let ones = b.k(Tensor::from_slice(&[1], &[1.0f32]).unwrap());
            let ones = b.op(LayoutOp::Expand, &[ones, size]);
            let tri = if diag == 0 {
                b.op(LayoutOp::Trilu { upper: false }, &[ones])
            } else {
                let kk = b.k(Tensor::scalar(diag));
                b.op(LayoutOp::Trilu { upper: false }, &[ones, kk])
            };
            let is_zero = b.bin(BinaryOp::Equal, tri, zero);
            mask = Some(b.op(ElementwiseOp::Where, &[is_zero, neg_inf, zero]));
        }
        let kt = b.transpose(k, &[0, 1, 3, 2]);
        let qs = b.bin(BinaryOp::Mul, q, root);
        let ks = b.bin(BinaryOp::Mul, kt, root);
        let mut s = b.matmul(qs, ks);
        if let Some(mask) = mask {
            s = b.bin(BinaryOp::Add, s, mask);
        }
        let p = b.softmax(s, -1);
        let y = b.matmul(p, v);
        b.finish(&[y])
    }

    #[test]
    fn sdpa_export_with_a_bool_mask_reads_the_bool_mask_directly() {
        let g = sdpa(5, 5, true, None);
        let f = fuses_with_same_outputs(&g, true);
        let (causal, heads, scale, n_in) = attr(&f);
        assert_eq!((causal, heads, n_in), (false, None, 4));
        assert!((scale.unwrap() - 1.0 / 8f32.sqrt()).abs() < 1e-7);
        let mask = f.nodes[0].inputs[3].unwrap();
        assert_eq!(f.values[mask].name, "mask");
    }

    #[test]
    fn sdpa_causal_export_folds_to_is_causal_for_any_lengths() {
        for (l, s) in [(6, 6), (4, 7), (7, 4)] {
            let f = fuses_with_same_outputs(&sdpa(l, s, false, Some(0)), true);
            assert!(attr(&f).0, "L={l} S={s}");
            assert_eq!(attr(&f).3, 3, "no mask input besides is_causal");
        }
    }

    #[test]
    fn sdpa_causal_export_with_symbolic_lengths_is_recognised_from_its_subgraph() {
        let (l, s) = (Dim::Sym("L".into()), Dim::Sym("S".into()));
        let g = sdpa_dims(l.clone(), s.clone(), false, Some(0));
        assert!(g.nodes.iter().any(|n| n.op.name() == "Trilu"), "the mask must still be computed");
        for bind in [[("L", 5), ("S", 5)], [("L", 3), ("S", 6)]] {
            let f = fuses_with_same_outputs_bound(&g, true, &bind);
            assert!(attr(&f).0);
            assert_eq!(attr(&f).3, 3, "no mask input besides is_causal");
        }
        // The same triangle over [S, S] (both lengths read from k) is not causal
        // over [L, S], and a mask of unknown shape is not carried at all.
        let mut g = sdpa_dims(l, s, false, Some(0));
        let shape_of_k = g.nodes.iter().filter(|n| n.op.name() == "Shape").nth(1).unwrap().inputs[0];
        for n in g.nodes.iter_mut().filter(|n| n.op.name() == "Shape") {
            n.inputs[0] = shape_of_k;
        }
        assert_eq!(fuse_attention(&mut g), 0);
    }

    #[test]
    fn a_shifted_triangle_is_not_causal_and_stays_a_mask_input() {
        let f = fuses_with_same_outputs(&sdpa(5, 5, false, Some(1)), true);
        assert_eq!((attr(&f).0, attr(&f).3), (false, 4));
    }

    #[test]
    fn does_not_fire_for_softmax_over_another_axis() {
        let mut g = hf_eager(2, false);
        assert_eq!(fuse_attention(&mut g), 0);
    }

    #[test]
    fn does_not_fire_when_scores_or_probabilities_are_read_elsewhere() {
        let mut g = hf_eager(-1, true);
        assert_eq!(fuse_attention(&mut g), 0);
        // the scaled scores also feed a second consumer
        let mut g = sdpa(4, 4, false, None);
        let mm = g.nodes.iter().position(|n| matches!(n.op, Op::MatMul(_))).unwrap();
        let scores = g.nodes[mm].outputs[0];
        let extra = g.add_value("extra", Fact::unknown());
        g.add_node(
            "neg",
            ElementwiseOp::Unary(crate::ops::elementwise::UnaryOp::Neg).into(),
            vec![Some(scores)],
            vec![extra],
        );
        g.outputs.push(extra);
        assert_eq!(fuse_attention(&mut g), 0);
    }

    /// `scores (+ bias) -> softmax -> @ V` on 4-D `[1, 2, 4, 8]` operands, with the
    /// bias added at `where_` ("before": under the softmax, "scaled": before the
    /// scale, "after": to the probabilities) and the scale divisor `div` (a
    /// constant, or a graph input when `None`).
    fn biased(bias_shape: &[usize], where_: &str, div: Option<f32>) -> Graph {
        let mut b = B::default();
        let q = b.input("q", DType::F32, &[1, 2, 4, 8]);
        let k = b.input("k", DType::F32, &[1, 2, 4, 8]);
        let v = b.input("v", DType::F32, &[1, 2, 4, 8]);
        let bias = b.input("bias", DType::F32, bias_shape);
        let d = match div {
            Some(x) => b.f(x),
            None => b.input("d", DType::F32, &[]),
        };
        let kt = b.transpose(k, &[0, 1, 3, 2]);
        let mut s = b.matmul(q, kt);
        if where_ == "scaled" {
            s = b.bin(BinaryOp::Add, s, bias);
        }
        s = b.bin(BinaryOp::Div, s, d);
        if where_ == "before" {
            s = b.bin(BinaryOp::Add, s, bias);
        }
        let mut p = b.softmax(s, -1);
        if where_ == "after" {
            p = b.bin(BinaryOp::Add, p, bias);
        }
        let y = b.matmul(p, v);
        b.finish(&[y])
    }

    #[test]
    fn does_not_fire_for_a_bias_the_op_cannot_carry() {
        // Carried: right-aligned broadcast to [B, H, L, S] with the full key axis.
        for shape in [&[4usize][..], &[2, 1, 4], &[1, 2, 4, 4]] {
            fuses_with_same_outputs(&biased(shape, "before", Some(2.0)), true);
        }
        // Not carried: the key axis broadcast (the op would pad it with -inf), a
        // rank-5 bias, a batch dim the scores do not have, or a bias on the other
        // side of the scale or of the softmax.
        for (shape, at) in [
            (&[1usize, 1, 4, 1][..], "before"),
            (&[3, 1, 2, 4, 4], "before"),
            (&[3, 1, 4, 4], "before"),
            (&[1, 2, 4, 4], "scaled"),
            (&[1, 2, 4, 4], "after"),
        ] {
            let mut g = biased(shape, at, Some(2.0));
            assert_eq!(fuse_attention(&mut g), 0, "bias {shape:?} {at}");
        }
    }

    #[test]
    fn does_not_fire_when_the_scale_is_not_a_constant() {
        let mut g = biased(&[4], "before", None);
        assert_eq!(fuse_attention(&mut g), 0);
    }
}
