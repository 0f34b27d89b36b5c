//! Linear / MatMul / 1x1 Conv on spikes -> `SpikeLinear`: when input 0 of a `Linear`
//! (or a MatMul by a constant 2-D weight, or a 1x1 stride-1 unpadded ungrouped Conv
//! by a constant weight) is output 0 of a `floe::LIF`, its values are 0 or 1, and
//! the product is the sum of the weight rows whose input fired
//! (ALGORITHMS.md 3.5). The node keeps its inputs, outputs and fused activation and
//! runs the accumulate-only kernel of `ops::spike_linear`.
//!
//! Pattern: `LIF(..)[0] -> Linear{act}(s, W const [K, N], b?)`,
//! `LIF(..)[0] -> MatMul(s, W const [K, N])` or
//! `LIF(..)[0] -> Conv{act}(s, W const [N, K, 1...], b?)`, f32 weights.

use super::util::const_of;
use crate::graph::Graph;
use crate::ops::conv::{AutoPad, ConvAttrs, ConvOp};
use crate::ops::fused::FusedActivation;
use crate::ops::matmul::MatMulOp;
use crate::ops::spike_linear::SpikeLinearOp;
use crate::ops::Op;
use crate::DType;

/// Rewrites every matching node; returns how many.
pub fn spike_accumulate(g: &mut Graph) -> usize {
    let mut n = 0;
    for i in 0..g.nodes.len() {
        if let Some((activation, channels_first)) = match_at(g, i) {
            g.nodes[i].op = SpikeLinearOp { activation, channels_first }.into();
            n += 1;
        }
    }
    n
}

/// True for a Conv that is a per-position matrix product: 1x1 kernel, stride 1, no
/// padding, one group.
fn is_pointwise(a: &ConvAttrs) -> bool {
    matches!(a.auto_pad, AutoPad::NotSet | AutoPad::Valid)
        && a.group <= 1
        && a.kernel_shape.iter().all(|&k| k == 1)
        && a.strides.iter().all(|&s| s == 1)
        && a.pads.iter().all(|&p| p == 0)
}

/// The activation and layout (channels first for a Conv) of node `i` if it is a
/// Linear / MatMul / 1x1 Conv fed by LIF spikes.
fn match_at(g: &Graph, i: usize) -> Option<(FusedActivation, bool)> {
    let node = &g.nodes[i];
    let (activation, conv) = match &node.op {
        Op::MatMul(MatMulOp::Linear { activation }) => (*activation, false),
        Op::MatMul(MatMulOp::MatMul) if node.inputs.len() == 2 => (FusedActivation::None, false),
        Op::Conv(ConvOp::Conv(a)) if is_pointwise(a) => (FusedActivation::None, true),
        Op::Conv(ConvOp::ConvAct { attrs, activation }) if is_pointwise(attrs) => (*activation, true),
        _ => return None,
    };
    let x = node.inputs.first().copied().flatten()?;
    let w = const_of(g, node.inputs.get(1).copied().flatten()?)?;
    let shape_ok = if conv { w.rank() >= 3 && w.shape()[2..].iter().all(|&d| d == 1) } else { w.rank() == 2 };
    if !shape_ok || w.dtype() != DType::F32 {
        return None;
    }
    let from_lif = g.nodes.iter().any(|p| matches!(p.op, Op::Lif(_)) && p.outputs.first() == Some(&x));
    from_lif.then_some((activation, conv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::ops::conv::{AutoPad, ConvAttrs, ConvOp};
    use crate::ops::elementwise::{ElementwiseOp, UnaryOp};
    use crate::ops::lif::LifOp;
    use crate::shape::{Fact, Shape};
    use crate::{Plan, Session, Tensor};
    use std::sync::Arc;

    /// x [1, 6, 4] -> (LIF | Relu) -> Linear(W [4, 3], b) -> y
    fn graph(lif: bool) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, 6, 4])));
        g.inputs = vec![x];
        let s = g.add_value("s", Fact::unknown());
        let pre: Op = if lif { LifOp::default().into() } else { ElementwiseOp::Unary(UnaryOp::Relu).into() };
        g.add_node("pre", pre, vec![Some(x)], vec![s]);
        let w = g.add_const("w", Tensor::from_vec(&[4, 3], (0..12).map(|i| i as f32 * 0.5 - 2.0).collect()).unwrap());
        let b = g.add_const("b", Tensor::from_vec(&[3], vec![0.1f32, -0.2, 0.3]).unwrap());
        let y = g.add_value("y", Fact::unknown());
        g.add_node(
            "fc",
            MatMulOp::Linear { activation: Default::default() }.into(),
            vec![Some(s), Some(w), Some(b)],
            vec![y],
        );
        g.outputs = vec![y];
        g
    }

    fn run(g: &Graph) -> Vec<Tensor> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let x: Vec<f32> = (0..24).map(|i| ((i * 5) % 7) as f32 * 0.6).collect();
        Session::new(plan).run(vec![Tensor::from_vec(&[1, 6, 4], x).unwrap()]).unwrap()
    }

    #[test]
    fn linear_after_lif_becomes_spike_linear_with_same_outputs() {
        let g = graph(true);
        let want = run(&g);
        let mut f = g.clone();
        assert_eq!(spike_accumulate(&mut f), 1);
        assert_eq!(f.nodes[1].op.name(), "SpikeLinear");
        let got = run(&f);
        let err = got[0]
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(want[0].as_slice::<f32>().unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn pointwise_conv_after_lif_becomes_channels_first_spike_linear() {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, 4, 6])));
        g.inputs = vec![x];
        let s = g.add_value("s", Fact::unknown());
        g.add_node("lif", LifOp { time_axis: 2, ..LifOp::default() }.into(), vec![Some(x)], vec![s]);
        let w =
            g.add_const("w", Tensor::from_vec(&[3, 4, 1], (0..12).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap());
        let y = g.add_value("y", Fact::unknown());
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![1],
            pads: vec![0, 0],
            strides: vec![1],
        };
        g.add_node("conv", ConvOp::Conv(attrs.clone()).into(), vec![Some(s), Some(w)], vec![y]);
        g.outputs = vec![y];
        let want = run_shape(&g, &[1, 4, 6]);
        // a k=3 conv must not fire
        let mut k3 = g.clone();
        k3.nodes[1].op = ConvOp::Conv(ConvAttrs { kernel_shape: vec![3], pads: vec![1, 1], ..attrs }).into();
        assert_eq!(spike_accumulate(&mut k3), 0);
        assert_eq!(spike_accumulate(&mut g), 1);
        assert_eq!(g.nodes[1].op.name(), "SpikeLinear");
        let got = run_shape(&g, &[1, 4, 6]);
        let (a, b) = (got[0].as_slice::<f32>().unwrap(), want[0].as_slice::<f32>().unwrap());
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{a:?} vs {b:?}");
    }

    fn run_shape(g: &Graph, shape: &[usize]) -> Vec<Tensor> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 5) % 7) as f32 * 0.6).collect();
        Session::new(plan).run(vec![Tensor::from_vec(shape, x).unwrap()]).unwrap()
    }

    #[test]
    fn does_not_fire_when_the_producer_is_not_lif() {
        let mut g = graph(false);
        assert_eq!(spike_accumulate(&mut g), 0);
    }
}
