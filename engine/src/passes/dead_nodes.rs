//! Dead-node removal: drops nodes none of whose outputs reach a graph output, and
//! the payloads of constants nothing reads any more.

use crate::graph::Graph;

/// Removes nodes that do not contribute to any graph output. Returns how many.
pub fn remove_dead_nodes(g: &mut Graph) -> usize {
    let mut live = vec![false; g.values.len()];
    for &o in &g.outputs {
        live[o] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|&o| live[o]) {
            keep[i] = true;
            for &inp in n.inputs.iter().flatten() {
                live[inp] = true;
            }
        }
    }
    let before = g.nodes.len();
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    before - g.nodes.len()
}

/// Drops the constant payload of values no node reads that are neither graph
/// inputs nor outputs: weights a fold replaced (a conv's weights before
/// BatchNormalization was folded in, f32 weights that were quantized). A `.floe`
/// file then does not store them. Returns how many.
pub fn drop_unused_constants(g: &mut Graph) -> usize {
    let mut used = vec![false; g.values.len()];
    for &v in g.nodes.iter().flat_map(|n| n.inputs.iter().flatten()).chain(&g.inputs).chain(&g.outputs) {
        used[v] = true;
    }
    let mut dropped = 0;
    for (v, used) in g.values.iter_mut().zip(used) {
        if !used && v.konst.take().is_some() {
            dropped += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::{ElementwiseOp, UnaryOp};
    use crate::shape::Fact;

    #[test]
    fn unused_branch_is_removed_and_used_one_kept() {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::unknown());
        let y = g.add_value("y", Fact::unknown());
        let z = g.add_value("z", Fact::unknown());
        g.inputs = vec![x];
        g.add_node("used", ElementwiseOp::Unary(UnaryOp::Relu).into(), vec![Some(x)], vec![y]);
        g.add_node("unused", ElementwiseOp::Unary(UnaryOp::Exp).into(), vec![Some(x)], vec![z]);
        g.outputs = vec![y];
        assert_eq!(remove_dead_nodes(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].name, "used");
    }

    #[test]
    fn only_constants_nothing_reads_lose_their_payload() {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::unknown());
        let read = g.add_const("read", crate::Tensor::scalar(2.0f32));
        let orphan = g.add_const("orphan", crate::Tensor::scalar(3.0f32));
        let out = g.add_const("out", crate::Tensor::scalar(4.0f32));
        let y = g.add_value("y", Fact::unknown());
        g.inputs = vec![x];
        g.add_node(
            "mul",
            ElementwiseOp::Binary(crate::ops::elementwise::BinaryOp::Mul).into(),
            vec![Some(x), Some(read)],
            vec![y],
        );
        g.outputs = vec![y, out];
        assert_eq!(drop_unused_constants(&mut g), 1);
        assert!(g.values[orphan].konst.is_none());
        assert!(g.values[read].konst.is_some() && g.values[out].konst.is_some());
    }
}
