//! Dead-node removal: drops nodes none of whose outputs reach a graph output.

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
}
