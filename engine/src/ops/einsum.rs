//! Einsum: Einstein summation over any number of operands.
//!
//! The equation (`"bij,bjk->bik"`, implicit `"ij,jk"`, ellipsis `"...ii->...i"`) is
//! parsed into labelled axes. Each operand first loses its diagonals and the labels
//! no one else needs (a strided sum, [`reduce_labels`]); operands are then folded
//! pairwise as transpose + batched [`matmul`](super::matmul::matmul), so f32
//! contractions run on the GEMM kernel. Reference: ONNX operator spec, Einsum-12
//! (numpy `einsum` semantics: implicit output = ellipsis dims, then the labels that
//! appear exactly once, in alphabetical order).

use super::{input, EvalCtx, InferInput, OpImpl};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, dispatch_numeric};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum EinsumOp {
    Einsum { equation: String },
}

/// One subscript of a term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    Label(char),
    Ellipsis,
}

/// A parsed equation: one term per input, and the output term if explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equation {
    pub inputs: Vec<Vec<Sub>>,
    pub output: Option<Vec<Sub>>,
}

fn parse_term(t: &str) -> Result<Vec<Sub>> {
    let mut out = Vec::new();
    let mut rest = t;
    let mut ellipsis = false;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            if std::mem::replace(&mut ellipsis, true) {
                bail!("Einsum term '{t}' has more than one ellipsis");
            }
            out.push(Sub::Ellipsis);
            rest = r;
        } else if c.is_ascii_alphabetic() {
            out.push(Sub::Label(c));
            rest = &rest[1..];
        } else {
            bail!("Einsum term '{t}' has an invalid character '{c}' (expected letters or '...')");
        }
    }
    Ok(out)
}

/// Parses an equation (whitespace is ignored).
pub fn parse_equation(equation: &str) -> Result<Equation> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let inputs = lhs.split(',').map(parse_term).collect::<Result<Vec<_>>>()?;
    let output = rhs.map(parse_term).transpose()?;
    if let Some(o) = &output {
        for (i, s) in o.iter().enumerate() {
            if let Sub::Label(c) = s {
                if o[..i].contains(s) {
                    bail!("Einsum output '{}' repeats label '{c}'", rhs.unwrap_or(""));
                }
                if !inputs.iter().any(|t| t.contains(s)) {
                    bail!("Einsum output label '{c}' does not appear in any input");
                }
            }
        }
    }
    Ok(Equation { inputs, output })
}

/// Labels are chars for letters and `ELL + k` for the k-th ellipsis dim (aligned right
/// across operands, as numpy broadcasts them).
type Label = u32;
const ELL: Label = 1 << 16;

/// Per-input label lists and the output labels for inputs of the given ranks.
fn resolve(eq: &Equation, ranks: &[usize]) -> Result<(Vec<Vec<Label>>, Vec<Label>)> {
    if eq.inputs.len() != ranks.len() {
        bail!("Einsum equation has {} input terms but {} inputs are given", eq.inputs.len(), ranks.len());
    }
    let mut ell_rank = 0;
    let mut ell_of = Vec::with_capacity(ranks.len());
    for (t, &r) in eq.inputs.iter().zip(ranks) {
        let letters = t.iter().filter(|s| matches!(s, Sub::Label(_))).count();
        let has_ell = t.contains(&Sub::Ellipsis);
        if r < letters || (!has_ell && r != letters) {
            return Err(Error::Shape(format!(
                "Einsum term with {letters} labels{} does not fit an input of rank {r}",
                if has_ell { " and an ellipsis" } else { "" }
            )));
        }
        ell_of.push(r - letters);
        ell_rank = ell_rank.max(r - letters);
    }
    let expand = |t: &[Sub], e: usize| -> Vec<Label> {
        let mut v = Vec::new();
        for s in t {
            match s {
                Sub::Label(c) => v.push(*c as Label),
                Sub::Ellipsis => v.extend((ell_rank - e..ell_rank).map(|k| ELL + k as Label)),
            }
        }
        v
    };
    let ins: Vec<Vec<Label>> = eq.inputs.iter().zip(&ell_of).map(|(t, &e)| expand(t, e)).collect();
    let out = match &eq.output {
        Some(o) => expand(o, ell_rank),
        None => {
            let mut v: Vec<Label> = (0..ell_rank).map(|k| ELL + k as Label).collect();
            let mut once: Vec<Label> = Vec::new();
            let all: Vec<Label> = ins.iter().flatten().copied().filter(|&l| l < ELL).collect();
            for &l in &all {
                if all.iter().filter(|&&m| m == l).count() == 1 {
                    once.push(l);
                }
            }
            once.sort_unstable();
            v.extend(once);
            v
        }
    };
    Ok((ins, out))
}

