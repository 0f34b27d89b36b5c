//! Katharopoulos linear-attention fusion: the plain-op form PyTorch code exports for
//! `φ(Q) (Σ φ(K) Vᵀ) / (φ(Q)·Σ φ(K) + eps)` becomes one
//! [`LinearAttentionOp::Normalized`] node, which runs in `O(L)` (recurrent or
//! chunked) instead of materialising every prefix sum, and carries its `(S, z)`
//! state as explicit inputs/outputs for streaming.
//!
//! ```text
//! φ(x) = Add(Elu(x), 1)                                  (else φ = identity)
//! causal:     num = Einsum("nlhd,nlhdm->nlhm", φq, CumSum(Einsum("nshd,nshm->nshdm", φk, v), axis=1))
//!             den = Einsum("nlhd,nlhd->nlh", φq, CumSum(φk, axis=1))
//! non-causal: num = Einsum("nlhd,nhmd->nlhm", φq, Einsum("nshd,nshm->nhmd", φk, v))
//!             den = Einsum("nlhd,nhd->nlh", φq, ReduceSum(φk, axes=[1], keepdims=0))
//! out = Div(num, Unsqueeze(Add(den, eps), -1))   or   Mul(num, Reciprocal(Unsqueeze(...)))
//! ```
//!
//! Einsum equations are compared up to renaming of their letters (`nshd` and `abcd`
//! are the same); the non-causal `KV` may also be laid out `nhdm`. Every
//! intermediate must feed only the next step, and φ(Q), φ(K) must be the same
//! values in the numerator and the denominator; otherwise nothing fires. The
//! Transpose+MatMul spelling of the same products is not matched yet.
//!
//! Reference: ALGORITHMS.md §2.1-2.2 and §4.2; fast-transformers
//! `attention/{linear,causal_linear}_attention.py`.

use super::util::{consumers, scalar_const};
use crate::graph::{Graph, ValueId};
use crate::ops::einsum::EinsumOp;
use crate::ops::elementwise::{BinaryOp, ElementwiseOp, UnaryOp};
use crate::ops::layout::LayoutOp;
use crate::ops::linear_attention::{FeatureMap, LinearAttentionOp};
use crate::ops::reduce::{ReduceKind, ReduceOp};
use crate::ops::Op;
use crate::shape::{Fact, Shape};

/// One recognised block.
struct Match {
    out_node: usize,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    causal: bool,
    eps: f32,
    feature_map: FeatureMap,
}

/// Rewrites every normalised linear-attention block into one node. Returns how many
/// were fused.
pub fn fuse_linear_attention(g: &mut Graph) -> usize {
    let mut fused = 0;
    for i in 0..g.nodes.len() {
        let Some(m) = match_at(g, i) else { continue };
        let dims = |v: ValueId| g.values[v].fact.shape.as_ref().map(|s| s.0.clone());
        let dtype = g.values[m.q].fact.dtype;
        let name = g.nodes[i].name.clone();
        let mut outputs = vec![g.nodes[i].outputs[0]];
        if m.causal {
            // present (S, z): [N, H, D, M] and [N, H, D], for a streaming executor to thread.
            let (kv, z) = match (dims(m.q), dims(m.v)) {
                (Some(q), Some(v)) => (
                    Some(Shape(vec![q[0].clone(), q[2].clone(), q[3].clone(), v[3].clone()])),
                    Some(Shape(vec![q[0].clone(), q[2].clone(), q[3].clone()])),
                ),
                _ => (None, None),
            };
            outputs.push(g.add_value(format!("{name}.present_kv"), Fact { dtype, shape: kv }));
            outputs.push(g.add_value(format!("{name}.present_z"), Fact { dtype, shape: z }));
        }
        let n = &mut g.nodes[m.out_node];
        n.op = LinearAttentionOp::Normalized { causal: m.causal, eps: m.eps, feature_map: m.feature_map }.into();
        n.inputs = vec![Some(m.q), Some(m.k), Some(m.v)];
        n.outputs = outputs;
        n.name = format!("{name}(linear_attention)");
        fused += 1;
    }
    fused
}

fn producer(g: &Graph, v: ValueId) -> Option<usize> {
    g.nodes.iter().position(|n| n.outputs.contains(&v))
}

/// The producer of `v`, when `v` is read only by one node and is not a graph output.
fn private_producer(g: &Graph, v: ValueId) -> Option<usize> {
    (consumers(g, v).len() == 1 && !g.outputs.contains(&v)).then_some(())?;
    producer(g, v)
}

fn input(g: &Graph, node: usize, i: usize) -> Option<ValueId> {
    g.nodes[node].inputs.get(i).copied().flatten()
}

