//! Control flow: If, Loop and Scan, whose bodies are floe graphs. Values a body
//! reads from enclosing scopes arrive as extra trailing inputs ("captures", made
//! explicit by the importer), so a body is a self-contained graph.
//! Reference: ONNX spec for If (v1-v24), Loop (v1-v24), Scan (v9-v24).

use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::bail;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::exec::run_graph;
use crate::graph::Graph;
use crate::shape::Fact;
use crate::tensor::Tensor;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ControlOp {
    /// Inputs: `cond`, then the captures.
    If { then_branch: Box<Graph>, else_branch: Box<Graph> },
    /// Inputs: `M`, `cond`, loop-carried initial values, captures.
    Loop { body: Box<Graph>, n_captures: usize },
    /// Inputs: initial states, scan inputs, captures.
    Scan {
        body: Box<Graph>,
        n_captures: usize,
        num_scan_inputs: usize,
        input_axes: Vec<i64>,
        input_reverse: Vec<bool>,
        output_axes: Vec<i64>,
        output_reverse: Vec<bool>,
    },
}

fn scalar_bool(t: &Tensor, what: &str) -> Result<bool> {
    let v = t.to_f64_vec();
    match v.first() {
        Some(&x) if v.len() == 1 => Ok(x != 0.0),
        _ => bail!("{what} must hold exactly one value, got shape {:?}", t.shape()),
    }
}

/// Stacks same-shape tensors along a new axis 0.
fn stack(parts: &[Tensor], fallback_dtype: Option<DType>) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Tensor::zeros(fallback_dtype.unwrap_or(DType::F32), &[0]);
    };
    let mut shape = vec![parts.len()];
    shape.extend_from_slice(first.shape());
    let mut bytes = Vec::with_capacity(first.bytes().len() * parts.len());
    for p in parts {
        if p.shape() != first.shape() || p.dtype() != first.dtype() {
            bail!("scan outputs differ across iterations: {:?} vs {:?}", p.shape(), first.shape());
        }
        bytes.extend_from_slice(p.bytes());
    }
    Tensor::from_bytes(first.dtype(), &shape, &bytes)
}

/// Moves axis 0 of `t` to `axis`.
fn move_first_axis(t: Tensor, axis: usize) -> Result<Tensor> {
    if axis == 0 {
        return Ok(t);
    }
    let r = t.rank();
    let mut perm: Vec<usize> = (1..r).collect();
    perm.insert(axis.min(r - 1), 0);
    super::layout::transpose(&t, &perm)
}

fn eval_loop(body: &Graph, n_caps: usize, inputs: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    let max_trip = opt_input(inputs, 0).map(|t| t.to_i64_vec()).transpose()?.and_then(|v| v.first().copied());
    let mut cond = match opt_input(inputs, 1) {
        Some(c) => scalar_bool(c, "Loop cond")?,
        None => true,
    };
    let n_carried = inputs.len().saturating_sub(2 + n_caps);
    let mut carried: Vec<Tensor> =
        (0..n_carried).map(|i| input(inputs, 2 + i, "loop-carried value").cloned()).collect::<Result<_>>()?;
    let caps: Vec<Tensor> =
        (0..n_caps).map(|i| input(inputs, 2 + n_carried + i, "captured value").cloned()).collect::<Result<_>>()?;
    let n_scan = body.outputs.len().saturating_sub(1 + n_carried);
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan];
    if max_trip.is_none() && opt_input(inputs, 1).is_none() {
        bail!("Loop with neither a trip count nor a condition would never end");
    }
    let limit = max_trip.unwrap_or(i64::MAX);
    let mut i: i64 = 0;
    while i < limit && cond {
        if i >= 1 << 24 {
            bail!("Loop ran more than 16M iterations; refusing to continue");
        }
        let mut body_in = vec![Tensor::scalar(i), Tensor::from_bools(&[], &[cond])?];
        body_in.extend(carried.iter().cloned());
        body_in.extend(caps.iter().cloned());
        let out = run_graph(body, body_in).map_err(|e| Error::Invalid(format!("Loop body, iteration {i}: {e}")))?;
        cond = scalar_bool(&out[0], "Loop body cond")?;
        carried = out[1..1 + n_carried].to_vec();
        for (s, t) in scans.iter_mut().zip(&out[1 + n_carried..]) {
            s.push(t.clone());
        }
        i += 1;
    }
    let mut outs = carried;
    for (k, s) in scans.iter().enumerate() {
        let dt = body.values[body.outputs[1 + n_carried + k]].fact.dtype;
        outs.push(stack(s, dt)?);
    }
    outs.truncate(n_out.max(1));
    Ok(outs)
}

