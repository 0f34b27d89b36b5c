//! LayerNorm fusion: the decomposition exporters emit before opset 17,
//! `(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta` over the
//! last axis (with `Pow(d, 2)` or `Mul(d, d)`, `Div` by the root, optional affine
//! part), becomes one `LayerNormalization`.

use super::util::{const_of, consumers, scalar_const};
use crate::graph::{Graph, ValueId};
use crate::ops::elementwise::{BinaryOp, ElementwiseOp, UnaryOp};
use crate::ops::normalization::NormOp;
use crate::ops::reduce::{ReduceKind, ReduceOp};
use crate::ops::Op;

fn bin(g: &Graph, i: usize) -> Option<(BinaryOp, ValueId, ValueId)> {
    match &g.nodes[i].op {
        Op::Elementwise(ElementwiseOp::Binary(b)) => {
            Some((*b, g.nodes[i].inputs.first().copied()??, g.nodes[i].inputs.get(1).copied()??))
        }
        _ => None,
    }
}

/// The only consumer of `v` (and `v` is not a graph output).
fn sole(g: &Graph, v: ValueId) -> Option<usize> {
    match consumers(g, v).as_slice() {
        [i] if !g.outputs.contains(&v) => Some(*i),
        _ => None,
    }
}

/// Input of a ReduceMean over just the last axis (keepdims), if node `i` is one.
fn mean_last_axis(g: &Graph, i: usize) -> Option<ValueId> {
    let n = &g.nodes[i];
    let Op::Reduce(ReduceOp::Reduce { kind: ReduceKind::Mean, axes, keepdims: true, .. }) = &n.op else { return None };
    let x = n.inputs.first().copied()??;
    let axes = match axes {
        Some(a) => a.clone(),
        None => const_of(g, n.inputs.get(1).copied()??)?.to_i64_vec().ok()?,
    };
    let rank = g.values[x].fact.shape.as_ref().map(|s| s.rank() as i64);
    let last = axes.len() == 1 && (axes[0] == -1 || Some(axes[0] + 1) == rank);
    last.then_some(x)
}

/// A constant that broadcasts along the last axis only.
fn per_feature(g: &Graph, v: ValueId) -> bool {
    const_of(g, v).is_some_and(|t| t.rank() <= 1 || t.shape()[..t.rank() - 1].iter().all(|&d| d == 1))
}

struct Match {
    out_node: usize,
    x: ValueId,
    eps: f32,
    gamma: Option<ValueId>,
    beta: Option<ValueId>,
}

fn match_at(g: &Graph, r1: usize) -> Option<Match> {
    let x = mean_last_axis(g, r1)?;
    let mean = g.nodes[r1].outputs[0];
    let users = consumers(g, mean);
    let [sub] = users.as_slice() else { return None };
    let (op, a, b) = bin(g, *sub)?;
    if op != BinaryOp::Sub || a != x || b != mean {
        return None;
    }
    let d = g.nodes[*sub].outputs[0];
    let d_users = consumers(g, d);
    if d_users.len() != 2 && d_users.len() != 3 {
        return None;
    }
    // the square: Pow(d, 2) or Mul(d, d)
    let sq = *d_users.iter().find(|&&i| match bin(g, i) {
        Some((BinaryOp::Pow, a, e)) => a == d && scalar_const(g, e) == Some(2.0),
        Some((BinaryOp::Mul, a, b)) => a == d && b == d,
        _ => false,
    })?;
    let r2 = sole(g, g.nodes[sq].outputs[0])?;
    if mean_last_axis(g, r2)? != g.nodes[sq].outputs[0] {
        return None;
    }
    let add = sole(g, g.nodes[r2].outputs[0])?;
    let (op, a, e) = bin(g, add)?;
    let eps = if op == BinaryOp::Add && a == g.nodes[r2].outputs[0] { scalar_const(g, e)? } else { return None };
    let sqrt = sole(g, g.nodes[add].outputs[0])?;
    if !matches!(g.nodes[sqrt].op, Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Sqrt))) {
        return None;
    }
    let div = sole(g, g.nodes[sqrt].outputs[0])?;
    let (op, a, b) = bin(g, div)?;
    if op != BinaryOp::Div || a != d || b != g.nodes[sqrt].outputs[0] || !d_users.contains(&div) {
        return None;
    }
    let mut m = Match { out_node: div, x, eps: eps as f32, gamma: None, beta: None };
    let next = |g: &Graph, node: usize, want: BinaryOp| -> Option<(usize, ValueId)> {
        let out = g.nodes[node].outputs[0];
        let i = sole(g, out)?;
        let (op, a, b) = bin(g, i)?;
        let other = if a == out {
            b
        } else if b == out {
            a
        } else {
            return None;
        };
        (op == want && per_feature(g, other)).then_some((i, other))
    };
    if let Some((mul, gamma)) = next(g, m.out_node, BinaryOp::Mul) {
        m.out_node = mul;
        m.gamma = Some(gamma);
        if let Some((addb, beta)) = next(g, mul, BinaryOp::Add) {
            m.out_node = addb;
            m.beta = Some(beta);
        }
    }
    Some(m)
}