fn rank(g: &Graph, v: ValueId) -> Option<usize> {
    g.values.get(v)?.fact.shape.as_ref().map(|s| s.rank())
}

fn binary(g: &Graph, node: usize) -> Option<(BinaryOp, ValueId, ValueId)> {
    match &g.nodes[node].op {
        Op::Elementwise(ElementwiseOp::Binary(b)) => Some((*b, input(g, node, 0)?, input(g, node, 1)?)),
        _ => None,
    }
}

/// An equation with its letters renamed in order of first appearance.
fn canonical(eq: &str) -> String {
    let mut map = std::collections::HashMap::new();
    eq.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            if c.is_ascii_alphabetic() {
                let n = map.len();
                *map.entry(c).or_insert((b'a' + n as u8) as char)
            } else {
                c
            }
        })
        .collect()
}

/// `Einsum(a, b)` with a canonical equation among `eqs`: (index in `eqs`, a, b).
fn einsum2(g: &Graph, node: usize, eqs: &[&str]) -> Option<(usize, ValueId, ValueId)> {
    let Op::Einsum(EinsumOp::Einsum { equation }) = &g.nodes[node].op else { return None };
    let which = eqs.iter().position(|e| *e == canonical(equation))?;
    (g.nodes[node].inputs.len() == 2).then_some(())?;
    Some((which, input(g, node, 0)?, input(g, node, 1)?))
}

/// An integer constant's values.
fn ints(g: &Graph, v: ValueId) -> Option<Vec<i64>> {
    g.values.get(v)?.konst.as_ref()?.to_i64_vec().ok()
}

/// `CumSum(x, axis = 1)` (inclusive, forward) over a rank-`r` value: x.
fn cumsum_seq(g: &Graph, node: usize) -> Option<ValueId> {
    let Op::Reduce(ReduceOp::CumSum { exclusive: false, reverse: false }) = g.nodes[node].op else { return None };
    let x = input(g, node, 0)?;
    let axis = *ints(g, input(g, node, 1)?)?.first()?;
    let r = rank(g, x)? as i64;
    (axis == 1 || axis == 1 - r).then_some(x)
}

/// `ReduceSum(x, axes = [1], keepdims = 0)` over a rank-4 value: x.
fn sum_seq(g: &Graph, node: usize) -> Option<ValueId> {
    let Op::Reduce(ReduceOp::Reduce { kind: ReduceKind::Sum, axes, keepdims: false, .. }) = &g.nodes[node].op else {
        return None;
    };
    let x = input(g, node, 0)?;
    let axes = match axes {
        Some(a) => a.clone(),
        None => ints(g, input(g, node, 1)?)?,
    };
    (axes == [1] || axes == [-3]).then_some(x)
}

/// `Unsqueeze(x, [-1])` adding the last axis of a rank-4 result: x.
fn unsqueeze_last(g: &Graph, node: usize) -> Option<ValueId> {
    let Op::Layout(LayoutOp::Unsqueeze { axes }) = &g.nodes[node].op else { return None };
    let axes = match axes {
        Some(a) => a.clone(),
        None => ints(g, input(g, node, 1)?)?,
    };
    (axes == [-1] || axes == [3]).then_some(input(g, node, 0)?)
}

/// `Add(Elu(x, alpha = 1), 1)`: x.
fn elu_plus_one(g: &Graph, v: ValueId) -> Option<ValueId> {
    let add = producer(g, v)?;
    let (BinaryOp::Add, a, b) = binary(g, add)? else { return None };
    let (e, one) = if scalar_const(g, b).is_some() { (a, b) } else { (b, a) };
    (scalar_const(g, one)? == 1.0).then_some(())?;
    let elu = producer(g, e)?;
    match g.nodes[elu].op {
        Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Elu { alpha: 1.0 })) => input(g, elu, 0),
        _ => None,
    }
}

/// The denominator `Unsqueeze(Add(Einsum(φq, Σφk), eps))` above `v` (each step
/// private): (φq, φk, causal, eps).
fn denominator(g: &Graph, v: ValueId) -> Option<(ValueId, ValueId, bool, f32)> {
    let den = unsqueeze_last(g, private_producer(g, v)?)?;
    let (BinaryOp::Add, a, b) = binary(g, private_producer(g, den)?)? else { return None };
    let (dot, eps) = match (scalar_const(g, a), scalar_const(g, b)) {
        (None, Some(e)) => (a, e),
        (Some(e), None) => (b, e),
        _ => return None,
    };
    let (which, fq, ksum) = einsum2(g, private_producer(g, dot)?, &["abcd,abcd->abc", "abcd,acd->abc"])?;
    let p = private_producer(g, ksum)?;
    let fk = if which == 0 { cumsum_seq(g, p)? } else { sum_seq(g, p)? };
    Some((fq, fk, which == 0, eps as f32))
}

