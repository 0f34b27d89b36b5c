//! Stream analysis: which nodes of a graph can run frame by frame along a named
//! time axis, which carry state between chunks, and which block streaming.
//!
//! Time axes are found by probing: the graph's shapes are inferred with the
//! time symbol bound to two different lengths, and a value's time axis is the
//! one axis whose size is that length in both probes. Each node is then
//! classified by a rule for its op (see [`classify`]); anything without a rule
//! that touches time-dependent data blocks streaming, so a model is never
//! streamed on a guess.

use crate::error::{Error, Result};
use crate::exec::Bindings;
use crate::graph::{Graph, ValueId};
use crate::ops::conv::{ConvAttrs, ConvOp, Window};
use crate::ops::layout::LayoutOp;
use crate::ops::matmul::MatMulOp;
use crate::ops::normalization::NormOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::rnn::{Direction, RnnOp};
use crate::ops::Op;
use crate::passes::{infer_and_fold, FoldOptions};
use crate::shape::{Dim, Fact, Shape};
use std::fmt;

/// The two time lengths the shapes are probed with (distinct primes, longer than
/// any kernel a speech model uses, so no size equals them by accident).
const PROBES: [usize; 2] = [97, 101];

/// How a node runs in a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeClass {
    /// Touches no time-dependent data (weights, shape arithmetic).
    Static,
    /// Frame by frame: each output frame depends only on the same input frame.
    Stateless,
    /// Carries state from chunk to chunk.
    Stateful(StateKind),
    /// Needs all of time at once; the reason says why.
    Blocking(String),
}

/// The state a stateful node carries.
#[derive(Clone, Debug, PartialEq)]
pub enum StateKind {
    /// A convolution along time: a ring of the last `context` input frames;
    /// `lookahead` frames of right padding become output delay.
    ConvContext { context: usize, lookahead: usize },
    /// GRU / LSTM / RNN hidden (and cell) state.
    Recurrent,
    /// Causal softmax attention: the keys and values seen so far.
    KvCache,
    /// CumSum along time: the running sum of the frames so far.
    RunningSum,
}

impl fmt::Display for NodeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeClass::Static => f.write_str("static"),
            NodeClass::Stateless => f.write_str("stateless"),
            NodeClass::Stateful(StateKind::ConvContext { context, lookahead }) => {
                write!(f, "stateful: conv ring buffer of {context} frames")?;
                if *lookahead > 0 {
                    write!(f, ", {lookahead} frame(s) of look-ahead (delay)")?;
                }
                Ok(())
            }
            NodeClass::Stateful(StateKind::Recurrent) => f.write_str("stateful: recurrent hidden state"),
            NodeClass::Stateful(StateKind::KvCache) => f.write_str("stateful: KV cache"),
            NodeClass::Stateful(StateKind::RunningSum) => f.write_str("stateful: running sum"),
            NodeClass::Blocking(why) => write!(f, "blocking: {why}"),
        }
    }
}

/// One node's classification.
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub node: usize,
    pub name: String,
    pub op: &'static str,
    pub class: NodeClass,
}

/// The result of [`analyze`].
#[derive(Clone, Debug)]
pub struct Analysis {
    pub symbol: String,
    /// Per value: its time axis if it is time-dependent data with one.
    pub time_axis: Vec<Option<usize>>,
    /// Per value: true if its data depends on the streamed inputs.
    pub timed: Vec<bool>,
    /// Per value: frames of delay (look-ahead consumed upstream).
    pub delay: Vec<usize>,
    /// Per value: concrete shape at the first probe length (for state shapes).
    pub probe_shape: Vec<Option<Vec<usize>>>,
    pub nodes: Vec<NodeReport>,
    /// Graph inputs that carry the time axis, with that axis.
    pub stream_inputs: Vec<(ValueId, usize)>,
}

impl Analysis {
    /// Nodes that block streaming.
    pub fn blocking(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes.iter().filter(|n| matches!(n.class, NodeClass::Blocking(_)))
    }

    pub fn is_streamable(&self) -> bool {
        self.blocking().next().is_none()
    }

    /// The error a stream conversion gives for a blocking model: every blocking
    /// node with its reason.
    pub fn blocking_error(&self) -> Option<Error> {
        let lines: Vec<String> =
            self.blocking().map(|n| format!("  node '{}' ({}): {}", n.name, n.op, n.class)).collect();
        if lines.is_empty() {
            return None;
        }
        Some(Error::Unsupported(format!(
            "cannot stream along '{}': {} node(s) need all of time at once:\n{}\n(--stream windowed:N re-runs a sliding window of N frames instead)",
            self.symbol,
            lines.len(),
            lines.join("\n")
        )))
    }

