//! The step graph: a streamable graph rewritten so one run processes one chunk
//! of frames, with every piece of state an explicit input (last chunk's state)
//! and output (this chunk's state), which [`StreamSession`](super::StreamSession)
//! threads from push to push.
//!
//! The rewrites use ordinary ops, so every kernel the engine has runs unchanged:
//! - a convolution along time reads `Concat(ring, x)` with its time padding
//!   removed; the new ring is the last `context` frames of that concatenation;
//! - GRU / LSTM / RNN take their initial state from the state input and give
//!   their final state (`Y_h`, `Y_c`) as the state output;
//! - causal attention gets the cached keys and values as past KV, an explicit
//!   mask the session fills (cache slots not yet written, causality inside the
//!   chunk, an optional window), and keeps the newest `capacity` entries;
//! - where inputs of one node have different delays (a look-ahead on one
//!   branch), the less delayed ones pass through a delay line.

use super::analysis::{explicit_state, Analysis, NodeClass, StateKind};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::ops::attention::AttentionOp;
use crate::ops::conv::{AutoPad, ConvAttrs, ConvOp, Window};
use crate::ops::layout::LayoutOp;
use crate::ops::rnn::RnnOp;
use crate::ops::Op;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;

/// The symbol of the KV-cache capacity in the step graph's state shapes.
pub const KV_CAPACITY: &str = "__kv_capacity";

/// One piece of state: a step-graph input and the matching output.
#[derive(Clone, Debug)]
pub struct StateSlot {
    /// The node that owns it.
    pub node: String,
    pub dtype: DType,
    /// Shape with the KV capacity axis (if any) at size 0.
    pub shape: Vec<usize>,
    /// `Some(axis)` for KV caches: that axis has the cache capacity.
    pub capacity_axis: Option<usize>,
    /// Value at the start of a stream (zeros, or a model's constant initial state).
    pub init: Option<Tensor>,
    /// Frames at the start of the stream that are warm-up for this node (delay
    /// of its input): chunks entirely before it leave the state unchanged.
    pub skip: usize,
}

/// A causal attention node's mask input, filled by the session every push.
#[derive(Clone, Debug)]
pub struct KvMask {
    pub node: String,
    /// Position of the mask among the step graph's inputs.
    pub input: usize,
    pub skip: usize,
    /// Attend to at most this many past positions (None: all of them).
    pub window: Option<usize>,
}

/// A step graph and what the session needs to drive it.
#[derive(Clone, Debug)]
pub struct StepGraph {
    pub graph: Graph,
    pub symbol: String,
    /// Per model input: its time axis (None: given whole on every push).
    pub input_axes: Vec<Option<usize>>,
    /// Per model output: time axis and delay in frames.
    pub output_axes: Vec<Option<usize>>,
    pub output_delays: Vec<usize>,
    pub states: Vec<StateSlot>,
    pub masks: Vec<KvMask>,
    /// Number of model inputs / outputs (the state inputs/outputs follow).
    pub n_inputs: usize,
    pub n_outputs: usize,
}

/// Options of the stateful rewrite.
#[derive(Clone, Debug, Default)]
pub struct StreamOptions {
    /// Sliding window of causal attention's KV cache (None: the whole history).
    pub kv_window: Option<usize>,
}

struct Builder<'a> {
    g: Graph,
    a: &'a Analysis,
    nodes: Vec<Node>,
    states: Vec<StateSlot>,
    state_inputs: Vec<ValueId>,
    state_outputs: Vec<ValueId>,
    masks: Vec<(KvMask, ValueId)>,
    /// Delayed copies -> the value they delay (for shapes, which are the same).
    alias: std::collections::HashMap<ValueId, ValueId>,
}

