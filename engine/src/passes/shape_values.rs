//! Symbolic values of small integer "shape tensors" (what `Shape` produces and
//! Gather / Concat / Slice / Unsqueeze / Squeeze / Cast pass along), so that shape
//! arithmetic folds even when some dims are symbolic: `Shape([1, S, 64])[2]` is the
//! constant 64, and `Reshape(x, Concat(Shape(x)[0:2], [4, 16]))` has the output
//! shape `[1, S, 4, 16]` before `S` is known.

use crate::graph::ValueId;
use crate::ops::gather::GatherOp;
use crate::ops::layout::LayoutOp;
use crate::ops::Op;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// One element of a shape tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SymInt {
    Int(i64),
    Sym(String),
    Unknown,
}

/// The known value of a rank-0 or rank-1 int64 tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymValue {
    pub items: Vec<SymInt>,
    pub scalar: bool,
}

impl SymValue {
    /// The constant tensor, when every item is known.
    pub fn to_tensor(&self) -> Option<Tensor> {
        let v: Option<Vec<i64>> =
            self.items.iter().map(|i| if let SymInt::Int(n) = i { Some(*n) } else { None }).collect();
        let v = v?;
        if self.scalar {
            Some(Tensor::scalar(*v.first()?))
        } else {
            Tensor::from_vec(&[v.len()], v).ok()
        }
    }

    fn from_const(t: &Tensor) -> Option<SymValue> {
        if t.rank() > 1 || t.numel() > 64 || t.dtype() != crate::DType::I64 {
            return None;
        }
        let items = t.to_i64_vec().ok()?.into_iter().map(SymInt::Int).collect();
        Some(SymValue { items, scalar: t.rank() == 0 })
    }
}

/// Symbolic values known so far, by value id.
#[derive(Default)]
pub struct ShapeValues {
    known: HashMap<ValueId, SymValue>,
}

fn dim_item(d: &Dim) -> SymInt {
    match d {
        Dim::Fixed(n) => SymInt::Int(*n as i64),
        Dim::Sym(s) => SymInt::Sym(s.clone()),
        Dim::Unknown => SymInt::Unknown,
    }
}

impl ShapeValues {
    /// The symbolic value of an input: from the table, or from a small constant.
    pub fn get(&self, id: ValueId, konst: Option<&Tensor>) -> Option<SymValue> {
        self.known.get(&id).cloned().or_else(|| konst.and_then(SymValue::from_const))
    }

    pub fn set(&mut self, id: ValueId, v: SymValue) {
        self.known.insert(id, v);
    }

    /// The symbolic value of `op`'s first output, given its inputs' values and the
    /// shape of its first input.
    pub fn propagate(
        op: &Op,
        ins: &[Option<SymValue>],
        consts: &[Option<&Tensor>],
        x_shape: Option<&Shape>,
    ) -> Option<SymValue> {
        let first = || ins.first().cloned().flatten();
        match op {
            Op::Layout(LayoutOp::Shape { start, end }) => {
                let s = x_shape?;
                let r = s.rank() as i64;
                let c = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (a, b) = (c(*start), c(end.unwrap_or(r)));
                let items = if a < b { s.0[a..b].iter().map(dim_item).collect() } else { vec![] };
                Some(SymValue { items, scalar: false })
            }
            Op::Layout(LayoutOp::Identity | LayoutOp::Cast { to: crate::DType::I64 }) => first(),
            Op::Layout(LayoutOp::Unsqueeze { .. }) => {
                let v = first()?;
                v.scalar.then_some(SymValue { items: v.items, scalar: false })
            }
            Op::Layout(LayoutOp::Squeeze { .. }) => {
                let v = first()?;
                (v.items.len() == 1).then_some(SymValue { items: v.items, scalar: true })
            }
            Op::Layout(LayoutOp::Concat { .. }) => {
                let mut items = Vec::new();
                for v in ins {
                    let v = v.clone()?;
                    items.extend(v.items);
                }
                Some(SymValue { items, scalar: false })
            }
            Op::Layout(LayoutOp::Slice { starts: None, .. }) => {
                let v = first()?;
                let get = |i: usize| consts.get(i).copied().flatten().and_then(|t| t.to_i64_vec().ok());
                let (s, e) = (get(1)?, get(2)?);
                let steps = if consts.len() > 4 { get(4)? } else { vec![1] };
                if s.len() != 1 || e.len() != 1 || steps != [1] {
                    return None;
                }
                let n = v.items.len() as i64;
                let c = |x: i64| (if x < 0 { x + n } else { x }).clamp(0, n) as usize;
                let (a, b) = (c(s[0]), c(e[0]));
                Some(SymValue { items: if a < b { v.items[a..b].to_vec() } else { vec![] }, scalar: false })
            }
            Op::Gather(GatherOp::Gather { axis: 0 }) => {
                let v = first()?;
                let idx = consts.get(1).copied().flatten()?;
                let n = v.items.len() as i64;
                let mut items = Vec::new();
                for i in idx.to_i64_vec().ok()? {
                    let j = if i < 0 { i + n } else { i };
                    items.push(v.items.get(usize::try_from(j).ok()?)?.clone());
                }
                Some(SymValue { items, scalar: idx.rank() == 0 })
            }
            _ => None,
        }
    }