    /// Output delay in frames of each graph output.
    pub fn output_delays(&self, g: &Graph) -> Vec<usize> {
        g.outputs.iter().map(|&o| self.delay[o]).collect()
    }

    /// Counts of stateless, stateful and blocking nodes.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for n in &self.nodes {
            match n.class {
                NodeClass::Stateless => c.0 += 1,
                NodeClass::Stateful(_) => c.1 += 1,
                NodeClass::Blocking(_) => c.2 += 1,
                NodeClass::Static => {}
            }
        }
        c
    }
}

/// Shapes of every value with the time symbol bound to `len` (other symbols from
/// `bindings`, else 1).
fn probe(g: &Graph, symbol: &str, len: usize, bindings: &Bindings) -> Result<Vec<Option<Vec<usize>>>> {
    let mut g = g.clone();
    let mut symbols = bindings.symbols.clone();
    symbols.insert(symbol.to_string(), len);
    for &id in &g.inputs.clone() {
        let v = &mut g.values[id];
        let Some(shape) = v.fact.shape.as_ref() else { continue };
        let bound = Shape(
            shape
                .bind(&symbols)
                .0
                .into_iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Dim::Fixed(n),
                    _ => Dim::Fixed(1),
                })
                .collect(),
        );
        v.fact = Fact { dtype: v.fact.dtype, shape: Some(bound) };
    }
    infer_and_fold(&mut g, FoldOptions::default())
        .map_err(|e| Error::Invalid(format!("shapes cannot be inferred with {symbol}={len}: {e}")))?;
    Ok(g.values.iter().map(|v| v.fact.shape.as_ref().and_then(|s| s.as_fixed())).collect())
}

/// The axis whose size is the probe length in both probes (and no other axis
/// changes); `Err` when the shape depends on time in another way.
fn axis_of(a: &Option<Vec<usize>>, b: &Option<Vec<usize>>) -> std::result::Result<Option<usize>, String> {
    let (Some(a), Some(b)) = (a, b) else { return Err("its shape is not known".into()) };
    if a.len() != b.len() {
        return Err("its rank depends on the time length".into());
    }
    let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    match changed.as_slice() {
        [] => Ok(None),
        [i] if a[*i] == PROBES[0] && b[*i] == PROBES[1] => Ok(Some(*i)),
        _ => Err(format!("its shape {a:?} changes with the time length other than frame for frame")),
    }
}

/// Classifies every node of `g` for streaming along `symbol`.
pub fn analyze(g: &Graph, symbol: &str, bindings: &Bindings) -> Result<Analysis> {
    let stream_inputs: Vec<(ValueId, usize)> = g
        .inputs
        .iter()
        .filter_map(|&id| {
            let s = g.values[id].fact.shape.as_ref()?;
            let axes: Vec<usize> = (0..s.rank()).filter(|&i| s.0[i] == Dim::Sym(symbol.to_string())).collect();
            (axes.len() == 1).then(|| (id, axes[0]))
        })
        .collect();
    if stream_inputs.is_empty() {
        let dims: Vec<String> = g
            .inputs
            .iter()
            .map(|&i| {
                format!(
                    "{}: {}",
                    g.values[i].name,
                    g.values[i].fact.shape.as_ref().map_or("?".into(), |s| s.to_string())
                )
            })
            .collect();
        return Err(Error::Invalid(format!(
            "no model input has the streaming axis '{symbol}' as a symbolic dim (inputs: {})",
            dims.join(", ")
        )));
    }
    let p0 = probe(g, symbol, PROBES[0], bindings)?;
    let p1 = probe(g, symbol, PROBES[1], bindings)?;
    let n = g.values.len();
    let mut timed = vec![false; n];
    // Values derived from the time *length* (Shape of a timed value): fine as
    // shape parameters, wrong as data (positions restart every chunk).
    let mut chunk_shaped = vec![false; n];
    let mut time_axis = vec![None; n];
    let mut delay = vec![0usize; n];
    for &(id, axis) in &stream_inputs {
        timed[id] = true;
        time_axis[id] = Some(axis);
    }
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for (ni, node) in g.nodes.iter().enumerate() {
        let timed_in: Vec<usize> =
            (0..node.inputs.len()).filter(|&i| node.inputs[i].is_some_and(|v| timed[v])).collect();
        let shaped_in = node.inputs.iter().flatten().any(|&v| chunk_shaped[v]);
        let class = if timed_in.is_empty() {
            if shaped_in {
                classify_shaped(node, &p0, &p1)
            } else {
                NodeClass::Static
            }
        } else {
            classify(g, node, &timed_in, &time_axis, &p0, &p1)
        };
        let is_shape_op = matches!(&node.op, Op::Layout(LayoutOp::Shape { .. } | LayoutOp::Size));
        let outputs_timed = if timed_in.is_empty() { class != NodeClass::Static } else { !is_shape_op };
        if outputs_timed {
            let d_in = node.inputs.iter().flatten().filter(|&&v| timed[v]).map(|&v| delay[v]).max().unwrap_or(0);
            let extra = match &class {
                NodeClass::Stateful(StateKind::ConvContext { lookahead, .. }) => *lookahead,
                _ => 0,
            };
            for &o in &node.outputs {
                timed[o] = true;
                time_axis[o] = axis_of(&p0[o], &p1[o]).ok().flatten();
                delay[o] = d_in + extra;
            }
        } else if shaped_in || is_shape_op {
            for &o in &node.outputs {
                chunk_shaped[o] = true;
            }
        }
        nodes.push(NodeReport { node: ni, name: node.name.clone(), op: node.op.name(), class });
    }
    Ok(Analysis { symbol: symbol.to_string(), time_axis, timed, delay, probe_shape: p0, nodes, stream_inputs })
}

