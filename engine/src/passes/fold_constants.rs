//! Shape/type inference and constant folding in one forward sweep.
//!
//! A node whose inputs are all constants is evaluated once and replaced by its
//! outputs; `Shape`/`Size` of a value whose shape is fully known become constants.
//! Together this folds the Shape -> Gather -> Concat -> Reshape chains exporters
//! emit into constant shapes "where input shapes allow".

use super::shape_values::{ShapeValues, SymValue};
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::layout::LayoutOp;
use crate::ops::{EvalCtx, InferInput, Op};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;

/// Options for [`infer_and_fold`].
#[derive(Clone, Copy, Debug)]
pub struct FoldOptions {
    /// Do not fold constants larger than this many bytes (keeps files small when a
    /// folded result would be bigger than the graph that computes it).
    pub max_folded_bytes: usize,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions { max_folded_bytes: 64 << 20 }
    }
}

/// Infers facts for every node output and folds constant subgraphs. Returns the
/// number of nodes folded away.
pub fn infer_and_fold(g: &mut Graph, opts: FoldOptions) -> Result<usize> {
    let mut keep = Vec::with_capacity(g.nodes.len());
    let mut folded = 0;
    let nodes = std::mem::take(&mut g.nodes);
    let mut sym = ShapeValues::default();
    for node in nodes {
        let ins: Vec<Option<&crate::Value>> = node.inputs.iter().map(|i| i.map(|i| &g.values[i])).collect();
        let sym_ins: Vec<Option<SymValue>> =
            node.inputs.iter().map(|i| i.and_then(|i| sym.get(i, g.values[i].konst.as_ref()))).collect();
        let konsts: Vec<Option<&Tensor>> = ins.iter().map(|v| v.and_then(|v| v.konst.as_ref())).collect();
        let x_shape = ins.first().copied().flatten().and_then(|v| v.fact.shape.as_ref());
        let sym_out = ShapeValues::propagate(&node.op, &sym_ins, &konsts, x_shape);
        let all_const = ins.iter().all(|v| v.is_none_or(|v| v.konst.is_some())) && node.op.subgraphs().is_empty();
        // Shape and Size of fully known shapes fold without the input's value.
        let shape_value = match &node.op {
            Op::Layout(l @ (LayoutOp::Shape { .. } | LayoutOp::Size)) => ins
                .first()
                .copied()
                .flatten()
                .and_then(|v| v.fact.shape.as_ref())
                .and_then(|s| s.as_fixed())
                .and_then(|dims| l.shape_of_fixed(&dims)),
            _ => None,
        };
        let sym_const = sym_out.as_ref().and_then(|v| v.to_tensor()).filter(|_| node.outputs.len() == 1);
        let outputs = if let Some(t) = shape_value.or(sym_const) {
            Some(vec![t])
        } else if all_const {
            let refs: Vec<Option<&Tensor>> = ins.iter().map(|v| v.and_then(|v| v.konst.as_ref())).collect();
            let ctx = EvalCtx { n_outputs: node.outputs.len() };
            match node.op.eval(&ctx, &refs) {
                Ok(outs) if outs.iter().map(|t| t.bytes().len()).sum::<usize>() <= opts.max_folded_bytes => Some(outs),
                Ok(_) => None,
                Err(e) => return Err(e.in_node(&node.name, node.op.name())),
            }
        } else {
            None
        };
        if let Some(outs) = outputs {
            for (&o, t) in node.outputs.iter().zip(outs) {
                g.values[o].fact = Fact::new(t.dtype(), Shape::fixed(t.shape()));
                g.values[o].konst = Some(t);
            }
            folded += 1;
            continue;
        }
        let facts: Vec<Fact> =
            node.inputs.iter().map(|i| i.map_or_else(Fact::unknown, |i| g.values[i].fact.clone())).collect();
        let infer_ins: Vec<InferInput> = facts
            .iter()
            .zip(&node.inputs)
            .map(|(f, i)| InferInput { fact: f, value: i.and_then(|i| g.values[i].konst.as_ref()) })
            .collect();
        let mut inferred =
            node.op.infer(&infer_ins, node.outputs.len()).map_err(|e| e.in_node(&node.name, node.op.name()))?;
        if let (Op::Layout(LayoutOp::Reshape { allowzero }), Some(Some(target))) = (&node.op, sym_ins.get(1)) {
            if let Some(f) = inferred.first_mut() {
                let s = ShapeValues::reshape_shape(facts[0].shape.as_ref(), target, *allowzero);
                let known = Fact { dtype: None, shape: Some(s) };
                f.shape = merge_facts(&known, &Fact { dtype: None, shape: f.shape.clone() }).shape;
            }
        }
        if let (Some(v), Some(&o)) = (sym_out, node.outputs.first()) {
            sym.set(o, v);
        }
        for (&o, f) in node.outputs.iter().zip(inferred) {
            let v = &mut g.values[o];
            v.fact = merge_facts(&v.fact, &f);
        }
        keep.push(node);
    }
    g.nodes = keep;
    Ok(folded)
}

/// Combines a declared fact (from the model file) with an inferred one, keeping
/// whichever knows more about each part.
pub fn merge_facts(declared: &Fact, inferred: &Fact) -> Fact {
    let dtype = inferred.dtype.or(declared.dtype);
    let shape = match (&declared.shape, &inferred.shape) {
        (Some(d), Some(i)) if d.rank() == i.rank() => Some(Shape(
            d.0.iter()
                .zip(&i.0)
                .map(|(a, b)| match (a, b) {
                    (_, Dim::Fixed(n)) => Dim::Fixed(*n),
                    (Dim::Fixed(n), _) => Dim::Fixed(*n),
                    (Dim::Sym(s), _) => Dim::Sym(s.clone()),
                    (_, b) => b.clone(),
                })
                .collect(),
        )),
        (_, Some(i)) => Some(i.clone()),
        (d, None) => d.clone(),
    };
    Fact { dtype, shape }
}
