//! Linear / Conv followed by an activation (Relu, Sigmoid, Tanh, Gelu, SiLU) ->
//! one op that applies the activation as its GEMM stores each tile, when the
//! product feeds only the activation, is not a model output, and is f32.

use super::util::consumers;
use crate::dtype::DType;
use crate::graph::Graph;
use crate::ops::conv::ConvOp;
use crate::ops::elementwise::ElementwiseOp;
use crate::ops::fused::FusedActivation;
use crate::ops::matmul::MatMulOp;
use crate::ops::Op;

/// Fuses every matching pair; returns how many.
pub fn fuse_activation(g: &mut Graph) -> usize {
    let mut fused = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some((act_idx, act)) = match_at(g, i) {
            let a = g.nodes.remove(act_idx);
            let n = &mut g.nodes[if act_idx < i { i - 1 } else { i }];
            n.op = match &n.op {
                Op::MatMul(MatMulOp::Linear { .. }) => MatMulOp::Linear { activation: act }.into(),
                Op::Conv(ConvOp::Conv(attrs)) => ConvOp::ConvAct { attrs: attrs.clone(), activation: act }.into(),
                _ => unreachable!("match_at accepts only these"),
            };
            n.outputs = a.outputs;
            n.name = format!("{}+{}", n.name, a.name);
            fused += 1;
            if act_idx < i {
                continue;
            }
        }
        i += 1;
    }
    fused
}

fn match_at(g: &Graph, i: usize) -> Option<(usize, FusedActivation)> {
    let n = &g.nodes[i];
    let fusable =
        matches!(n.op, Op::MatMul(MatMulOp::Linear { activation: FusedActivation::None }) | Op::Conv(ConvOp::Conv(_)));
    if !fusable || n.outputs.len() != 1 || g.outputs.contains(&n.outputs[0]) {
        return None;
    }
    if g.values[n.outputs[0]].fact.dtype != Some(DType::F32) {
        return None;
    }
    let users = consumers(g, n.outputs[0]);
    let [j] = users.as_slice() else { return None };
    match &g.nodes[*j].op {
        Op::Elementwise(ElementwiseOp::Unary(u)) => FusedActivation::from_unary(u).map(|a| (*j, a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::ops::conv::{AutoPad, ConvAttrs};
    use crate::ops::elementwise::UnaryOp;
    use crate::shape::{Fact, Shape};
    use crate::{Plan, Session, Tensor};
    use std::sync::Arc;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 9) as f32 / (1 << 23) as f32) - 0.5)
            .collect()
    }

    /// x [1, 4, 10] -> Conv(k3, pad 1) -> act -> Linear over the last axis -> act.
    fn graph(act: UnaryOp, product_is_output: bool) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, 4, 10])));
        g.inputs = vec![x];
        let w = g.add_const("w", Tensor::from_vec(&[6, 4, 3], values(72, 1)).unwrap());
        let b = g.add_const("b", Tensor::from_vec(&[6], values(6, 2)).unwrap());
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![3],
            pads: vec![1, 1],
            strides: vec![],
        };
        let c = g.add_value("c", Fact::unknown());
        g.add_node("conv", ConvOp::Conv(attrs).into(), vec![Some(x), Some(w), Some(b)], vec![c]);
        let ca = g.add_value("ca", Fact::unknown());
        g.add_node("act1", ElementwiseOp::Unary(act).into(), vec![Some(c)], vec![ca]);
        let lw = g.add_const("lw", Tensor::from_vec(&[10, 5], values(50, 3)).unwrap());
        let lb = g.add_const("lb", Tensor::from_vec(&[5], values(5, 4)).unwrap());
        let l = g.add_value("l", Fact::unknown());
        g.add_node(
            "lin",
            MatMulOp::Linear { activation: FusedActivation::None }.into(),
            vec![Some(ca), Some(lw), Some(lb)],
            vec![l],
        );
        let y = g.add_value("y", Fact::unknown());
        g.add_node("act2", ElementwiseOp::Unary(act).into(), vec![Some(l)], vec![y]);
        g.outputs = vec![y];
        if product_is_output {
            g.outputs.push(l);
        }
        crate::passes::infer_and_fold(&mut g, Default::default()).unwrap();
        g
    }

    fn run(g: &Graph) -> Vec<f32> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let out = Session::new(plan).run(vec![Tensor::from_vec(&[1, 4, 10], values(40, 9)).unwrap()]).unwrap();
        out[0].as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn every_fusable_activation_folds_into_conv_and_linear_with_the_same_outputs() {
        for act in [
            UnaryOp::Relu,
            UnaryOp::Sigmoid,
            UnaryOp::Tanh,
            UnaryOp::Gelu { tanh_approx: false },
            UnaryOp::Swish { alpha: 1.0 },
        ] {
            let g = graph(act, false);
            let want = run(&g);
            let mut f = g.clone();
            assert_eq!(fuse_activation(&mut f), 2, "{act:?}");
            assert_eq!(f.nodes.len(), 2);
            let got = run(&f);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{act:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn does_not_fire_for_other_activations_or_a_product_used_elsewhere() {
        let mut g = graph(UnaryOp::Gelu { tanh_approx: true }, false);
        assert_eq!(fuse_activation(&mut g), 0);
        let mut g = graph(UnaryOp::Relu, true);
        assert_eq!(fuse_activation(&mut g), 1, "only the conv's activation fuses; the Linear's product is an output");
        assert!(g.nodes.iter().any(|n| n.op.name() == "Relu"));
    }
}