/// A node fed only by time-length-derived values: shape arithmetic stays
/// static; making data out of the length (positions) blocks.
fn classify_shaped(node: &crate::graph::Node, p0: &[Option<Vec<usize>>], p1: &[Option<Vec<usize>>]) -> NodeClass {
    match &node.op {
        Op::Layout(LayoutOp::Range) => {
            NodeClass::Blocking("makes positions from the time length (absolute time restarts every chunk)".into())
        }
        Op::Layout(LayoutOp::ConstantOfShape { .. } | LayoutOp::Expand) => {
            match node.outputs.iter().map(|&o| axis_of(&p0[o], &p1[o])).next() {
                Some(Ok(Some(_))) => NodeClass::Stateless,
                _ => NodeClass::Static,
            }
        }
        Op::Layout(LayoutOp::Trilu { .. } | LayoutOp::EyeLike { .. }) => {
            NodeClass::Blocking("builds a time x time matrix (a mask over all of time)".into())
        }
        _ => NodeClass::Static,
    }
}

fn blocking(why: impl Into<String>) -> NodeClass {
    NodeClass::Blocking(why.into())
}

/// Normalises a possibly negative axis.
fn norm(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

/// The rule for a node with time-dependent inputs `timed_in` (input positions).
fn classify(
    g: &Graph,
    node: &crate::graph::Node,
    timed_in: &[usize],
    time_axis: &[Option<usize>],
    p0: &[Option<Vec<usize>>],
    p1: &[Option<Vec<usize>>],
) -> NodeClass {
    // Every timed input must still have its time axis (a summary over time
    // was already reported at the node that made it).
    let mut in_axes = Vec::with_capacity(timed_in.len());
    for &i in timed_in {
        let v = node.inputs[i].expect("timed input present");
        match time_axis[v] {
            Some(a) => in_axes.push((i, a)),
            None => return blocking(format!("input '{}' has no time axis left", g.values[v].name)),
        }
    }
    let mut out_axes = Vec::with_capacity(node.outputs.len());
    for &o in &node.outputs {
        match axis_of(&p0[o], &p1[o]) {
            Ok(Some(a)) => out_axes.push(Some(a)),
            Ok(None) => out_axes.push(None),
            Err(why) => return blocking(format!("output '{}': {why}", g.values[o].name)),
        }
    }
    let in_rank = |i: usize| node.inputs[i].and_then(|v| p0[v].as_ref()).map_or(0, |s| s.len());
    let (x_in, t) = in_axes[0];
    let only_x = in_axes.len() == 1;
    let keeps_time = out_axes.first().is_some_and(|a| a.is_some());
    let summary = || blocking("reduces over the time axis (needs all of time)");
    match &node.op {
        Op::Elementwise(_) | Op::Quantize(_) => {
            if out_axes.iter().all(|a| a.is_some()) {
                NodeClass::Stateless
            } else {
                summary()
            }
        }
        Op::Softmax(s) => {
            if norm(s.axis, in_rank(0)) == t || s.legacy && norm(s.axis, in_rank(0)) <= t {
                blocking("softmax over the time axis")
            } else {
                NodeClass::Stateless
            }
        }
        Op::Normalization(n) => match n {
            NormOp::BatchNorm { .. } if t != 1 => NodeClass::Stateless,
            NormOp::LayerNorm { axis, .. } | NormOp::RmsNorm { axis, .. } if t < norm(*axis, in_rank(0)) => {
                NodeClass::Stateless
            }
            NormOp::LpNorm { axis, .. } if norm(*axis, in_rank(0)) != t => NodeClass::Stateless,
            NormOp::Lrn { .. } if t != 1 => NodeClass::Stateless,
            _ => blocking("normalises over the time axis"),
        },
        Op::Reduce(r) => match r {
            ReduceOp::CumSum { .. } | ReduceOp::CumProd { .. } => {
                let axis_input = node.inputs.get(1).copied().flatten().and_then(|v| g.values[v].konst.as_ref());
                let running_sum = matches!(r, ReduceOp::CumSum { exclusive: false, reverse: false });
                match axis_input.and_then(|a| a.to_i64_vec().ok()).and_then(|a| a.first().copied()) {
                    Some(a) if norm(a, in_rank(0)) != t => NodeClass::Stateless,
                    Some(_) if running_sum && x_in == 0 => NodeClass::Stateful(StateKind::RunningSum),
                    _ => blocking("exclusive, reverse or product running reductions along time have no streaming rule"),
                }
            }
            _ if keeps_time => NodeClass::Stateless,
            _ => summary(),
        },
        Op::Layout(l) => classify_layout(l, node, t, keeps_time, &out_axes, p0),
        Op::Gather(_) | Op::Einsum(_) if keeps_time && only_x && x_in == 0 => NodeClass::Stateless,
        Op::Gather(_) if keeps_time && only_x && x_in == 1 => NodeClass::Stateless,
        Op::MatMul(m) => {
            if !only_x || x_in != 0 {
                return blocking("multiplies by a time-dependent right operand (attention that was not fused?)");
            }
            let contracted = match m {
                MatMulOp::Gemm { trans_a: true, .. } => 0,
                MatMulOp::Gemm { .. } => 1,
                _ => in_rank(0).saturating_sub(1),
            };
            if t == contracted || !keeps_time {
                summary()
            } else {
                NodeClass::Stateless
            }
        }
        Op::Conv(c) => classify_conv(c, node, t, only_x && x_in == 0, p0),
        Op::Pool(_) if keeps_time && out_axes[0] == Some(t) => {
            // A window of 1 along time (per-frame pooling over other axes).
            let same =
                node.outputs.first().and_then(|&o| p0[o].as_ref()).zip(node.inputs[0].and_then(|v| p0[v].as_ref()));
            match same {
                Some((o, i)) if o.len() == i.len() && t < o.len() => NodeClass::Stateless,
                _ => blocking("pools over time"),
            }
        }
        Op::Pool(_) => blocking("pools over time"),
        Op::Rnn(r) => classify_rnn(r, node, &in_axes, g),
        Op::Attention(a) => classify_attention(a, node, &in_axes, in_rank(0)),
        Op::LinearAttention(crate::ops::linear_attention::LinearAttentionOp::Normalized { causal: false, .. }) => {
            blocking("non-causal linear attention over all of time (every output frame sees future frames)")
        }
        Op::Lmu(_) | Op::Lif(_) | Op::LinearAttention(_) | Op::CausalConv(_) => {
            classify_explicit_state(g, node, &in_axes, explicit_state(&node.op, in_rank(0)))
        }
        Op::SpikeLinear(s) => {
            let contracted = if s.channels_first { 1 } else { in_rank(0).saturating_sub(1) };
            if only_x && x_in == 0 && t != contracted && keeps_time {
                NodeClass::Stateless
            } else {
                summary()
            }
        }
        Op::Control(_) => blocking("control flow (If/Loop/Scan) over time-dependent data"),
        _ => blocking(format!("{} has no streaming rule", node.op.name())),
    }
}

fn classify_layout(
    l: &LayoutOp,
    node: &crate::graph::Node,
    t: usize,
    keeps_time: bool,
    out_axes: &[Option<usize>],
    p0: &[Option<Vec<usize>>],
) -> NodeClass {
    use LayoutOp::*;
    let all_keep = out_axes.iter().all(|a| a.is_some());
    match l {
        Shape { .. } | Size => NodeClass::Static,
        Reshape { .. } | Flatten { .. } => {
            // Frames must stay contiguous blocks: the elements before the time
            // axis are the same in and out.
            let (Some(i), Some(o), Some(ot)) = (
                node.inputs[0].and_then(|v| p0[v].as_ref()),
                node.outputs.first().and_then(|&v| p0[v].as_ref()),
                out_axes[0],
            ) else {
                return blocking("reshape merges the time axis with another");
            };
            let before_in: usize = i[..t].iter().product();
            let before_out: usize = o[..ot].iter().product();
            if before_in == before_out {
                NodeClass::Stateless
            } else {
                blocking("reshape moves data across frames")
            }
        }
        Transpose { .. }
        | Squeeze { .. }
        | Unsqueeze { .. }
        | Identity
        | Dropout
        | Cast { .. }
        | CastLike
        | Expand
        | Concat { .. }
        | Split { .. }
        | Slice { .. }
        | Pad { .. }
        | Tile
        | DepthToSpace { .. }
        | SpaceToDepth { .. }
        | OneHot { .. }
        | Trilu { .. }
            if all_keep && keeps_time =>
        {
            NodeClass::Stateless
        }
        _ if !keeps_time => blocking(format!("{} over the time axis (needs all of time)", l_name(l))),
        _ => blocking(format!("{} has no streaming rule", l_name(l))),
    }
}

fn l_name(l: &LayoutOp) -> &'static str {
    use crate::ops::OpImpl;
    l.name()
}