impl Builder<'_> {
    fn konst_i64(&mut self, name: &str, v: &[i64]) -> ValueId {
        let t = Tensor::from_slice(&[v.len()], v).expect("1-D i64");
        self.g.add_const(name, t)
    }

    fn value(&mut self, name: String, fact: Fact) -> ValueId {
        self.g.add_value(name, fact)
    }

    fn node(&mut self, name: String, op: Op, inputs: Vec<Option<ValueId>>, outputs: Vec<ValueId>) {
        self.nodes.push(Node { name, op, inputs, outputs });
    }

    /// A new state input of `shape`; returns its value id and slot index.
    fn state(&mut self, owner: &str, tag: &str, dtype: DType, shape: Shape, slot: StateSlot) -> (ValueId, usize) {
        let id = self.value(format!("{owner}::state_in::{tag}"), Fact::new(dtype, shape));
        self.states.push(slot);
        self.state_inputs.push(id);
        self.state_outputs.push(usize::MAX);
        (id, self.states.len() - 1)
    }

    fn set_state_output(&mut self, slot: usize, v: ValueId) {
        self.state_outputs[slot] = v;
    }

    fn orig(&self, v: ValueId) -> ValueId {
        self.alias.get(&v).copied().unwrap_or(v)
    }

    fn probe_shape(&self, v: ValueId) -> Result<Vec<usize>> {
        let v = self.orig(v);
        self.a.probe_shape[v]
            .clone()
            .ok_or_else(|| Error::Invalid(format!("value '{}' has no known shape", self.g.values[v].name)))
    }

    /// `Concat(state, x)` along `axis` with a new state of `frames` frames;
    /// returns (x_ext, slot). The new state is the last `frames` frames.
    fn ring(&mut self, owner: &str, tag: &str, x: ValueId, axis: usize, frames: usize, skip: usize) -> Result<ValueId> {
        let dtype = self.g.values[x].fact.dtype.unwrap_or(DType::F32);
        let mut shape = self.probe_shape(x)?;
        shape[axis] = frames;
        let slot =
            StateSlot { node: owner.to_string(), dtype, shape: shape.clone(), capacity_axis: None, init: None, skip };
        let (st_in, si) = self.state(owner, tag, dtype, Shape::fixed(&shape), slot);
        let ext = self.value(format!("{owner}::{tag}::ext"), Fact::dtype_only(dtype));
        self.node(
            format!("{owner}::{tag}::concat"),
            LayoutOp::Concat { axis: axis as i64 }.into(),
            vec![Some(st_in), Some(x)],
            vec![ext],
        );
        let st_out = self.value(format!("{owner}::state_out::{tag}"), Fact::dtype_only(dtype));
        self.node(
            format!("{owner}::{tag}::keep"),
            LayoutOp::Slice {
                starts: Some(vec![-(frames as i64)]),
                ends: Some(vec![i64::MAX]),
                axes: Some(vec![axis as i64]),
            }
            .into(),
            vec![Some(ext)],
            vec![st_out],
        );
        self.set_state_output(si, st_out);
        Ok(ext)
    }

    /// `x` delayed by `frames` frames along `axis`.
    fn delay_line(&mut self, owner: &str, tag: &str, x: ValueId, axis: usize, frames: usize) -> Result<ValueId> {
        let ext = self.ring(owner, tag, x, axis, frames, 0)?;
        let dtype = self.g.values[x].fact.dtype.unwrap_or(DType::F32);
        let out = self.value(format!("{owner}::{tag}::delayed"), Fact::dtype_only(dtype));
        self.node(
            format!("{owner}::{tag}::delay"),
            LayoutOp::Slice {
                starts: Some(vec![0]),
                ends: Some(vec![-(frames as i64)]),
                axes: Some(vec![axis as i64]),
            }
            .into(),
            vec![Some(ext)],
            vec![out],
        );
        self.alias.insert(out, x);
        Ok(out)
    }
}