/// Rewrites every match into a `LayerNormalization` node; the bypassed nodes are
/// left for dead-node removal. Returns how many were fused.
pub fn fuse_layer_norm(g: &mut Graph) -> usize {
    let mut fused = 0;
    for i in 0..g.nodes.len() {
        if let Some(m) = match_at(g, i) {
            let n = &mut g.nodes[m.out_node];
            n.op = NormOp::LayerNorm { axis: -1, epsilon: m.eps }.into();
            n.inputs = vec![Some(m.x), m.gamma, m.beta];
            while n.inputs.last() == Some(&None) {
                n.inputs.pop();
            }
            n.name = format!("{}(layer_norm)", n.name);
            fused += 1;
        }
    }
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::passes::remove_dead_nodes;
    use crate::shape::{Fact, Shape};
    use crate::{DType, Plan, Session, Tensor};
    use std::sync::Arc;

    fn b(g: &mut Graph, op: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        let o = g.add_value(format!("v{}", g.values.len()), Fact::unknown());
        g.add_node(format!("n{}", g.nodes.len()), ElementwiseOp::Binary(op).into(), vec![Some(x), Some(y)], vec![o]);
        o
    }

    fn mean(g: &mut Graph, x: ValueId, axis: i64) -> ValueId {
        let o = g.add_value(format!("v{}", g.values.len()), Fact::unknown());
        let op = ReduceOp::Reduce {
            kind: ReduceKind::Mean,
            axes: Some(vec![axis]),
            keepdims: true,
            noop_with_empty_axes: false,
        };
        g.add_node(format!("n{}", g.nodes.len()), op.into(), vec![Some(x)], vec![o]);
        o
    }

    fn decomposed(axis: i64) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[2, 4])));
        g.inputs = vec![x];
        let m = mean(&mut g, x, axis);
        let d = b(&mut g, BinaryOp::Sub, x, m);
        let two = g.add_const("two", Tensor::scalar(2.0f32));
        let sq = b(&mut g, BinaryOp::Pow, d, two);
        let var = mean(&mut g, sq, axis);
        let eps = g.add_const("eps", Tensor::scalar(1e-5f32));
        let ve = b(&mut g, BinaryOp::Add, var, eps);
        let s = g.add_value("s", Fact::unknown());
        g.add_node("sqrt", ElementwiseOp::Unary(UnaryOp::Sqrt).into(), vec![Some(ve)], vec![s]);
        let n = b(&mut g, BinaryOp::Div, d, s);
        let gamma = g.add_const("gamma", Tensor::from_vec(&[4], vec![1.0f32, 2.0, 0.5, -1.0]).unwrap());
        let beta = g.add_const("beta", Tensor::from_vec(&[4], vec![0.0f32, 0.1, 0.2, 0.3]).unwrap());
        let y0 = b(&mut g, BinaryOp::Mul, n, gamma);
        let y = b(&mut g, BinaryOp::Add, y0, beta);
        g.outputs = vec![y];
        g
    }

    fn run(g: &Graph) -> Vec<f32> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let x = Tensor::from_vec(&[2, 4], vec![1.0f32, -2.0, 3.0, 0.5, 4.0, 4.5, -1.0, 2.0]).unwrap();
        Session::new(plan).run(vec![x]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn decomposed_layer_norm_becomes_one_op_with_same_values() {
        let g = decomposed(-1);
        let want = run(&g);
        let mut f = g.clone();
        assert_eq!(fuse_layer_norm(&mut f), 1);
        remove_dead_nodes(&mut f);
        assert_eq!(f.nodes.len(), 1);
        assert_eq!(f.nodes[0].op.name(), "LayerNormalization");
        for (a, b) in run(&f).iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn does_not_fire_over_another_axis() {
        let mut g = decomposed(0);
        assert_eq!(fuse_layer_norm(&mut g), 0);
    }
}