/// A convolution over time: stride 1 along it, output as long as the input.
fn classify_conv(
    c: &ConvOp,
    node: &crate::graph::Node,
    t: usize,
    x_only: bool,
    p0: &[Option<Vec<usize>>],
) -> NodeClass {
    let attrs = match c {
        ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. } => a,
        _ => return blocking(format!("{} along time has no streaming rule", node.op.name())),
    };
    if !x_only {
        return blocking("convolution with time-dependent weights");
    }
    match conv_window(attrs, node, t, p0) {
        Ok((0, _)) => NodeClass::Stateless,
        Ok((context, lookahead)) => NodeClass::Stateful(StateKind::ConvContext { context, lookahead }),
        Err(why) => blocking(why),
    }
}

/// (context, look-ahead) frames of a conv along time axis `t` (of the input).
pub(crate) fn conv_window(
    attrs: &ConvAttrs,
    node: &crate::graph::Node,
    t: usize,
    p0: &[Option<Vec<usize>>],
) -> std::result::Result<(usize, usize), String> {
    let x = node.inputs[0].and_then(|v| p0[v].clone()).ok_or("input shape unknown")?;
    let w = node.inputs.get(1).copied().flatten().and_then(|v| p0[v].clone()).ok_or("weight shape unknown")?;
    if t < 2 || t >= x.len() {
        return Err("time is not a spatial axis of the convolution".into());
    }
    let kernel: Vec<usize> = if attrs.kernel_shape.is_empty() { w[2..].to_vec() } else { attrs.kernel_shape.clone() };
    let win = Window::new(&x[2..], &kernel, attrs, false).map_err(|e| e.to_string())?;
    let s = t - 2;
    if win.stride[s] != 1 {
        return Err(format!("stride {} along time (downsampling has no streaming rule yet)", win.stride[s]));
    }
    let ext = (win.kernel[s] - 1) * win.dil[s];
    if win.pad_begin[s] + win.pad_end[s] != ext {
        return Err("the output is not as long as the input along time".into());
    }
    Ok((ext, win.pad_end[s]))
}