/// `out[o...] = sum over the other labels of x[...]`, where `labels` names each axis of
/// `x` (a repeated label walks the diagonal) and `out_labels` (unique, a subset of
/// `labels`) orders the result. Floats accumulate in f64, integers wrap in i64.
pub fn reduce_labels(x: &Tensor, labels: &[Label], out_labels: &[Label]) -> Result<Tensor> {
    if labels.len() != x.rank() {
        return Err(Error::Shape(format!("{} labels for an input of rank {}", labels.len(), x.rank())));
    }
    let st = super::strides(x.shape());
    // unique labels with their size and summed stride (diagonals add strides)
    let mut uniq: Vec<(Label, usize, usize)> = Vec::new();
    for (a, &l) in labels.iter().enumerate() {
        match uniq.iter_mut().find(|u| u.0 == l) {
            Some(u) => {
                if u.1 != x.shape()[a] {
                    return Err(Error::Shape(format!(
                        "Einsum repeated label has sizes {} and {} in one input of shape {:?}",
                        u.1,
                        x.shape()[a],
                        x.shape()
                    )));
                }
                u.2 += st[a];
            }
            None => uniq.push((l, x.shape()[a], st[a])),
        }
    }
    let find = |l: Label| uniq.iter().find(|u| u.0 == l).copied();
    let mut outs = Vec::with_capacity(out_labels.len());
    for &l in out_labels {
        match find(l) {
            Some(u) => outs.push(u),
            None => bail!("Einsum: output label {l} is not among the input's labels"),
        }
    }
    let summed: Vec<(Label, usize, usize)> = uniq.iter().copied().filter(|u| !out_labels.contains(&u.0)).collect();
    let out_shape: Vec<usize> = outs.iter().map(|u| u.1).collect();
    let plain = summed.is_empty() && uniq.len() == labels.len();
    if plain {
        let perm: Vec<usize> = out_labels.iter().map(|l| labels.iter().position(|m| m == l).unwrap_or(0)).collect();
        return super::layout::transpose(x, &perm);
    }
    let odometer = |dims: &[(Label, usize, usize)]| -> Vec<usize> {
        let n: usize = dims.iter().map(|d| d.1).product();
        let mut offs = Vec::with_capacity(n);
        let mut idx = vec![0usize; dims.len()];
        let mut off = 0usize;
        for _ in 0..n {
            offs.push(off);
            for d in (0..dims.len()).rev() {
                idx[d] += 1;
                off += dims[d].2;
                if idx[d] < dims[d].1 {
                    break;
                }
                off -= dims[d].2 * idx[d];
                idx[d] = 0;
            }
        }
        offs
    };
    let out_offs = odometer(&outs);
    let sum_offs = odometer(&summed);
    let float = x.dtype().is_float();
    dispatch_numeric!(x.dtype(), T => {
        let xs = x.as_slice::<T>()?;
        let vals: Vec<T> = out_offs
            .iter()
            .map(|&o| {
                if float {
                    T::from_f64(sum_offs.iter().map(|&s| xs[o + s].to_f64()).sum())
                } else {
                    T::from_i64(sum_offs.iter().fold(0i64, |acc, &s| acc.wrapping_add(xs[o + s].to_i64())))
                }
            })
            .collect();
        Tensor::from_vec(&out_shape, vals)
    }, bool => bail!("Einsum does not accept bool inputs"))
}

/// Repeats a size-1 axis `n` times.
fn expand_axis(x: &Tensor, axis: usize, n: usize) -> Result<Tensor> {
    let mut shape = x.shape().to_vec();
    shape[axis] = n;
    let mut out = Tensor::zeros(x.dtype(), &shape)?;
    let size = x.dtype().size();
    let src = x.bytes().to_vec();
    let dst = out.bytes_mut();
    super::broadcast::for_each_offset(x.shape(), &shape, |i, o| {
        dst[i * size..(i + 1) * size].copy_from_slice(&src[o * size..(o + 1) * size]);
    });
    Ok(out)
}

