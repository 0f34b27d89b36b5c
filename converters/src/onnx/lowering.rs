//! Lowering one ONNX node onto a small floe subgraph.
//!
//! Most ONNX ops map onto exactly one floe [`Op`] with the same inputs and outputs
//! (a [`ConvertFn`](super::registry::ConvertFn)). Fused ops of other runtimes, such
//! as onnxruntime's `com.microsoft.Attention` (input projection + multi-head
//! attention + mask conversion), have no floe op of their own: they are rewritten
//! into a few canonical floe nodes (MatMul, Add, Split, Cast, Attention, ...), so the
//! engine and its passes only ever see canonical ops.
//!
//! A lowering converter returns a [`Lowering`]: its nodes read the ONNX node's
//! inputs ([`Val::Input`]), constants it adds, and values produced by earlier nodes
//! of the lowering ([`Val::Temp`]); together they must write every output of the
//! ONNX node ([`Val::Output`]). The importer wires it into the graph: temporaries
//! and nodes are named `<node name>/<label>`, so errors still point at the ONNX node.

use floe_engine::{Op, Tensor};

/// A value seen by the nodes of a [`Lowering`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// Input `i` of the ONNX node (an omitted optional input reads as absent).
    Input(usize),
    /// Output `k` of the ONNX node.
    Output(usize),
    /// A value internal to the lowering (output of one of its nodes).
    Temp(usize),
    /// A constant added with [`Lowering::constant`].
    Const(usize),
}

/// One floe node of a lowering.
#[derive(Clone, Debug)]
pub struct LoweredNode {
    /// Short name, unique within the lowering (`q_proj`, `mask_add`, ...).
    pub label: String,
    pub op: Op,
    /// `None` for an omitted optional input.
    pub inputs: Vec<Option<Val>>,
    pub outputs: Vec<Val>,
}

/// The floe subgraph one ONNX node is rewritten into, in execution order.
#[derive(Clone, Debug, Default)]
pub struct Lowering {
    /// Constants, with labels.
    pub consts: Vec<(String, Tensor)>,
    /// Labels of the temporaries, indexed by [`Val::Temp`].
    pub temps: Vec<String>,
    pub nodes: Vec<LoweredNode>,
}

impl Lowering {
    pub fn new() -> Lowering {
        Lowering::default()
    }

    /// Adds a constant.
    pub fn constant(&mut self, label: &str, t: Tensor) -> Val {
        self.consts.push((label.to_string(), t));
        Val::Const(self.consts.len() - 1)
    }

    /// Adds a node with one output, a new temporary, and returns it.
    pub fn node(&mut self, label: &str, op: impl Into<Op>, inputs: Vec<Option<Val>>) -> Val {
        self.node_n(label, op, inputs, 1)[0]
    }

    /// Adds a node with `n` outputs, all new temporaries (labelled `label:k`).
    pub fn node_n(&mut self, label: &str, op: impl Into<Op>, inputs: Vec<Option<Val>>, n: usize) -> Vec<Val> {
        let outputs: Vec<Val> = (0..n)
            .map(|k| {
                self.temps.push(if n == 1 { label.to_string() } else { format!("{label}:{k}") });
                Val::Temp(self.temps.len() - 1)
            })
            .collect();
        self.node_to(label, op, inputs, outputs.clone());
        outputs
    }

    /// Adds a node writing the given values (typically [`Val::Output`]s of the ONNX node).
    pub fn node_to(&mut self, label: &str, op: impl Into<Op>, inputs: Vec<Option<Val>>, outputs: Vec<Val>) {
        self.nodes.push(LoweredNode { label: label.to_string(), op: op.into(), inputs, outputs });
    }

    /// A new temporary that a later [`Lowering::node_to`] writes.
    pub fn temp(&mut self, label: &str) -> Val {
        self.temps.push(label.to_string());
        Val::Temp(self.temps.len() - 1)
    }
}
