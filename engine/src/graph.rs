//! The graph IR: SSA values (each with a [`Fact`] and maybe a constant tensor) and
//! nodes holding a typed [`Op`]. Nodes are kept in topological order.
//!
//! Room for what comes later: values carry symbolic dims (the streaming axis),
//! constants may borrow from a memory map ([`Tensor::borrowed`]), and ops are a
//! closed enum so passes can match on them and the `.floe` writer can serialize them.

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::shape::Fact;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// One SSA value.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Value {
    pub name: String,
    pub fact: Fact,
    /// Set for weights and folded constants.
    pub konst: Option<Tensor>,
}

/// One operation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

/// A computation graph (a model's main graph or an If/Loop/Scan body).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    pub fn add_value(&mut self, name: impl Into<String>, fact: Fact) -> ValueId {
        self.values.push(Value { name: name.into(), fact, konst: None });
        self.values.len() - 1
    }

    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let fact = Fact::new(t.dtype(), crate::Shape::fixed(t.shape()));
        self.values.push(Value { name: name.into(), fact, konst: Some(t) });
        self.values.len() - 1
    }

    pub fn add_node(&mut self, name: impl Into<String>, op: Op, inputs: Vec<Option<ValueId>>, outputs: Vec<ValueId>) {
        self.nodes.push(Node { name: name.into(), op, inputs, outputs });
    }

    /// Looks a value up by name (linear; for tools and tests).
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// Number of weight elements and bytes held by constants.
    pub fn parameter_stats(&self) -> (usize, usize) {
        self.values
            .iter()
            .filter_map(|v| v.konst.as_ref())
            .fold((0, 0), |(n, b), t| (n + t.numel(), b + t.bytes().len()))
    }

    /// Op type -> count, including the bodies of control-flow ops.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        self.visit_nodes(&mut |n| *h.entry(n.op.name().to_string()).or_insert(0) += 1);
        h
    }

    /// Calls `f` on every node, recursing into subgraphs.
    pub fn visit_nodes(&self, f: &mut dyn FnMut(&Node)) {
        for n in &self.nodes {
            f(n);
            for g in n.op.subgraphs() {
                g.visit_nodes(f);
            }
        }
    }

    /// Checks the structural invariants: ids in range, every value used is a graph
    /// input, a constant or produced by an earlier node, and produced only once.
    pub fn validate(&self) -> Result<()> {
        let n = self.values.len();
        let mut defined = vec![false; n];
        for &i in &self.inputs {
            if i >= n {
                return Err(Error::Invalid(format!("graph input id {i} out of range")));
            }
            defined[i] = true;
        }
        for (i, v) in self.values.iter().enumerate() {
            if v.konst.is_some() {
                defined[i] = true;
            }
        }
        for node in &self.nodes {
            for &inp in node.inputs.iter().flatten() {
                if inp >= n || !defined[inp] {
                    let name = self.values.get(inp).map_or("?", |v| v.name.as_str());
                    return Err(Error::Invalid(format!(
                        "node '{}' ({}) uses value '{name}' before it is defined",
                        node.name,
                        node.op.name()
                    )));
                }
            }
            for &out in &node.outputs {
                if out >= n {
                    return Err(Error::Invalid(format!("node '{}' output id out of range", node.name)));
                }
                if defined[out] {
                    return Err(Error::Invalid(format!(
                        "value '{}' is defined twice (second time by node '{}')",
                        self.values[out].name, node.name
                    )));
                }
                defined[out] = true;
            }
        }
        for &o in &self.outputs {
            if o >= n || !defined[o] {
                let name = self.values.get(o).map_or("?", |v| v.name.as_str());
                return Err(Error::Invalid(format!("graph output '{name}' is never produced")));
            }
        }
        Ok(())
    }
}