    /// The output shape of a Reshape whose target is symbolically known.
    pub fn reshape_shape(input: Option<&Shape>, target: &SymValue, allowzero: bool) -> Shape {
        Shape(
            target
                .items
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    SymInt::Int(0) if !allowzero => input.and_then(|s| s.0.get(i).cloned()).unwrap_or(Dim::Unknown),
                    SymInt::Int(n) if *n > 0 => Dim::Fixed(*n as usize),
                    SymInt::Sym(s) => Dim::Sym(s.clone()),
                    _ => Dim::Unknown,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::gather::GatherOp;
    use crate::ops::layout::LayoutOp;
    use crate::passes::{infer_and_fold, FoldOptions};
    use crate::shape::{Dim, Fact, Shape};
    use crate::{DType, Graph, Tensor};

    /// x[1, S, 64] -> Reshape(x, Concat(Unsqueeze(Shape(x)[0]), Unsqueeze(Shape(x)[1]), [4, 16]))
    /// and Shape(x)[2] as a second output.
    fn exported_head_split() -> Graph {
        let mut g = Graph::default();
        let x =
            g.add_value("x", Fact::new(DType::F32, Shape(vec![Dim::Fixed(1), Dim::Sym("S".into()), Dim::Fixed(64)])));
        g.inputs = vec![x];
        let shape = g.add_value("shape", Fact::unknown());
        g.add_node("shape", LayoutOp::Shape { start: 0, end: None }.into(), vec![Some(x)], vec![shape]);
        let mut parts = Vec::new();
        for i in 0..2i64 {
            let idx = g.add_const(format!("i{i}"), Tensor::scalar(i));
            let d = g.add_value(format!("d{i}"), Fact::unknown());
            g.add_node(
                format!("gather{i}"),
                GatherOp::Gather { axis: 0 }.into(),
                vec![Some(shape), Some(idx)],
                vec![d],
            );
            let u = g.add_value(format!("u{i}"), Fact::unknown());
            g.add_node(format!("unsq{i}"), LayoutOp::Unsqueeze { axes: Some(vec![0]) }.into(), vec![Some(d)], vec![u]);
            parts.push(Some(u));
        }
        parts.push(Some(g.add_const("heads", Tensor::from_vec(&[2], vec![4i64, 16]).unwrap())));
        let target = g.add_value("target", Fact::unknown());
        g.add_node("concat", LayoutOp::Concat { axis: 0 }.into(), parts, vec![target]);
        let y = g.add_value("y", Fact::unknown());
        g.add_node("reshape", LayoutOp::Reshape { allowzero: false }.into(), vec![Some(x), Some(target)], vec![y]);
        let i2 = g.add_const("i2", Tensor::scalar(2i64));
        let d2 = g.add_value("d2", Fact::unknown());
        g.add_node("gather2", GatherOp::Gather { axis: 0 }.into(), vec![Some(shape), Some(i2)], vec![d2]);
        g.outputs = vec![y, d2];
        g
    }

    #[test]
    fn symbolic_shape_chain_gives_reshape_output_shape_and_folds_known_dims() {
        let mut g = exported_head_split();
        infer_and_fold(&mut g, FoldOptions::default()).unwrap();
        let y = g.outputs[0];
        let want = Shape(vec![Dim::Fixed(1), Dim::Sym("S".into()), Dim::Fixed(4), Dim::Fixed(16)]);
        assert_eq!(g.values[y].fact.shape.as_ref(), Some(&want));
        // Shape(x)[2] does not depend on S: folded to the constant 64.
        let d2 = g.outputs[1];
        assert_eq!(g.values[d2].konst.as_ref().unwrap().to_i64_vec().unwrap(), vec![64]);
        // The chain that depends on S stays until S is bound.
        assert!(g.nodes.iter().any(|n| n.name == "reshape"));
    }
}