/// Rewrites a streamable graph (see [`analyze`](super::analyze)) into its step graph.
pub fn step_graph(g: &Graph, a: &Analysis, opts: &StreamOptions) -> Result<StepGraph> {
    if let Some(e) = a.blocking_error() {
        return Err(e);
    }
    let mut b = Builder {
        g: g.clone(),
        a,
        nodes: Vec::with_capacity(g.nodes.len() * 2),
        states: Vec::new(),
        state_inputs: Vec::new(),
        state_outputs: Vec::new(),
        masks: Vec::new(),
        alias: Default::default(),
    };
    b.g.nodes.clear();
    for (ni, node) in g.nodes.iter().enumerate() {
        let mut node = node.clone();
        let class = &a.nodes[ni].class;
        align_delays(&mut b, &mut node)?;
        match class {
            NodeClass::Stateful(StateKind::ConvContext { context, .. }) => conv(&mut b, &mut node, *context)?,
            NodeClass::Stateful(StateKind::Recurrent) if matches!(node.op, Op::Rnn(_)) => rnn(&mut b, &mut node)?,
            NodeClass::Stateful(StateKind::Recurrent) => explicit(&mut b, node)?,
            NodeClass::Stateful(StateKind::KvCache) => attention(&mut b, node, opts)?,
            NodeClass::Stateful(StateKind::RunningSum) => running_sum(&mut b, node)?,
            _ => b.nodes.push(node),
        }
    }
    let Builder { mut g, nodes, states, state_inputs, state_outputs, masks, .. } = b;
    // State outputs are appended after the owner; order nodes as built.
    g.nodes = nodes;
    let n_inputs = g.inputs.len();
    let n_outputs = g.outputs.len();
    g.inputs.extend(&state_inputs);
    let mut mask_list = Vec::with_capacity(masks.len());
    for (mut m, id) in masks {
        m.input = g.inputs.len();
        g.inputs.push(id);
        mask_list.push(m);
    }
    g.outputs.extend(&state_outputs);
    g.validate().map_err(|e| Error::Invalid(format!("stream rewrite produced an invalid graph: {e}")))?;
    let input_axes = g.inputs[..n_inputs].iter().map(|&i| a.time_axis[i]).collect();
    let output_axes = g.outputs[..n_outputs].iter().map(|&o| a.time_axis[o]).collect();
    let output_delays = g.outputs[..n_outputs].iter().map(|&o| a.delay[o]).collect();
    Ok(StepGraph {
        graph: g,
        symbol: a.symbol.clone(),
        input_axes,
        output_axes,
        output_delays,
        states,
        masks: mask_list,
        n_inputs,
        n_outputs,
    })
}

/// Delays the timed inputs of `node` that lag behind the most delayed one.
fn align_delays(b: &mut Builder<'_>, node: &mut Node) -> Result<()> {
    let a = b.a;
    let timed: Vec<(usize, ValueId)> = node
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|&v| a.timed[v] && v < a.timed.len()).map(|v| (i, v)))
        .collect();
    let max = timed.iter().map(|&(_, v)| a.delay[v]).max().unwrap_or(0);
    for (i, v) in timed {
        let d = a.delay[v];
        if d < max {
            let axis =
                a.time_axis[v].ok_or_else(|| Error::Invalid(format!("'{}' has no time axis", b.g.values[v].name)))?;
            let owner = node.name.clone();
            node.inputs[i] = Some(b.delay_line(&owner, &format!("align{i}"), v, axis, max - d)?);
        }
    }
    Ok(())
}

/// Conv along time: read `Concat(ring, x)` with no time padding.
fn conv(b: &mut Builder<'_>, node: &mut Node, context: usize) -> Result<()> {
    let x = node.inputs[0].ok_or_else(|| Error::Invalid("conv without input".into()))?;
    let t = b.a.time_axis[x].ok_or_else(|| Error::Invalid("conv input has no time axis".into()))?;
    let attrs = match &node.op {
        Op::Conv(ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. }) => a.clone(),
        _ => return Err(Error::Invalid("not a convolution".into())),
    };
    let xs = b.probe_shape(x)?;
    let w = match node.inputs.get(1).copied().flatten() {
        Some(w) => b.probe_shape(w)?,
        None => return Err(Error::Invalid("conv without weights".into())),
    };
    let kernel: Vec<usize> = if attrs.kernel_shape.is_empty() { w[2..].to_vec() } else { attrs.kernel_shape.clone() };
    let win = Window::new(&xs[2..], &kernel, &attrs, false)?;
    let n = xs.len() - 2;
    let mut pads = Vec::with_capacity(2 * n);
    pads.extend(&win.pad_begin);
    pads.extend(&win.pad_end);
    pads[t - 2] = 0;
    pads[n + t - 2] = 0;
    let unpadded = ConvAttrs { auto_pad: AutoPad::NotSet, pads, kernel_shape: kernel, ..attrs };
    if let Op::Conv(ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. }) = &mut node.op {
        *a = unpadded;
    }
    let skip = b.a.delay[x];
    let owner = node.name.clone();
    let ext = b.ring(&owner, "ring", x, t, context, skip)?;
    node.inputs[0] = Some(ext);
    b.nodes.push(node.clone());
    Ok(())
}