#[allow(clippy::too_many_arguments)]
fn eval_scan(
    body: &Graph,
    n_caps: usize,
    m: usize,
    in_axes: &[i64],
    in_rev: &[bool],
    out_axes: &[i64],
    out_rev: &[bool],
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let n_state = inputs.len().saturating_sub(m + n_caps);
    let mut state: Vec<Tensor> =
        (0..n_state).map(|i| input(inputs, i, "initial state").cloned()).collect::<Result<_>>()?;
    let caps: Vec<Tensor> =
        (0..n_caps).map(|i| input(inputs, n_state + m + i, "captured value").cloned()).collect::<Result<_>>()?;
    // Each scan input with its scan axis moved to the front.
    let mut seqs = Vec::with_capacity(m);
    for j in 0..m {
        let x = input(inputs, n_state + j, "scan input")?;
        let a = super::norm_axis(in_axes.get(j).copied().unwrap_or(0), x.rank())?;
        let mut perm: Vec<usize> = (0..x.rank()).collect();
        perm.remove(a);
        perm.insert(0, a);
        seqs.push(super::layout::transpose(x, &perm)?);
    }
    let len = seqs.first().map_or(0, |s| s.shape()[0]);
    if seqs.iter().any(|s| s.shape()[0] != len) {
        bail!("Scan inputs have different sequence lengths");
    }
    let n_scan_out = body.outputs.len().saturating_sub(n_state);
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::with_capacity(len); n_scan_out];
    for t in 0..len {
        let mut body_in = state.clone();
        for (j, s) in seqs.iter().enumerate() {
            let idx = if in_rev.get(j).copied().unwrap_or(false) { len - 1 - t } else { t };
            let per = s.numel() / len.max(1);
            let es = s.dtype().size();
            let bytes = &s.bytes()[idx * per * es..(idx + 1) * per * es];
            body_in.push(Tensor::from_bytes(s.dtype(), &s.shape()[1..], bytes)?);
        }
        body_in.extend(caps.iter().cloned());
        let out = run_graph(body, body_in).map_err(|e| Error::Invalid(format!("Scan body, step {t}: {e}")))?;
        state = out[..n_state].to_vec();
        for (k, o) in out[n_state..].iter().enumerate() {
            scans[k].push(o.clone());
        }
    }
    let mut outs = state;
    for (k, mut s) in scans.into_iter().enumerate() {
        if out_rev.get(k).copied().unwrap_or(false) {
            s.reverse();
        }
        let dt = body.values[body.outputs[n_state + k]].fact.dtype;
        let st = stack(&s, dt)?;
        let a = super::norm_axis(out_axes.get(k).copied().unwrap_or(0), st.rank())?;
        outs.push(move_first_axis(st, a)?);
    }
    Ok(outs)
}

impl OpImpl for ControlOp {
    fn name(&self) -> &'static str {
        match self {
            ControlOp::If { .. } => "If",
            ControlOp::Loop { .. } => "Loop",
            ControlOp::Scan { .. } => "Scan",
        }
    }

    fn infer(&self, _inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let body = match self {
            ControlOp::If { then_branch, .. } => then_branch,
            ControlOp::Loop { body, .. } | ControlOp::Scan { body, .. } => body,
        };
        let skip = usize::from(matches!(self, ControlOp::Loop { .. }));
        let mut v: Vec<Fact> =
            body.outputs.iter().skip(skip).map(|&o| Fact::dtype_only_opt(body.values[o].fact.dtype)).collect();
        v.resize(n, Fact::unknown());
        Ok(v)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        match self {
            ControlOp::If { then_branch, else_branch } => {
                let cond = scalar_bool(input(inputs, 0, "cond")?, "If cond")?;
                let caps: Vec<Tensor> = inputs[1..]
                    .iter()
                    .map(|t| t.cloned().ok_or_else(|| Error::Invalid("missing captured value".into())))
                    .collect::<Result<_>>()?;
                let g = if cond { then_branch } else { else_branch };
                run_graph(g, caps)
                    .map_err(|e| Error::Invalid(format!("{} branch: {e}", if cond { "then" } else { "else" })))
            }
            ControlOp::Loop { body, n_captures } => eval_loop(body, *n_captures, inputs, ctx.n_outputs),
            ControlOp::Scan {
                body,
                n_captures,
                num_scan_inputs,
                input_axes,
                input_reverse,
                output_axes,
                output_reverse,
            } => eval_scan(
                body,
                *n_captures,
                *num_scan_inputs,
                input_axes,
                input_reverse,
                output_axes,
                output_reverse,
                inputs,
            ),
        }
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            ControlOp::If { then_branch, else_branch } => vec![then_branch, else_branch],
            ControlOp::Loop { body, .. } | ControlOp::Scan { body, .. } => vec![body],
        }
    }
}