/// Contracts two operands, keeping the labels in `keep` (batch dims, and those of
/// one side only) and summing the shared rest. Returns the result and its labels.
fn contract(a: &Tensor, la: &[Label], b: &Tensor, lb: &[Label], keep: &[Label]) -> Result<(Tensor, Vec<Label>)> {
    let needed = |own: &[Label], other: &[Label]| -> Vec<Label> {
        let mut v: Vec<Label> = Vec::new();
        for &l in own {
            if (keep.contains(&l) || other.contains(&l)) && !v.contains(&l) {
                v.push(l);
            }
        }
        v
    };
    let na = needed(la, lb);
    let nb = needed(lb, la);
    let mut a = if na.as_slice() != la { reduce_labels(a, la, &na)? } else { a.clone() };
    let mut b = if nb.as_slice() != lb { reduce_labels(b, lb, &nb)? } else { b.clone() };
    let (la, lb) = (na, nb);
    let batch: Vec<Label> = la.iter().copied().filter(|l| lb.contains(l) && keep.contains(l)).collect();
    let sum: Vec<Label> = la.iter().copied().filter(|l| lb.contains(l) && !keep.contains(l)).collect();
    let left: Vec<Label> = la.iter().copied().filter(|l| !lb.contains(l)).collect();
    let right: Vec<Label> = lb.iter().copied().filter(|l| !la.contains(l)).collect();
    let pos = |ls: &[Label], l: Label| ls.iter().position(|&m| m == l).unwrap_or(0);
    // shared labels: sizes must agree up to broadcasting of 1s; summed ones are
    // materialised so the inner dimension matches.
    for &l in batch.iter().chain(&sum) {
        let (ia, ib) = (pos(&la, l), pos(&lb, l));
        let (sa, sb) = (a.shape()[ia], b.shape()[ib]);
        if sa != sb {
            if sa != 1 && sb != 1 {
                return Err(Error::Shape(format!(
                    "Einsum label has size {sa} in one input and {sb} in another ({:?} vs {:?})",
                    a.shape(),
                    b.shape()
                )));
            }
            if sum.contains(&l) {
                if sa == 1 {
                    a = expand_axis(&a, ia, sb)?;
                } else {
                    b = expand_axis(&b, ib, sa)?;
                }
            }
        }
    }
    let dims = |t: &Tensor, ls: &[Label], sel: &[Label]| -> Vec<usize> {
        sel.iter().map(|&l| t.shape()[pos(ls, l)]).collect()
    };
    let perm_a: Vec<usize> = batch.iter().chain(&left).chain(&sum).map(|&l| pos(&la, l)).collect();
    let perm_b: Vec<usize> = batch.iter().chain(&sum).chain(&right).map(|&l| pos(&lb, l)).collect();
    let ta = super::layout::transpose(&a, &perm_a)?;
    let tb = super::layout::transpose(&b, &perm_b)?;
    let m: usize = dims(&a, &la, &left).iter().product();
    let k: usize = dims(&a, &la, &sum).iter().product();
    let n: usize = dims(&b, &lb, &right).iter().product();
    let mut sa = dims(&a, &la, &batch);
    let mut sb = dims(&b, &lb, &batch);
    sa.extend([m, k]);
    sb.extend([k, n]);
    let p = super::matmul::matmul(&ta.reshaped(&sa)?, &tb.reshaped(&sb)?)?;
    let mut shape: Vec<usize> = p.shape()[..batch.len()].to_vec();
    shape.extend(dims(&a, &la, &left));
    shape.extend(dims(&b, &lb, &right));
    let labels: Vec<Label> = batch.iter().chain(&left).chain(&right).copied().collect();
    Ok((p.reshaped(&shape)?, labels))
}

/// Evaluates an einsum equation.
pub fn einsum(equation: &Equation, inputs: &[&Tensor]) -> Result<Tensor> {
    if inputs.is_empty() {
        bail!("Einsum needs at least one input");
    }
    let dtype = inputs[0].dtype();
    if let Some(t) = inputs.iter().find(|t| t.dtype() != dtype) {
        bail!("Einsum inputs have different dtypes: {dtype} and {}", t.dtype());
    }
    let ranks: Vec<usize> = inputs.iter().map(|t| t.rank()).collect();
    let (labels, out) = resolve(equation, &ranks)?;
    let mut acc = inputs[0].clone();
    let mut acc_labels = labels[0].clone();
    for i in 1..inputs.len() {
        let mut keep = out.clone();
        keep.extend(labels[i + 1..].iter().flatten().copied());
        let (t, l) = contract(&acc, &acc_labels, inputs[i], &labels[i], &keep)?;
        acc = t;
        acc_labels = l;
    }
    if acc_labels == out {
        return Ok(acc);
    }
    reduce_labels(&acc, &acc_labels, &out)
}