/// GRU / LSTM / RNN: initial state in, final state out.
fn rnn(b: &mut Builder<'_>, node: &mut Node) -> Result<()> {
    let (attrs, states): (_, &[(usize, usize, &str)]) = match &node.op {
        Op::Rnn(RnnOp::Lstm { attrs, .. }) => (attrs.clone(), &[(5, 1, "h"), (6, 2, "c")]),
        Op::Rnn(RnnOp::Gru { attrs, .. } | RnnOp::Rnn(attrs)) => (attrs.clone(), &[(5, 1, "h")]),
        _ => return Err(Error::Invalid("not a recurrent op".into())),
    };
    let x = node.inputs[0].ok_or_else(|| Error::Invalid("RNN without X".into()))?;
    let x = b.orig(x);
    let r = node.inputs.get(2).copied().flatten().ok_or_else(|| Error::Invalid("RNN without R".into()))?;
    let xs = b.probe_shape(x)?;
    let hidden = b.probe_shape(r)?[2];
    let batch = if attrs.batch_first { xs[0] } else { xs[1] };
    let shape = if attrs.batch_first { vec![batch, 1, hidden] } else { vec![1, batch, hidden] };
    let skip = b.a.delay[x];
    let owner = node.name.clone();
    let dtype = b.g.values[x].fact.dtype.unwrap_or(DType::F32);
    let mut outs = Vec::new();
    for &(input, output, tag) in states {
        let init = node.inputs.get(input).copied().flatten().and_then(|v| b.g.values[v].konst.clone());
        let slot = StateSlot { node: owner.clone(), dtype, shape: shape.clone(), capacity_axis: None, init, skip };
        let (st_in, si) = b.state(&owner, tag, dtype, Shape::fixed(&shape), slot);
        if node.inputs.len() <= input {
            node.inputs.resize(input + 1, None);
        }
        node.inputs[input] = Some(st_in);
        outs.push((output, si, tag));
    }
    for (output, si, tag) in outs {
        while node.outputs.len() <= output {
            let k = node.outputs.len();
            let v = b.value(format!("{owner}::out{k}"), Fact::dtype_only(dtype));
            node.outputs.push(v);
        }
        let _ = tag;
        b.set_state_output(si, node.outputs[output]);
    }
    b.nodes.push(node.clone());
    Ok(())
}

