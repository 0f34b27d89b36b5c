//! BatchNorm folding: `BatchNormalization(Conv(x, W, b))` with constant
//! statistics becomes `Conv(x, W', b')`, where per output channel
//! `k = scale / sqrt(var + eps)`, `W' = W * k`, `b' = (b - mean) * k + B`.
//! The same for a Gemm feeding a BatchNormalization over its columns.

use super::util::{const_of, consumers};
use crate::dtype::DType;
use crate::graph::Graph;
use crate::ops::conv::ConvOp;
use crate::ops::matmul::MatMulOp;
use crate::ops::normalization::NormOp;
use crate::ops::Op;
use crate::tensor::Tensor;

/// Per-channel (k, shift) of a constant BatchNormalization node, or None.
fn bn_affine(g: &Graph, bn: usize, channels: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    let n = &g.nodes[bn];
    let Op::Normalization(NormOp::BatchNorm { epsilon }) = n.op else { return None };
    let get = |i: usize| -> Option<Vec<f64>> {
        let t = const_of(g, n.inputs.get(i).copied()??)?;
        (t.numel() == channels && t.dtype() == DType::F32).then(|| t.to_f64_vec())
    };
    let (s, b, m, v) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let k: Vec<f64> = s.iter().zip(&v).map(|(s, v)| s / (v + epsilon as f64).sqrt()).collect();
    let shift: Vec<f32> = (0..channels).map(|c| (b[c] - m[c] * k[c]) as f32).collect();
    Some((k.iter().map(|&x| x as f32).collect(), shift))
}

/// Folds every foldable pair; returns how many.
pub fn fold_batch_norm(g: &mut Graph) -> usize {
    let mut folded = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some(bn) = try_fold(g, i) {
            let removed = g.nodes.remove(bn);
            g.nodes[i].outputs = removed.outputs;
            folded += 1;
        }
        i += 1;
    }
    folded
}

/// Rewrites producer `i`'s weights if its only consumer is a constant BatchNorm;
/// returns that BatchNorm's index (to be removed).
fn try_fold(g: &mut Graph, i: usize) -> Option<usize> {
    let node = &g.nodes[i];
    let out = node.outputs[0];
    let users = consumers(g, out);
    let [bn] = users.as_slice() else { return None };
    let bn = *bn;
    if g.outputs.contains(&out) || g.nodes[bn].inputs.first().copied().flatten() != Some(out) {
        return None;
    }
    let w = const_of(g, node.inputs.get(1).copied()??)?.clone();
    if w.dtype() != DType::F32 || w.rank() < 2 {
        return None;
    }
    // Output channels run along axis 0 of a Conv weight, and along N of a Gemm.
    let (channels, w_axis) = match &node.op {
        Op::Conv(ConvOp::Conv(_)) => (w.shape()[0], 0),
        Op::MatMul(MatMulOp::Gemm { alpha, beta, trans_a: _, trans_b })
            if *alpha == 1.0 && *beta == 1.0 && w.rank() == 2 =>
        {
            if *trans_b {
                (w.shape()[0], 0)
            } else {
                (w.shape()[1], 1)
            }
        }
        _ => return None,
    };
    let bias = match node.inputs.get(2).copied().flatten() {
        Some(b) => {
            let t = const_of(g, b)?;
            if t.numel() != channels || t.dtype() != DType::F32 {
                return None;
            }
            t.as_slice::<f32>().ok()?.to_vec()
        }
        None => vec![0.0; channels],
    };
    let (k, shift) = bn_affine(g, bn, channels)?;
    let wv = w.as_slice::<f32>().ok()?;
    let inner: usize = w.shape()[w_axis + 1..].iter().product();
    let scaled: Vec<f32> = wv.iter().enumerate().map(|(j, &x)| x * k[(j / inner) % channels]).collect();
    let new_b: Vec<f32> = (0..channels).map(|c| bias[c] * k[c] + shift[c]).collect();
    let name = g.nodes[i].name.clone();
    let wid = g.add_const(format!("{name}.w_bn"), Tensor::from_vec(w.shape(), scaled).ok()?);
    let bid = g.add_const(format!("{name}.b_bn"), Tensor::from_vec(&[channels], new_b).ok()?);
    let n = &mut g.nodes[i];
    n.inputs.truncate(1);
    n.inputs.extend([Some(wid), Some(bid)]);
    n.name = format!("{name}+bn");
    Some(bn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Bindings;
    use crate::ops::conv::{AutoPad, ConvAttrs};
    use crate::shape::{Fact, Shape};
    use crate::{Plan, Session};
    use std::sync::Arc;

    fn conv_bn(extra_user: bool) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, 2, 5])));
        g.inputs = vec![x];
        let w =
            g.add_const("w", Tensor::from_vec(&[3, 2, 3], (0..18).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap());
        let b = g.add_const("b", Tensor::from_vec(&[3], vec![0.1f32, -0.2, 0.3]).unwrap());
        let c = g.add_value("c", Fact::unknown());
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![],
            pads: vec![1, 1],
            strides: vec![],
        };
        g.add_node("conv", ConvOp::Conv(attrs).into(), vec![Some(x), Some(w), Some(b)], vec![c]);
        let t = |g: &mut Graph, n: &str, v: [f32; 3]| g.add_const(n, Tensor::from_vec(&[3], v.to_vec()).unwrap());
        let (s, bb, m, v) = (
            t(&mut g, "s", [1.5, 0.5, 2.0]),
            t(&mut g, "bb", [0.0, 1.0, -1.0]),
            t(&mut g, "m", [0.2, -0.1, 0.0]),
            t(&mut g, "v", [1.0, 4.0, 0.25]),
        );
        let y = g.add_value("y", Fact::unknown());
        g.add_node(
            "bn",
            NormOp::BatchNorm { epsilon: 1e-5 }.into(),
            vec![Some(c), Some(s), Some(bb), Some(m), Some(v)],
            vec![y],
        );
        g.outputs = vec![y];
        if extra_user {
            g.outputs.push(c);
        }
        g
    }

    fn run(g: &Graph) -> Vec<f32> {
        let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
        let x = Tensor::from_vec(&[1, 2, 5], (0..10).map(|i| i as f32 * 0.3 - 1.0).collect()).unwrap();
        Session::new(plan).run(vec![x]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn batch_norm_folds_into_conv_with_same_values() {
        let g = conv_bn(false);
        let want = run(&g);
        let mut f = g.clone();
        assert_eq!(fold_batch_norm(&mut f), 1);
        assert_eq!(f.nodes.len(), 1);
        for (a, b) in run(&f).iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn does_not_fold_when_the_conv_output_is_used_elsewhere() {
        let mut g = conv_bn(true);
        assert_eq!(fold_batch_norm(&mut g), 0);
    }
}
