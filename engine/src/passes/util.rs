//! Small queries passes share.

use crate::graph::{Graph, ValueId};
use crate::tensor::Tensor;

/// The constant behind a value, if it is one.
pub fn const_of(g: &Graph, v: ValueId) -> Option<&Tensor> {
    g.values.get(v)?.konst.as_ref()
}

/// Indices of the nodes that read `v`.
pub fn consumers(g: &Graph, v: ValueId) -> Vec<usize> {
    g.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(v))).map(|(i, _)| i).collect()
}

/// The value of a one-element constant, as f64.
pub fn scalar_const(g: &Graph, v: ValueId) -> Option<f64> {
    let t = const_of(g, v)?;
    (t.numel() == 1).then(|| t.to_f64_vec()[0])
}