/// Causal attention: past KV from the cache, an explicit mask, the newest
/// `capacity` entries kept.
fn attention(b: &mut Builder<'_>, mut node: Node, opts: &StreamOptions) -> Result<()> {
    let Op::Attention(AttentionOp::Attention { is_causal, kv_num_heads, .. }) = &mut node.op else {
        return Err(Error::Invalid("not an Attention op".into()));
    };
    *is_causal = false;
    let kv_heads_attr = *kv_num_heads;
    let (q, k, v) = match node.inputs[..3] {
        [Some(q), Some(k), Some(v)] => (q, k, v),
        _ => return Err(Error::Invalid("attention without Q, K or V".into())),
    };
    let ks = b.probe_shape(k)?;
    let vs = b.probe_shape(v)?;
    let (batch, heads, dk, dv, seq) = if ks.len() == 4 {
        (ks[0], ks[1], ks[3], vs[3], 2)
    } else {
        let h = kv_heads_attr.ok_or_else(|| Error::Invalid("3-D attention without kv_num_heads".into()))?;
        (ks[0], h, ks[2] / h, vs[2] / h, 1)
    };
    let dtype = b.g.values[q].fact.dtype.unwrap_or(DType::F32);
    let skip = [q, k, v].iter().map(|&i| b.a.delay[b.orig(i)]).max().unwrap_or(0);
    let owner = node.name.clone();
    let cap = Dim::Sym(KV_CAPACITY.into());
    let mut past = Vec::new();
    for (tag, d) in [("key", dk), ("value", dv)] {
        let slot = StateSlot {
            node: owner.clone(),
            dtype,
            shape: vec![batch, heads, 0, d],
            capacity_axis: Some(2),
            init: None,
            skip,
        };
        let shape = Shape(vec![Dim::Fixed(batch), Dim::Fixed(heads), cap.clone(), Dim::Fixed(d)]);
        past.push(b.state(&owner, tag, dtype, shape, slot));
    }
    let mask = b.value(
        format!("{owner}::kv_mask"),
        Fact::new(DType::F32, Shape(vec![Dim::Sym(b.a.symbol.clone()), Dim::Unknown])),
    );
    b.masks.push((KvMask { node: owner.clone(), input: 0, skip, window: opts.kv_window }, mask));
    node.inputs = vec![Some(q), Some(k), Some(v), Some(mask), Some(past[0].0), Some(past[1].0)];
    let present: Vec<ValueId> = ["present_key", "present_value"]
        .iter()
        .map(|t| b.value(format!("{owner}::{t}"), Fact::dtype_only(dtype)))
        .collect();
    node.outputs.truncate(1);
    node.outputs.extend(&present);
    b.nodes.push(node);
    // The chunk length, from Q's shape (folded when the plan binds it).
    let n = b.value(format!("{owner}::chunk_len"), Fact::dtype_only(DType::I64));
    b.node(
        format!("{owner}::chunk_len"),
        LayoutOp::Shape { start: seq as i64, end: Some(seq as i64 + 1) }.into(),
        vec![Some(q)],
        vec![n],
    );
    let ends = b.konst_i64(&format!("{owner}::kv_ends"), &[i64::MAX]);
    let axes = b.konst_i64(&format!("{owner}::kv_axes"), &[2]);
    for (i, (&p, &(_, si))) in present.iter().zip(&past).enumerate() {
        let out = b.value(format!("{owner}::state_out::{}", ["key", "value"][i]), Fact::dtype_only(dtype));
        b.node(
            format!("{owner}::keep{i}"),
            LayoutOp::Slice { starts: None, ends: None, axes: None }.into(),
            vec![Some(p), Some(n), Some(ends), Some(axes)],
            vec![out],
        );
        b.set_state_output(si, out);
    }
    Ok(())
}

/// CumSum along time: this chunk's cumulative sum plus the total so far; the
/// new total is the last frame.
fn running_sum(b: &mut Builder<'_>, mut node: Node) -> Result<()> {
    let x = node.inputs[0].ok_or_else(|| Error::Invalid("CumSum without input".into()))?;
    let t = b.a.time_axis[b.orig(x)].ok_or_else(|| Error::Invalid("CumSum input has no time axis".into()))?;
    let dtype = b.g.values[x].fact.dtype.unwrap_or(DType::F32);
    let mut shape = b.probe_shape(x)?;
    shape[t] = 1;
    let owner = node.name.clone();
    let slot = StateSlot {
        node: owner.clone(),
        dtype,
        shape: shape.clone(),
        capacity_axis: None,
        init: None,
        skip: b.a.delay[b.orig(x)],
    };
    let (st_in, si) = b.state(&owner, "total", dtype, Shape::fixed(&shape), slot);
    let y = node.outputs[0];
    let partial = b.value(format!("{owner}::partial"), Fact::dtype_only(dtype));
    node.outputs[0] = partial;
    b.nodes.push(node);
    b.node(
        format!("{owner}::add_total"),
        crate::ops::elementwise::ElementwiseOp::Binary(crate::ops::elementwise::BinaryOp::Add).into(),
        vec![Some(partial), Some(st_in)],
        vec![y],
    );
    let st_out = b.value(format!("{owner}::state_out::total"), Fact::dtype_only(dtype));
    b.node(
        format!("{owner}::keep"),
        LayoutOp::Slice { starts: Some(vec![-1]), ends: Some(vec![i64::MAX]), axes: Some(vec![t as i64]) }.into(),
        vec![Some(y)],
        vec![st_out],
    );
    b.set_state_output(si, st_out);
    Ok(())
}

