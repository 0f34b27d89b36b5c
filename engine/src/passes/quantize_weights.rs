//! Weight quantization for the `.floe` file: constant f32 weights of MatMul, Gemm,
//! Linear and Conv are stored as f16, or as int8 with one symmetric scale per
//! output channel, followed by a Cast / DequantizeLinear node. A plan folds those
//! nodes at plan time (weights stay compact in the file and in the page cache;
//! the load itself never copies).

use crate::dtype::DType;
use crate::format::{Quantization, QuantizedTensor};
use crate::graph::{Graph, Node, ValueId};
use crate::ops::layout::LayoutOp;
use crate::ops::matmul::MatMulOp;
use crate::ops::quantize::QuantOp;
use crate::ops::Op;
use crate::tensor::Tensor;
use crate::Result;

/// Weights smaller than this stay f32 (biases, norms: no size to win, precision to lose).
pub const MIN_ELEMENTS: usize = 256;

/// The axis of a weight input that indexes output channels, for ops whose weights
/// we quantize; `None` for other uses.
fn weight_axis(op: &Op, input: usize, rank: usize) -> Option<usize> {
    if input != 1 || rank < 2 {
        return None;
    }
    match op {
        Op::MatMul(MatMulOp::MatMul | MatMulOp::Linear { .. }) => Some(rank - 1),
        Op::MatMul(MatMulOp::Gemm { trans_b, .. }) => Some(if *trans_b { 0 } else { 1 }),
        Op::Conv(_) if op.name() == "Conv" => Some(0),
        Op::ChannelsLast(c) => weight_axis(&c.inner, input, rank),
        _ => None,
    }
}

/// Symmetric int8 per slice along `axis`: returns (q, scales).
pub fn quantize_int8(w: &[f32], shape: &[usize], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let chan = |i: usize| (i / inner) % c;
    let mut maxabs = vec![0f32; c];
    for (i, &v) in w.iter().enumerate() {
        let m = &mut maxabs[chan(i)];
        *m = m.max(v.abs());
    }
    let scales: Vec<f32> = maxabs.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[chan(i)]).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Max absolute and relative (to max |w|) error between `w` and `back`.
fn errors(w: &[f32], back: &[f32]) -> (f32, f32) {
    let max_abs = w.iter().zip(back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let scale = w.iter().map(|v| v.abs()).fold(0.0, f32::max);
    (max_abs, if scale > 0.0 { max_abs / scale } else { 0.0 })
}

/// Rewrites eligible weights; returns what was quantized and the error of each.
pub fn quantize_weights(g: &mut Graph, mode: Quantization) -> Result<Vec<QuantizedTensor>> {
    if mode == Quantization::None {
        return Ok(Vec::new());
    }
    let mut chosen: Vec<(ValueId, usize)> = Vec::new();
    for n in &g.nodes {
        for (i, v) in n.inputs.iter().enumerate() {
            let Some(v) = *v else { continue };
            let Some(t) = g.values[v].konst.as_ref() else { continue };
            if t.dtype() != DType::F32 || t.numel() < MIN_ELEMENTS || chosen.iter().any(|&(c, _)| c == v) {
                continue;
            }
            if let Some(axis) = weight_axis(&n.op, i, t.rank()) {
                chosen.push((v, axis));
            }
        }
    }
    let mut report = Vec::new();
    let mut new_nodes: Vec<Node> = Vec::new();
    for (v, axis) in chosen {
        let w = g.values[v].konst.take().expect("chosen values are constants");
        let name = g.values[v].name.clone();
        let wf = w.as_slice::<f32>()?;
        match mode {
            Quantization::F16 => {
                let h = w.cast(DType::F16)?;
                let back = h.cast(DType::F32)?;
                let (max_abs_error, rel_error) = errors(wf, back.as_slice::<f32>()?);
                let hid = g.add_const(format!("{name}.f16"), h);
                new_nodes.push(Node {
                    name: format!("{name}.widen"),
                    op: LayoutOp::Cast { to: DType::F32 }.into(),
                    inputs: vec![Some(hid)],
                    outputs: vec![v],
                });
                report.push(QuantizedTensor { name, kind: mode, axis: None, max_abs_error, rel_error });
            }
            Quantization::Int8 => {
                let (q, scales) = quantize_int8(wf, w.shape(), axis);
                let inner: usize = w.shape()[axis + 1..].iter().product();
                let c = w.shape()[axis];
                let back: Vec<f32> = q.iter().enumerate().map(|(i, &x)| x as f32 * scales[(i / inner) % c]).collect();
                let (max_abs_error, rel_error) = errors(wf, &back);
                let qid = g.add_const(format!("{name}.int8"), Tensor::from_vec(w.shape(), q)?);
                let sid = g.add_const(format!("{name}.scale"), Tensor::from_vec(&[c], scales)?);
                new_nodes.push(Node {
                    name: format!("{name}.dequantize"),
                    op: QuantOp::Dequantize { axis: axis as i64, block_size: 0, output_dtype: None }.into(),
                    inputs: vec![Some(qid), Some(sid)],
                    outputs: vec![v],
                });
                report.push(QuantizedTensor { name, kind: mode, axis: Some(axis), max_abs_error, rel_error });
            }
            Quantization::None => unreachable!("returned above"),
        }
    }
    // Weight decoders read only constants: they go first, keeping topological order.
    new_nodes.append(&mut g.nodes);
    g.nodes = new_nodes;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_per_channel_error_is_within_half_a_step() {
        let shape = [4, 3];
        let w: Vec<f32> = (0..12).map(|i| ((i * 7) % 11) as f32 * 0.13 - 0.6).collect();
        let (q, s) = quantize_int8(&w, &shape, 1);
        assert_eq!(s.len(), 3);
        for (i, (&x, &qv)) in w.iter().zip(&q).enumerate() {
            let back = qv as f32 * s[i % 3];
            assert!((x - back).abs() <= s[i % 3] / 2.0 + 1e-7, "{x} vs {back}");
        }
    }
}
