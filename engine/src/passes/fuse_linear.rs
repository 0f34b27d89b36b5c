//! MatMul + Add -> Linear: `x @ W + b` with constant `W` `[K, N]` and constant `b`
//! `[N]` (or `[1, N]`), where the MatMul result feeds only the Add, becomes one
//! `Linear` op that runs as a single GEMM pass starting from the bias.

use super::util::{const_of, consumers};
use crate::graph::Graph;
use crate::ops::elementwise::{BinaryOp, ElementwiseOp};
use crate::ops::matmul::MatMulOp;
use crate::ops::Op;

/// Fuses every matching pair; returns how many.
pub fn fuse_linear(g: &mut Graph) -> usize {
    let mut fused = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some((add_idx, bias_id)) = match_at(g, i) {
            let add = g.nodes.remove(add_idx);
            let mm = &mut g.nodes[i];
            mm.op = MatMulOp::Linear { activation: Default::default() }.into();
            mm.inputs.push(Some(bias_id));
            mm.outputs = add.outputs;
            mm.name = format!("{}+{}", mm.name, add.name);
            fused += 1;
        }
        i += 1;
    }
    fused
}

/// If node `i` is a MatMul by a constant 2-D weight whose only consumer is an Add
/// of a constant `[N]` bias, the Add's index and the bias value id.
fn match_at(g: &Graph, i: usize) -> Option<(usize, usize)> {
    let mm = &g.nodes[i];
    if !matches!(mm.op, Op::MatMul(MatMulOp::MatMul)) || mm.inputs.len() != 2 {
        return None;
    }
    let w = const_of(g, mm.inputs[1]?)?;
    if w.rank() != 2 || g.outputs.contains(&mm.outputs[0]) {
        return None;
    }
    let n = w.shape()[1];
    let users = consumers(g, mm.outputs[0]);
    let [add_idx] = users.as_slice() else { return None };
    let add = &g.nodes[*add_idx];
    if !matches!(add.op, Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add))) {
        return None;
    }
    let other =
        if add.inputs[0] == Some(mm.outputs[0]) { add.inputs.get(1)?.as_ref()? } else { add.inputs[0].as_ref()? };
    let b = const_of(g, *other)?;
    if b.dtype() != w.dtype() || b.numel() != n || !(b.rank() == 1 || (b.rank() == 2 && b.shape()[0] == 1)) {
        return None;
    }
    // the bias must be 1-D for Linear; a [1, N] constant is viewed as [N]
    Some((*add_idx, *other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::shape::{Fact, Shape};
    use crate::{DType, Plan, Session, Tensor};
    use std::sync::Arc;

    fn graph(bias_shape: &[usize], extra_user: bool) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[2, 3])));
        g.inputs = vec![x];
        let w = g.add_const("w", Tensor::from_vec(&[3, 2], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap());
        let n: usize = bias_shape.iter().product();
        let b = g.add_const("b", Tensor::from_vec(bias_shape, (0..n).map(|i| i as f32 + 0.5).collect()).unwrap());
        let m = g.add_value("m", Fact::unknown());
        g.add_node("mm", MatMulOp::MatMul.into(), vec![Some(x), Some(w)], vec![m]);
        let y = g.add_value("y", Fact::unknown());
        g.add_node("add", ElementwiseOp::Binary(BinaryOp::Add).into(), vec![Some(m), Some(b)], vec![y]);
        g.outputs = vec![y];
        if extra_user {
            g.outputs.push(m);
        }
        g
    }

    fn run(g: &Graph) -> Vec<Tensor> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        Session::new(plan)
            .run(vec![Tensor::from_vec(&[2, 3], vec![1.0f32, 0.0, -1.0, 2.0, 1.0, 0.5]).unwrap()])
            .unwrap()
    }

    #[test]
    fn matmul_add_becomes_linear_with_same_outputs() {
        let g = graph(&[2], false);
        let want = run(&g);
        let mut f = g.clone();
        assert_eq!(fuse_linear(&mut f), 1);
        assert_eq!(f.nodes.len(), 1);
        assert_eq!(f.nodes[0].op.name(), "Linear");
        assert_eq!(run(&f), want);
    }

    #[test]
    fn does_not_fire_when_the_product_is_used_elsewhere_or_bias_is_not_per_column() {
        let mut g = graph(&[2], true);
        assert_eq!(fuse_linear(&mut g), 0);
        let mut g = graph(&[2, 2], false);
        assert_eq!(fuse_linear(&mut g), 0);
    }
}