/// Output dims from input facts: per label, a fixed size other than 1 wins.
fn infer_shape(eq: &Equation, shapes: &[&Shape]) -> Option<Shape> {
    let ranks: Vec<usize> = shapes.iter().map(|s| s.rank()).collect();
    let (labels, out) = resolve(eq, &ranks).ok()?;
    let dim_of = |l: Label| -> Dim {
        let mut best: Option<Dim> = None;
        for (ls, s) in labels.iter().zip(shapes) {
            for (&m, d) in ls.iter().zip(&s.0) {
                if m != l {
                    continue;
                }
                best = Some(match (best.take(), d) {
                    (None, d) => d.clone(),
                    (Some(b), d) if &b == d => b,
                    (Some(Dim::Fixed(1)), d) => d.clone(),
                    (Some(b), Dim::Fixed(1)) => b,
                    (Some(Dim::Fixed(n)), _) => Dim::Fixed(n),
                    (Some(_), Dim::Fixed(n)) => Dim::Fixed(*n),
                    _ => Dim::Unknown,
                });
            }
        }
        best.unwrap_or(Dim::Unknown)
    };
    Some(Shape(out.iter().map(|&l| dim_of(l)).collect()))
}

impl OpImpl for EinsumOp {
    fn name(&self) -> &'static str {
        "Einsum"
    }

    fn infer(&self, inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        let EinsumOp::Einsum { equation } = self;
        let dtype = inputs.first().and_then(|i| i.fact.dtype);
        let eq = parse_equation(equation)?;
        let shapes: Option<Vec<&Shape>> = inputs.iter().map(|i| i.fact.shape.as_ref()).collect();
        let shape = shapes.and_then(|s| infer_shape(&eq, &s));
        Ok(vec![Fact { dtype, shape }])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let EinsumOp::Einsum { equation } = self;
        let eq = parse_equation(equation)?;
        let ts = (0..inputs.len().max(1)).map(|i| input(inputs, i, "Inputs")).collect::<Result<Vec<_>>>()?;
        Ok(vec![einsum(&eq, &ts)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(eq: &str, ins: &[&Tensor]) -> Tensor {
        einsum(&parse_equation(eq).unwrap(), ins).unwrap()
    }

    #[test]
    fn matmul_trace_diagonal_and_implicit_output() {
        let a = Tensor::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_slice(&[2, 2], &[5.0f32, 6.0, 7.0, 8.0]).unwrap();
        // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
        assert_eq!(run("ij,jk->ik", &[&a, &b]).as_slice::<f32>().unwrap(), &[19.0, 22.0, 43.0, 50.0]);
        // implicit "ij,jk" is "ij,jk->ik"; "ji" alone is the transpose
        assert_eq!(run("ij,jk", &[&a, &b]).as_slice::<f32>().unwrap(), &[19.0, 22.0, 43.0, 50.0]);
        assert_eq!(run("ji", &[&a]).as_slice::<f32>().unwrap(), &[1.0, 3.0, 2.0, 4.0]);
        // trace, diagonal, and sum over a repeated label in implicit mode
        assert_eq!(run("ii->", &[&a]).as_slice::<f32>().unwrap(), &[5.0]);
        assert_eq!(run("ii", &[&a]).as_slice::<f32>().unwrap(), &[5.0]);
        assert_eq!(run("ii->i", &[&a]).as_slice::<f32>().unwrap(), &[1.0, 4.0]);
    }

    #[test]
    fn ellipsis_broadcasts_and_three_operands_chain() {
        // "...i,...i->..." with batch shapes [2] and [1]: row-wise dot with a shared vector
        let a = Tensor::from_slice(&[2, 3], &[1i64, 2, 3, 4, 5, 6]).unwrap();
        let b = Tensor::from_slice(&[1, 3], &[1i64, 0, -1]).unwrap();
        let r = run("...i,...i->...", &[&a, &b]);
        assert_eq!(r.shape(), &[2]);
        assert_eq!(r.as_slice::<i64>().unwrap(), &[-2, -2]);
        // a·(B·c) with c summed out: i,ij,j-> = 1*(1*1+2*1) + 2*(3*1+4*1) = 17
        let v = Tensor::from_slice(&[2], &[1.0f64, 2.0]).unwrap();
        let m = Tensor::from_slice(&[2, 2], &[1.0f64, 2.0, 3.0, 4.0]).unwrap();
        let c = Tensor::from_slice(&[2], &[1.0f64, 1.0]).unwrap();
        assert_eq!(run("i,ij,j->", &[&v, &m, &c]).as_slice::<f64>().unwrap(), &[17.0]);
    }

    #[test]
    fn malformed_equations_are_errors() {
        assert!(parse_equation("ij->ii").is_err());
        assert!(parse_equation("i.j").is_err());
        assert!(parse_equation("ij->k").is_err());
        let a = Tensor::from_slice(&[2, 3], &[0.0f32; 6]).unwrap();
        assert!(einsum(&parse_equation("ijk").unwrap(), &[&a]).is_err());
        assert!(einsum(&parse_equation("ii").unwrap(), &[&a]).is_err());
    }
}