fn classify_rnn(r: &RnnOp, node: &crate::graph::Node, in_axes: &[(usize, usize)], g: &Graph) -> NodeClass {
    let attrs = match r {
        RnnOp::Rnn(a) | RnnOp::Gru { attrs: a, .. } | RnnOp::Lstm { attrs: a, .. } => a,
    };
    if attrs.direction != Direction::Forward {
        return blocking("the recurrence runs backwards over time (reverse/bidirectional)");
    }
    let seq_axis = if attrs.batch_first { 1 } else { 0 };
    if in_axes != [(0, seq_axis)] {
        return blocking("time is not the sequence axis of X only");
    }
    if node.inputs.get(4).copied().flatten().is_some() {
        return blocking("sequence_lens depends on the whole sequence");
    }
    for i in [5, 6] {
        if let Some(v) = node.inputs.get(i).copied().flatten() {
            if g.values[v].konst.is_none() {
                return blocking("the initial state is not a constant");
            }
        }
    }
    NodeClass::Stateful(StateKind::Recurrent)
}

fn classify_attention(
    a: &crate::ops::attention::AttentionOp,
    node: &crate::graph::Node,
    in_axes: &[(usize, usize)],
    rank: usize,
) -> NodeClass {
    use crate::ops::attention::AttentionOp;
    let is_causal = match a {
        AttentionOp::Attention { is_causal, .. } => is_causal,
        AttentionOp::KnnAttention { .. } => {
            return blocking("k-NN attention has no streaming form (convert without --attention knn)")
        }
        _ => return blocking("rotary embedding without explicit positions uses absolute time"),
    };
    if !is_causal {
        return blocking("non-causal attention over all of time (every output frame sees future frames)");
    }
    let seq = rank.saturating_sub(2).max(1);
    let seq = if rank == 3 { 1 } else { seq };
    if in_axes.iter().map(|&(i, a)| (i, a)).collect::<Vec<_>>() != [(0, seq), (1, seq), (2, seq)] {
        return blocking("Q, K and V must all run along time on their sequence axis");
    }
    if node.inputs.iter().skip(3).any(|i| i.is_some()) {
        return blocking("attention with a mask, past KV or padding input has no streaming rule");
    }
    if node.outputs.len() > 1 {
        return blocking("attention whose present KV / scores are read elsewhere");
    }
    NodeClass::Stateful(StateKind::KvCache)
}