/// An op with explicit initial-state inputs and final-state outputs (LMU, LIF,
/// linear attention, causal conv with state): each pair wired to a state slot
/// whose shape the op's own inference gives for the probe shapes.
fn explicit(b: &mut Builder<'_>, mut node: Node) -> Result<()> {
    let x = node.inputs[0].ok_or_else(|| Error::Invalid("missing input 0".into()))?;
    let xs = b.probe_shape(x)?;
    let rule = explicit_state(&node.op, xs.len()).ok_or_else(|| Error::Invalid("no explicit state".into()))?;
    let n_out = rule.states.iter().map(|&(_, o)| o + 1).max().unwrap_or(1).max(node.outputs.len());
    // State shapes from the op's inference on concrete (probe) input facts.
    let facts: Vec<Option<Fact>> = node
        .inputs
        .iter()
        .map(|i| {
            i.map(|v| {
                let dt = b.g.values[v].fact.dtype;
                let shape = b.probe_shape(v).ok().map(|s| Shape::fixed(&s));
                Fact { dtype: dt, shape }
            })
        })
        .collect();
    let unknown = Fact::unknown();
    let ins: Vec<crate::ops::InferInput<'_>> = node
        .inputs
        .iter()
        .zip(&facts)
        .map(|(i, f)| crate::ops::InferInput {
            fact: f.as_ref().unwrap_or(&unknown),
            value: i.and_then(|v| b.g.values[v].konst.as_ref()),
        })
        .collect();
    let out_facts = node.op.infer(&ins, n_out)?;
    let owner = node.name.clone();
    let skip = node
        .inputs
        .iter()
        .flatten()
        .filter(|&&v| b.a.timed.get(b.orig(v)).copied().unwrap_or(false))
        .map(|&v| b.a.delay[b.orig(v)])
        .max()
        .unwrap_or(0);
    for (k, &(state_in, state_out)) in rule.states.iter().enumerate() {
        let f = &out_facts[state_out];
        let (Some(dtype), Some(shape)) = (f.dtype, f.shape.as_ref().and_then(|s| s.as_fixed())) else {
            return Err(Error::Invalid(format!("the shape of state output {state_out} is not known")));
        };
        let given = node.inputs.get(state_in).copied().flatten().and_then(|v| b.g.values[v].konst.clone());
        let init = match (&node.op, given) {
            (_, Some(t)) => Some(t),
            // LIF starts at its reset potential.
            (Op::Lif(l), None) if l.v_reset != 0.0 => {
                Some(Tensor::from_vec(&shape, vec![l.v_reset; shape.iter().product()])?)
            }
            _ => None,
        };
        let slot = StateSlot { node: owner.clone(), dtype, shape: shape.clone(), capacity_axis: None, init, skip };
        let (st_in, si) = b.state(&owner, &format!("state{k}"), dtype, Shape::fixed(&shape), slot);
        if node.inputs.len() <= state_in {
            node.inputs.resize(state_in + 1, None);
        }
        node.inputs[state_in] = Some(st_in);
        while node.outputs.len() <= state_out {
            let j = node.outputs.len();
            let v = b.value(format!("{owner}::out{j}"), Fact::dtype_only(dtype));
            node.outputs.push(v);
        }
        b.set_state_output(si, node.outputs[state_out]);
    }
    b.nodes.push(node);
    Ok(())
}
