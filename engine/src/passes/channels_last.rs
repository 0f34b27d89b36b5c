//! Transpose `[N, T, F] -> [N, F, T]` feeding a chain of 1-D convolutions and
//! pools -> the same chain channels-last ([`ChannelsLastOp`]) on the untransposed
//! input, and one Transpose after the chain's last node.
//!
//! A speech model's frames arrive as `[N, T, F]` and are transposed for Conv1d.
//! Channels-last, each conv is one GEMM reading its windows in place (see
//! `ops/channels_last`), and the first Transpose disappears; after a global pool
//! the final Transpose moves a size-1 axis (a copy of `C` floats).
//!
//! It fires only on chains that pool over time (a MaxPool, AveragePool or global
//! pool): those models already cannot stream, while conv stacks without pooling
//! keep the channels-first form the streaming rewrite understands.

use super::util::{const_of, consumers};
use crate::dtype::DType;
use crate::graph::{Graph, Node, ValueId};
use crate::ops::channels_last::ChannelsLastOp;
use crate::ops::conv::{AutoPad, ConvOp};
use crate::ops::layout::LayoutOp;
use crate::ops::pool::{PoolKind, PoolOp};
use crate::ops::Op;
use crate::shape::Fact;

/// Rewrites every matching chain; returns how many nodes went channels-last.
pub fn channels_last(g: &mut Graph) -> usize {
    let mut moved = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some(chain) = chain_at(g, i) {
            moved += chain.len();
            rewrite(g, i, &chain);
        }
        i += 1;
    }
    moved
}

/// The one node reading `v` (as its data input 0 only), if `v` is not a graph output.
fn sole_reader(g: &Graph, v: ValueId) -> Option<usize> {
    if g.outputs.contains(&v) {
        return None;
    }
    let [j] = consumers(g, v)[..] else { return None };
    let n = &g.nodes[j];
    (n.inputs.first() == Some(&Some(v)) && n.inputs.iter().filter(|&&x| x == Some(v)).count() == 1).then_some(j)
}

/// Whether node `j` has a channels-last 1-D form: a single-group undilated Conv
/// with constant weights, a MaxPool / AveragePool without Indices, or a global
/// average / max pool.
fn convertible(g: &Graph, j: usize) -> bool {
    let n = &g.nodes[j];
    if n.outputs.len() != 1 {
        return false;
    }
    match &n.op {
        Op::Conv(ConvOp::Conv(a) | ConvOp::ConvAct { attrs: a, .. }) => {
            let w = n.inputs.get(1).copied().flatten().and_then(|w| const_of(g, w));
            let bias_const = n.inputs.get(2).copied().flatten().is_none_or(|b| const_of(g, b).is_some());
            w.is_some_and(|w| w.rank() == 3 && w.dtype() == DType::F32)
                && bias_const
                && a.group.max(1) == 1
                && a.dilations.iter().all(|&d| d == 1)
                && a.auto_pad == AutoPad::NotSet
        }
        Op::Pool(PoolOp::Pool { kind: PoolKind::Max | PoolKind::Average { .. }, attrs, .. }) => {
            attrs.kernel_shape.len() == 1
        }
        Op::Pool(PoolOp::GlobalAverage | PoolOp::GlobalMax) => true,
        _ => false,
    }
}

/// The chain starting after Transpose node `i`, if it matches.
fn chain_at(g: &Graph, i: usize) -> Option<Vec<usize>> {
    let n = &g.nodes[i];
    let Op::Layout(LayoutOp::Transpose { perm: Some(p) }) = &n.op else { return None };
    let x = n.inputs.first().copied().flatten()?;
    let fact = &g.values[x].fact;
    if p[..] != [0, 2, 1] || fact.dtype != Some(DType::F32) || fact.shape.as_ref().map(|s| s.rank()) != Some(3) {
        return None;
    }
    let mut chain = Vec::new();
    let mut v = n.outputs[0];
    while let Some(j) = sole_reader(g, v).filter(|&j| convertible(g, j)) {
        if chain.is_empty() && !matches!(g.nodes[j].op, Op::Conv(_)) {
            return None; // starts with a conv (else a transposed pool is no win)
        }
        chain.push(j);
        v = g.nodes[j].outputs[0];
        if matches!(g.nodes[j].op, Op::Pool(PoolOp::GlobalAverage | PoolOp::GlobalMax)) {
            break;
        }
    }
    chain.iter().any(|&j| matches!(g.nodes[j].op, Op::Pool(_))).then_some(chain)
}

