//! GELU fusion: the erf form exporters emit before opset 20,
//! `x * 0.5 * (1 + erf(x / sqrt(2)))` in its usual association orders (and with
//! `x * (1/sqrt(2))` for the division), becomes one `Gelu` op.

use super::util::{consumers, scalar_const};
use crate::graph::{Graph, ValueId};
use crate::ops::elementwise::{BinaryOp, ElementwiseOp, UnaryOp};
use crate::ops::Op;

fn is_bin(op: &Op, b: BinaryOp) -> bool {
    matches!(op, Op::Elementwise(ElementwiseOp::Binary(x)) if *x == b)
}

/// The other input of a binary node, given one of them.
fn other(g: &Graph, node: usize, v: ValueId) -> Option<ValueId> {
    let n = &g.nodes[node];
    match (n.inputs.first().copied().flatten(), n.inputs.get(1).copied().flatten()) {
        (Some(a), Some(b)) if a == v => Some(b),
        (Some(a), Some(b)) if b == v => Some(a),
        _ => None,
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-4 * b.abs().max(1.0))
}

/// The single consumer of `v` if it is a binary `b`.
fn only_user(g: &Graph, v: ValueId, b: BinaryOp) -> Option<usize> {
    match consumers(g, v).as_slice() {
        [i] if is_bin(&g.nodes[*i].op, b) && !g.outputs.contains(&v) => Some(*i),
        _ => None,
    }
}

/// Node index of the GELU output and `x`, for the Erf at `ie`.
fn match_at(g: &Graph, ie: usize) -> Option<(usize, ValueId)> {
    let erf = &g.nodes[ie];
    if !matches!(erf.op, Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Erf))) {
        return None;
    }
    let d = erf.inputs.first().copied().flatten()?;
    let div = g.nodes.iter().position(|n| n.outputs.contains(&d))?;
    let dn = &g.nodes[div];
    let (x, c) = (dn.inputs.first().copied().flatten()?, dn.inputs.get(1).copied().flatten()?);
    let ok = (is_bin(&dn.op, BinaryOp::Div) && close(scalar_const(g, c), std::f64::consts::SQRT_2))
        || (is_bin(&dn.op, BinaryOp::Mul) && close(scalar_const(g, c), std::f64::consts::FRAC_1_SQRT_2));
    if !ok {
        return None;
    }
    let add = only_user(g, erf.outputs[0], BinaryOp::Add)?;
    if !close(scalar_const(g, other(g, add, erf.outputs[0])?), 1.0) {
        return None;
    }
    let a = g.nodes[add].outputs[0];
    let m1 = only_user(g, a, BinaryOp::Mul)?;
    let f = other(g, m1, a)?;
    let m1_out = g.nodes[m1].outputs[0];
    if f == x {
        // (x * (1 + erf)) * 0.5
        let m2 = only_user(g, m1_out, BinaryOp::Mul)
            .or_else(|| consumers(g, m1_out).first().copied().filter(|&i| is_bin(&g.nodes[i].op, BinaryOp::Mul)))?;
        return close(scalar_const(g, other(g, m2, m1_out)?), 0.5).then_some((m2, x));
    }
    if close(scalar_const(g, f), 0.5) {
        // x * ((1 + erf) * 0.5)
        let m2 = consumers(g, m1_out).into_iter().find(|&i| is_bin(&g.nodes[i].op, BinaryOp::Mul))?;
        return (other(g, m2, m1_out)? == x).then_some((m2, x));
    }
    // (x * 0.5) * (1 + erf)
    let hn = g.nodes.iter().position(|n| n.outputs.contains(&f))?;
    let hv = g.nodes[hn].inputs.iter().flatten().copied().collect::<Vec<_>>();
    let half_of_x =
        is_bin(&g.nodes[hn].op, BinaryOp::Mul) && hv.contains(&x) && hv.iter().any(|&v| close(scalar_const(g, v), 0.5));
    half_of_x.then_some((m1, x))
}

/// Rewrites every match into a `Gelu` node; the bypassed nodes are left for
/// dead-node removal. Returns how many were fused.
pub fn fuse_gelu(g: &mut Graph) -> usize {
    let mut fused = 0;
    for ie in 0..g.nodes.len() {
        if let Some((out_node, x)) = match_at(g, ie) {
            let n = &mut g.nodes[out_node];
            n.op = ElementwiseOp::Unary(UnaryOp::Gelu { tanh_approx: false }).into();
            n.inputs = vec![Some(x)];
            n.name = format!("{}(gelu)", n.name);
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

    fn bin(g: &mut Graph, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        let o = g.add_value(format!("v{}", g.values.len()), Fact::unknown());
        g.add_node(format!("n{}", g.nodes.len()), ElementwiseOp::Binary(b).into(), vec![Some(x), Some(y)], vec![o]);
        o
    }

    fn gelu_graph(divisor: f32) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[5])));
        g.inputs = vec![x];
        let s = g.add_const("s", Tensor::scalar(divisor));
        let one = g.add_const("one", Tensor::scalar(1.0f32));
        let half = g.add_const("half", Tensor::scalar(0.5f32));
        let d = bin(&mut g, BinaryOp::Div, x, s);
        let e = g.add_value("e", Fact::unknown());
        g.add_node("erf", ElementwiseOp::Unary(UnaryOp::Erf).into(), vec![Some(d)], vec![e]);
        let a = bin(&mut g, BinaryOp::Add, e, one);
        let m = bin(&mut g, BinaryOp::Mul, x, a);
        let y = bin(&mut g, BinaryOp::Mul, m, half);
        g.outputs = vec![y];
        g
    }

    fn run(g: &Graph) -> Vec<f32> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let x = Tensor::from_vec(&[5], vec![-2.0f32, -0.5, 0.0, 0.7, 3.0]).unwrap();
        Session::new(plan).run(vec![x]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn erf_form_becomes_gelu_with_same_values() {
        let g = gelu_graph(std::f32::consts::SQRT_2);
        let want = run(&g);
        let mut f = g.clone();
        assert_eq!(fuse_gelu(&mut f), 1);
        remove_dead_nodes(&mut f);
        assert_eq!(f.nodes.len(), 1);
        for (a, b) in run(&f).iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn does_not_fire_for_another_divisor() {
        let mut g = gelu_graph(2.0);
        assert_eq!(fuse_gelu(&mut g), 0);
    }
}