/// The numerator above `v` (each step private): (φq, φk, v, causal).
fn numerator(g: &Graph, v: ValueId) -> Option<(ValueId, ValueId, ValueId, bool)> {
    // causal, non-causal with KV as nhmd, non-causal with KV as nhdm
    let (which, fq, kv) =
        einsum2(g, private_producer(g, v)?, &["abcd,abcde->abce", "abcd,aced->abce", "abcd,acde->abce"])?;
    let mut p = private_producer(g, kv)?;
    if which == 0 {
        p = private_producer(g, cumsum_seq(g, p)?)?;
    }
    let want = ["abcd,abce->abcde", "abcd,abce->aced", "abcd,abce->acde"][which];
    let (_, fk, val) = einsum2(g, p, &[want])?;
    Some((fq, fk, val, which == 0))
}

fn match_at(g: &Graph, i: usize) -> Option<Match> {
    let (op, a, b) = binary(g, i)?;
    let (num, den) = match op {
        BinaryOp::Div => (a, denominator(g, b)?),
        BinaryOp::Mul => {
            // One side is Reciprocal(den), read by this Mul alone.
            let recip = |x: ValueId| {
                let r = private_producer(g, x)?;
                if !matches!(g.nodes[r].op, Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Reciprocal))) {
                    return None;
                }
                denominator(g, input(g, r, 0)?)
            };
            match (recip(a), recip(b)) {
                (None, Some(d)) => (a, d),
                (Some(d), None) => (b, d),
                _ => return None,
            }
        }
        _ => return None,
    };
    let (fq, fk, causal, eps) = den;
    let (fq2, fk2, v, causal2) = numerator(g, num)?;
    if (fq, fk, causal) != (fq2, fk2, causal2) {
        return None;
    }
    if [fq, fk, v].iter().any(|&x| rank(g, x) != Some(4)) {
        return None;
    }
    let (feature_map, q, k) = match (elu_plus_one(g, fq), elu_plus_one(g, fk)) {
        (Some(q), Some(k)) => (FeatureMap::EluPlusOne, q, k),
        _ => (FeatureMap::Identity, fq, fk),
    };
    Some(Match { out_node: i, q, k, v, causal, eps, feature_map })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::exec::run_graph;
    use crate::ops::layout::tests::Rng;
    use crate::passes::{infer_and_fold, remove_dead_nodes, FoldOptions};
    use crate::Tensor;

    #[derive(Default)]
    struct B {
        g: Graph,
    }

    impl B {
        fn input(&mut self, name: &str, shape: &[usize]) -> ValueId {
            let v = self.g.add_value(name, Fact::new(DType::F32, Shape::fixed(shape)));
            self.g.inputs.push(v);
            v
        }
        fn k(&mut self, t: Tensor) -> ValueId {
            self.g.add_const(format!("c{}", self.g.values.len()), t)
        }
        fn op(&mut self, op: impl Into<Op>, ins: &[ValueId]) -> ValueId {
            let o = self.g.add_value(format!("v{}", self.g.values.len()), Fact::unknown());
            let name = format!("n{}", self.g.nodes.len());
            self.g.add_node(name, op.into(), ins.iter().map(|&i| Some(i)).collect(), vec![o]);
            o
        }
        fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
            self.op(ElementwiseOp::Binary(b), &[x, y])
        }
        fn einsum(&mut self, eq: &str, a: ValueId, b: ValueId) -> ValueId {
            self.op(EinsumOp::Einsum { equation: eq.into() }, &[a, b])
        }
        fn phi(&mut self, x: ValueId) -> ValueId {
            let e = self.op(ElementwiseOp::Unary(UnaryOp::Elu { alpha: 1.0 }), &[x]);
            let one = self.k(Tensor::scalar(1f32));
            self.bin(BinaryOp::Add, e, one)
        }
        fn cumsum(&mut self, x: ValueId) -> ValueId {
            let ax = self.k(Tensor::scalar(1i64));
            self.op(ReduceOp::CumSum { exclusive: false, reverse: false }, &[x, ax])
        }
        fn finish(mut self, outs: &[ValueId]) -> Graph {
            self.g.outputs = outs.to_vec();
            infer_and_fold(&mut self.g, FoldOptions::default()).unwrap();
            self.g
        }
    }

    /// The causal block as `linear_transformer.onnx` has it; `tweak` edits one step.
    fn causal(reciprocal: bool, tweak: &dyn Fn(&mut B, ValueId) -> ValueId) -> Graph {
        let mut b = B::default();
        let (q, k, v) = (b.input("q", &[1, 7, 2, 3]), b.input("k", &[1, 7, 2, 3]), b.input("v", &[1, 7, 2, 4]));
        let (fq, fk) = (b.phi(q), b.phi(k));
        let outer = b.einsum("nshd,nshm->nshdm", fk, v);
        let kv = b.cumsum(outer);
        let num = b.einsum("nlhd,nlhdm->nlhm", fq, kv);
        let ks = b.cumsum(fk);
        let den = b.einsum("nlhd,nlhd->nlh", fq, ks);
        let eps = b.k(Tensor::scalar(1e-6f32));
        let den = b.bin(BinaryOp::Add, den, eps);
        let den = tweak(&mut b, den);
        let ax = b.k(Tensor::from_slice(&[1], &[-1i64]).unwrap());
        let den = b.op(LayoutOp::Unsqueeze { axes: None }, &[den, ax]);
        let y = if reciprocal {
            let r = b.op(ElementwiseOp::Unary(UnaryOp::Reciprocal), &[den]);
            b.bin(BinaryOp::Mul, num, r)
        } else {
            b.bin(BinaryOp::Div, num, den)
        };
        b.finish(&[y])
    }

    fn non_causal() -> Graph {
        let mut b = B::default();
        let (q, k, v) = (b.input("q", &[2, 5, 2, 3]), b.input("k", &[2, 6, 2, 3]), b.input("v", &[2, 6, 2, 4]));
        let (fq, fk) = (b.phi(q), b.phi(k));
        let kv = b.einsum("nshd,nshm->nhmd", fk, v);
        let num = b.einsum("nlhd,nhmd->nlhm", fq, kv);
        let ax = b.k(Tensor::from_slice(&[1], &[1i64]).unwrap());
        let ks = b.op(
            ReduceOp::Reduce { kind: ReduceKind::Sum, axes: None, keepdims: false, noop_with_empty_axes: false },
            &[fk, ax],
        );
        let den = b.einsum("nlhd,nhd->nlh", fq, ks);
        let eps = b.k(Tensor::scalar(1e-6f32));
        let den = b.bin(BinaryOp::Add, eps, den);
        let ax = b.k(Tensor::from_slice(&[1], &[-1i64]).unwrap());
        let den = b.op(LayoutOp::Unsqueeze { axes: None }, &[den, ax]);
        let y = b.bin(BinaryOp::Div, num, den);
        b.finish(&[y])
    }

    fn fuses_with_same_outputs(g: &Graph, causal: bool) {
        let mut f = g.clone();
        assert_eq!(fuse_linear_attention(&mut f), 1);
        remove_dead_nodes(&mut f);
        f.validate().unwrap();
        let names: Vec<&str> = f.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(names, ["NormalizedLinearAttention"], "{names:?}");
        let Op::LinearAttention(LinearAttentionOp::Normalized { causal: c, feature_map, .. }) = &f.nodes[0].op else {
            panic!()
        };
        assert_eq!((*c, *feature_map), (causal, FeatureMap::EluPlusOne));
        let mut rng = Rng(5);
        let inputs: Vec<Tensor> = g
            .inputs
            .iter()
            .map(|&i| rng.tensor(&g.values[i].fact.shape.as_ref().unwrap().as_fixed().unwrap()))
            .collect();
        let want = run_graph(g, inputs.clone()).unwrap();
        let got = run_graph(&f, inputs).unwrap();
        let (w, o) = (want[0].to_f64_vec(), got[0].to_f64_vec());
        let err = w.iter().zip(&o).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "max error {err}");
    }

    #[test]
    fn causal_block_with_div_becomes_one_op() {
        fuses_with_same_outputs(&causal(false, &|_, d| d), true);
    }

    #[test]
    fn causal_block_with_reciprocal_mul_becomes_one_op() {
        fuses_with_same_outputs(&causal(true, &|_, d| d), true);
    }

    #[test]
    fn non_causal_block_becomes_one_op() {
        fuses_with_same_outputs(&non_causal(), false);
    }

    #[test]
    fn does_not_fire_when_the_normaliser_is_changed() {
        // den * 2: not the Katharopoulos normaliser.
        let mut g = causal(false, &|b, d| {
            let two = b.k(Tensor::scalar(2f32));
            b.bin(BinaryOp::Mul, d, two)
        });
        assert_eq!(fuse_linear_attention(&mut g), 0);
    }

    #[test]
    fn does_not_fire_when_an_intermediate_is_read_elsewhere() {
        let mut g = causal(false, &|_, d| d);
        // Expose the denominator as a second graph output.
        let den = g.nodes.iter().find(|n| n.op.name() == "Unsqueeze").unwrap().inputs[0].unwrap();
        g.outputs.push(den);
        assert_eq!(fuse_linear_attention(&mut g), 0);
    }
}