fn rewrite(g: &mut Graph, t: usize, chain: &[usize]) {
    let last = *chain.last().expect("a chain is never empty");
    let original = g.nodes[last].outputs[0];
    let mut prev = g.nodes[t].inputs[0];
    for &j in chain {
        let out = g.nodes[j].outputs[0];
        let name = format!("{}.nwc", g.values[out].name);
        let nwc = g.add_value(name, Fact::unknown());
        let n = &mut g.nodes[j];
        n.op = Op::ChannelsLast(ChannelsLastOp::wrap(&n.op).expect("convertible ops wrap"));
        n.inputs[0] = prev;
        n.outputs[0] = nwc;
        prev = Some(nwc);
    }
    let name = format!("{}.to_ncw", g.nodes[last].name);
    let node = Node {
        name,
        op: LayoutOp::Transpose { perm: Some(vec![0, 2, 1]) }.into(),
        inputs: vec![prev],
        outputs: vec![original],
    };
    g.nodes.insert(last + 1, node);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::ops::conv::ConvAttrs;
    use crate::ops::elementwise::{ElementwiseOp, UnaryOp};
    use crate::shape::Shape;
    use crate::{Plan, Session, Tensor};
    use std::sync::Arc;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 9) as f32 / (1 << 23) as f32) - 0.5)
            .collect()
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Variant {
        /// x -> Transpose -> Conv -> Relu -> MaxPool -> Conv -> GlobalAveragePool
        Keyword,
        NoPool,
        TransposedIsOutput,
        GroupedConv,
    }

    fn graph(v: Variant) -> Graph {
        let (t, f, m) = (20, 8, 6);
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, t, f])));
        g.inputs = vec![x];
        let xt = g.add_value("xt", Fact::unknown());
        g.add_node("transpose", LayoutOp::Transpose { perm: Some(vec![0, 2, 1]) }.into(), vec![Some(x)], vec![xt]);
        let attrs = |group: usize| ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group,
            kernel_shape: vec![3],
            pads: vec![1, 1],
            strides: vec![],
        };
        let group = if v == Variant::GroupedConv { 2 } else { 1 };
        let w1 = g.add_const("w1", Tensor::from_vec(&[m, f / group, 3], values(m * f / group * 3, 1)).unwrap());
        let b1 = g.add_const("b1", Tensor::from_vec(&[m], values(m, 2)).unwrap());
        let c1 = g.add_value("c1", Fact::unknown());
        g.add_node("conv1", ConvOp::Conv(attrs(group)).into(), vec![Some(xt), Some(w1), Some(b1)], vec![c1]);
        let r1 = g.add_value("r1", Fact::unknown());
        g.add_node("relu1", ElementwiseOp::Unary(UnaryOp::Relu).into(), vec![Some(c1)], vec![r1]);
        let mut h = r1;
        if v != Variant::NoPool {
            let p = g.add_value("p1", Fact::unknown());
            let pool = PoolOp::Pool {
                kind: PoolKind::Max,
                attrs: ConvAttrs { kernel_shape: vec![2], pads: vec![], strides: vec![2], ..attrs(1) },
                ceil_mode: false,
                storage_order: 0,
            };
            g.add_node("pool1", pool.into(), vec![Some(h)], vec![p]);
            h = p;
        }
        let w2 = g.add_const("w2", Tensor::from_vec(&[m, m, 3], values(m * m * 3, 3)).unwrap());
        let c2 = g.add_value("c2", Fact::unknown());
        g.add_node("conv2", ConvOp::Conv(attrs(1)).into(), vec![Some(h), Some(w2)], vec![c2]);
        let y = if v == Variant::NoPool {
            c2
        } else {
            let y = g.add_value("y", Fact::unknown());
            g.add_node("gap", PoolOp::GlobalAverage.into(), vec![Some(c2)], vec![y]);
            y
        };
        g.outputs = vec![y];
        if v == Variant::TransposedIsOutput {
            g.outputs.push(xt);
        }
        crate::passes::infer_and_fold(&mut g, Default::default()).unwrap();
        crate::passes::fuse_activation(&mut g);
        g
    }

    fn run(g: &Graph) -> Vec<Tensor> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        Session::new(plan).run(vec![Tensor::from_vec(&[1, 20, 8], values(160, 9)).unwrap()]).unwrap()
    }

    fn channels_last_nodes(g: &Graph) -> usize {
        g.nodes.iter().filter(|n| matches!(n.op, Op::ChannelsLast(_))).count()
    }

    #[test]
    fn a_transposed_conv_pool_chain_goes_channels_last_with_the_same_outputs() {
        let g = graph(Variant::Keyword);
        let want = run(&g);
        let mut h = g.clone();
        assert_eq!(channels_last(&mut h), 4, "conv+relu, pool, conv, global pool");
        crate::passes::remove_dead_nodes(&mut h);
        crate::passes::infer_and_fold(&mut h, Default::default()).unwrap();
        assert_eq!(channels_last_nodes(&h), 4);
        let transposes = h.nodes.iter().filter(|n| n.op.name() == "Transpose").count();
        assert_eq!(transposes, 1, "the input Transpose is gone, one is added after the global pool");
        let plan = Plan::new(&h, &Bindings::default()).unwrap();
        assert!(plan.eval_nodes().is_empty(), "every node has a prepared kernel: {:?}", plan.eval_nodes());
        let got = run(&h);
        assert_eq!(got[0].shape(), [1, 6, 1]);
        for (a, b) in got[0].as_slice::<f32>().unwrap().iter().zip(want[0].as_slice::<f32>().unwrap()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn chains_that_do_not_pool_or_share_the_transpose_or_use_groups_stay_channels_first() {
        for v in [Variant::NoPool, Variant::TransposedIsOutput, Variant::GroupedConv] {
            let mut g = graph(v);
            assert_eq!(channels_last(&mut g), 0);
            assert_eq!(channels_last_nodes(&g), 0);
        }
    }
}