/// How an op with explicit state streams: which inputs may carry time (and on
/// which axis), and its (initial-state input, final-state output) pairs.
pub(crate) struct ExplicitState {
    pub time_inputs: Vec<(usize, usize)>,
    pub states: Vec<(usize, usize)>,
}

/// Ops that carry their state as explicit inputs and outputs (floe's LMU and
/// LIF, linear attention, causal conv with state).
pub(crate) fn explicit_state(op: &Op, rank: usize) -> Option<ExplicitState> {
    let es =
        |time_inputs: Vec<(usize, usize)>, states: Vec<(usize, usize)>| Some(ExplicitState { time_inputs, states });
    match op {
        Op::Lmu(_) => es(vec![(0, 1)], vec![(1, 1)]),
        Op::Lif(l) => es(vec![(0, norm(l.time_axis, rank))], vec![(1, 1)]),
        // q, k, v [B, T, H * d], decay and beta [B, T, ...]; the state [B, H, dk, dv]
        Op::LinearAttention(crate::ops::linear_attention::LinearAttentionOp::LinearAttention { .. }) => {
            es(vec![(0, 1), (1, 1), (2, 1), (4, 1), (5, 1)], vec![(3, 1)])
        }
        // Q, K, V [N, L, H, D]; the sums S (past_kv) and z (past_z)
        Op::LinearAttention(crate::ops::linear_attention::LinearAttentionOp::Normalized { .. }) => {
            es(vec![(0, 1), (1, 1), (2, 1)], vec![(3, 1), (4, 2)])
        }
        // x [B, C, L]; the last k - 1 frames
        Op::CausalConv(_) => es(vec![(0, 2)], vec![(3, 1)]),
        _ => None,
    }
}

fn classify_explicit_state(
    g: &Graph,
    node: &crate::graph::Node,
    in_axes: &[(usize, usize)],
    rule: Option<ExplicitState>,
) -> NodeClass {
    let Some(rule) = rule else { return blocking("no streaming rule") };
    if let Some((i, a)) = in_axes.iter().find(|ia| !rule.time_inputs.contains(ia)) {
        return blocking(format!("input {i} carries time on axis {a}, which this op cannot stream"));
    }
    for &(state_in, _) in &rule.states {
        if node.inputs.get(state_in).copied().flatten().is_some_and(|v| g.values[v].konst.is_none()) {
            return blocking("the initial state is not a constant");
        }
    }
    NodeClass::Stateful(StateKind::Recurrent)
}
