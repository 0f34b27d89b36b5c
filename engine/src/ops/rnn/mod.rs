//! Recurrent layers: RNN, GRU and LSTM, forward / reverse / bidirectional.
//!
//! Per direction, the input projection `X W^T + Wb` of every time step is one GEMM;
//! each step then adds `H_{t-1} R^T` (another GEMM over the batch) and applies the
//! gate equations. f32 products go through `floe_kernels::gemm::sgemm`; f64 uses a
//! plain loop; f16 runs in f32. `sequence_lens` makes each batch entry stop (forward)
//! or start (reverse) at its own length; `Y` is zero past it and `Y_h`/`Y_c` hold the
//! state at its last valid step, as onnxruntime does.
//!
//! `eval` is the reference path (any dtype, any input constant or not); the
//! prepared f32 kernel for constant weights and fixed shapes is in [`kernel`].
//!
//! Reference: ONNX operator spec, RNN-22 / GRU-22 / LSTM-22 (gate layouts `zrh` for
//! GRU and `iofc` for LSTM, peepholes `iof`). Activation alpha/beta values are
//! consumed in order by the activations that take them, with onnxruntime's defaults.

mod kernel;

use super::{input, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, unsupported};
use floe_kernels::gemm::{sgemm, MatRef};

/// An activation function of a recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
}

impl Activation {
    /// Parses the `activations` attribute. Alphas and betas are consumed in order by
    /// the activations that use them; when they run out, onnxruntime's defaults apply
    /// (LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1.0, otherwise 0).
    pub fn parse_list(names: &[String], alphas: &[f32], betas: &[f32]) -> std::result::Result<Vec<Activation>, String> {
        let (mut ai, mut bi) = (alphas.iter(), betas.iter());
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let lower = name.to_ascii_lowercase();
            let mut alpha = |d: f32| ai.next().copied().unwrap_or(d);
            let a = match lower.as_str() {
                "relu" => Activation::Relu,
                "tanh" => Activation::Tanh,
                "sigmoid" => Activation::Sigmoid,
                "softsign" => Activation::Softsign,
                "softplus" => Activation::Softplus,
                "leakyrelu" => Activation::LeakyRelu { alpha: alpha(0.01) },
                "thresholdedrelu" => Activation::ThresholdedRelu { alpha: alpha(0.0) },
                "elu" => Activation::Elu { alpha: alpha(1.0) },
                "affine" => Activation::Affine { alpha: alpha(0.0), beta: bi.next().copied().unwrap_or(0.0) },
                "scaledtanh" => Activation::ScaledTanh { alpha: alpha(0.0), beta: bi.next().copied().unwrap_or(0.0) },
                "hardsigmoid" => Activation::HardSigmoid { alpha: alpha(0.2), beta: bi.next().copied().unwrap_or(0.5) },
                _ => return Err(format!("unknown activation '{name}'")),
            };
            out.push(a);
        }
        Ok(out)
    }

    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Affine { alpha, beta } => alpha as f64 * x + beta as f64,
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha as f64 * x
                }
            }
            Activation::ThresholdedRelu { alpha } => {
                if x > alpha as f64 {
                    x
                } else {
                    0.0
                }
            }
            Activation::ScaledTanh { alpha, beta } => alpha as f64 * (beta as f64 * x).tanh(),
            Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Activation::Elu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha as f64 * (x.exp() - 1.0)
                }
            }
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Softplus => {
                // log(1 + e^x) without overflow
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    pub fn count(self) -> usize {
        if self == Direction::Bidirectional {
            2
        } else {
            1
        }
    }
}

/// Attributes shared by the three cells.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RnnAttrs {
    /// From the attribute; checked against R (and taken from it when absent).
    pub hidden_size: Option<usize>,
    pub direction: Direction,
    /// Empty = the defaults; otherwise one set per direction (a single set is shared
    /// by both directions).
    pub activations: Vec<Activation>,
    /// Pre-activation clip threshold.
    pub clip: Option<f32>,
    /// `layout = 1`: X, Y, initial/final states have the batch axis first.
    pub batch_first: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum RnnOp {
    Rnn(RnnAttrs),
    Gru { attrs: RnnAttrs, linear_before_reset: bool },
    Lstm { attrs: RnnAttrs, input_forget: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    fn default_activations(self) -> &'static [Activation] {
        match self {
            Cell::Rnn => &[Activation::Tanh],
            Cell::Gru { .. } => &[Activation::Sigmoid, Activation::Tanh],
            Cell::Lstm { .. } => &[Activation::Sigmoid, Activation::Tanh, Activation::Tanh],
        }
    }
}

impl RnnOp {
    fn parts(&self) -> (&RnnAttrs, Cell) {
        match self {
            RnnOp::Rnn(a) => (a, Cell::Rnn),
            RnnOp::Gru { attrs, linear_before_reset } => {
                (attrs, Cell::Gru { linear_before_reset: *linear_before_reset })
            }
            RnnOp::Lstm { attrs, input_forget } => (attrs, Cell::Lstm { input_forget: *input_forget }),
        }
    }

    fn outputs(&self) -> usize {
        if matches!(self, RnnOp::Lstm { .. }) {
            3
        } else {
            2
        }
    }
}

/// Element types the recurrence runs in, with their matrix product.
trait Real: Element + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self> {
    /// `c (+)= a @ b`: `a` is `m x k` contiguous, `b` is `k x n` with row stride
    /// `ldb`, `c` is `m x n` contiguous.
    #[allow(clippy::too_many_arguments)]
    fn gemm(a: &[Self], m: usize, k: usize, b: &[Self], ldb: usize, n: usize, c: &mut [Self], accumulate: bool);
}

impl Real for f32 {
    fn gemm(a: &[f32], m: usize, k: usize, b: &[f32], ldb: usize, n: usize, c: &mut [f32], accumulate: bool) {
        let bm = MatRef { data: b, rows: k, cols: n, row_stride: ldb, col_stride: 1 };
        sgemm(1.0, MatRef::new(a, m, k), bm, if accumulate { 1.0 } else { 0.0 }, c);
    }
}

impl Real for f64 {
    fn gemm(a: &[f64], m: usize, k: usize, b: &[f64], ldb: usize, n: usize, c: &mut [f64], accumulate: bool) {
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            if !accumulate {
                row.iter_mut().for_each(|v| *v = 0.0);
            }
            for p in 0..k {
                let av = a[i * k + p];
                for (cv, &bv) in row.iter_mut().zip(&b[p * ldb..p * ldb + n]) {
                    *cv += av * bv;
                }
            }
        }
    }
}

/// The sizes of one call, checked against the shape of every given input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    dirs: usize,
}

/// Validated inputs of one call, all in layout 0 (`[seq, batch, ...]`).
struct Problem<R> {
    dims: Dims,
    x: Vec<R>,
    w: Vec<R>,
    r: Vec<R>,
    b: Option<Vec<R>>,
    p: Option<Vec<R>>,
    h0: Option<Vec<R>>,
    c0: Option<Vec<R>>,
    lens: Vec<usize>,
}

/// The results, layout 0: Y `[seq, dirs, batch, hidden]`, Y_h and Y_c `[dirs, batch, hidden]`.
struct Outputs<R> {
    y: Vec<R>,
    yh: Vec<R>,
    yc: Vec<R>,
}

/// `[a, b, c]` -> `[b, a, c]` (swaps the seq and batch axes).
fn swap01<R: Copy>(v: &[R], a: usize, b: usize, c: usize) -> Vec<R> {
    let mut out = Vec::with_capacity(v.len());
    for j in 0..b {
        for i in 0..a {
            out.extend_from_slice(&v[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    out
}

fn check_shape(shape: &[usize], what: &str, want: &[usize]) -> Result<()> {
    if shape != want {
        return Err(Error::Shape(format!("{what} must have shape {want:?}, got {shape:?}")));
    }
    Ok(())
}

fn values<R: Real>(t: &Tensor) -> Result<Vec<R>> {
    if t.dtype() == R::DTYPE {
        return Ok(t.as_slice::<R>()?.to_vec());
    }
    if !t.dtype().is_float() {
        bail!("expected a float tensor, got {}", t.dtype());
    }
    Ok(t.to_f64_vec().into_iter().map(R::from_f64).collect())
}

/// Checks the shapes of the inputs (`shapes[i]` is input `i`'s, `None` when it is
/// omitted) and returns the sizes they agree on. Shared by `eval` and the prepared
/// kernel, so both report a bad shape the same way.
fn dims(attrs: &RnnAttrs, cell: Cell, shapes: &[Option<&[usize]>]) -> Result<Dims> {
    let given = |i: usize| shapes.get(i).copied().flatten();
    let required = |i: usize, what: &str| given(i).ok_or_else(|| Error::Invalid(format!("missing input {i} ({what})")));
    let (x, w, r) = (required(0, "X")?, required(1, "W")?, required(2, "R")?);
    if x.len() != 3 || w.len() != 3 || r.len() != 3 {
        return Err(Error::Shape(format!("X, W and R must be 3-D, got {x:?}, {w:?} and {r:?}")));
    }
    let (seq, batch, input) = if attrs.batch_first { (x[1], x[0], x[2]) } else { (x[0], x[1], x[2]) };
    let dirs = attrs.direction.count();
    let g = cell.gates();
    let hidden = r[2];
    if hidden == 0 {
        return Err(Error::Shape(format!("R {r:?} gives a hidden size of 0")));
    }
    if let Some(h) = attrs.hidden_size {
        if h != hidden {
            return Err(Error::Shape(format!("hidden_size is {h} but R has shape {r:?}")));
        }
    }
    check_shape(w, "W", &[dirs, g * hidden, input])?;
    check_shape(r, "R", &[dirs, g * hidden, hidden])?;
    if let Some(b) = given(3) {
        check_shape(b, "B", &[dirs, 2 * g * hidden])?;
    }
    if let Some(l) = given(4) {
        check_shape(l, "sequence_lens", &[batch])?;
    }
    let state_shape = if attrs.batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
    if let Some(h0) = given(5) {
        check_shape(h0, "initial_h", &state_shape)?;
    }
    if let Cell::Lstm { .. } = cell {
        if let Some(p) = given(7) {
            check_shape(p, "P", &[dirs, 3 * hidden])?;
        }
        if let Some(c0) = given(6) {
            check_shape(c0, "initial_c", &state_shape)?;
        }
    }
    Ok(Dims { seq, batch, input, hidden, dirs })
}

fn problem<R: Real>(attrs: &RnnAttrs, cell: Cell, inputs: &[Option<&Tensor>]) -> Result<Problem<R>> {
    let shapes: Vec<Option<&[usize]>> = inputs.iter().map(|t| t.map(|t| t.shape())).collect();
    let dims = dims(attrs, cell, &shapes)?;
    let Dims { seq, batch, input: n_in, hidden, dirs } = dims;
    let state = |i: usize| -> Result<Option<Vec<R>>> {
        match opt_input(inputs, i) {
            None => Ok(None),
            Some(t) => {
                let v = values::<R>(t)?;
                Ok(Some(if attrs.batch_first { swap01(&v, batch, dirs, hidden) } else { v }))
            }
        }
    };
    let b = opt_input(inputs, 3).map(values::<R>).transpose()?;
    let lens = match opt_input(inputs, 4) {
        Some(t) => {
            let v = t.to_i64_vec()?;
            if let Some(&bad) = v.iter().find(|&&l| l < 0 || l as usize > seq) {
                bail!("sequence_lens value {bad} is outside [0, {seq}]");
            }
            v.into_iter().map(|l| l as usize).collect()
        }
        None => vec![seq; batch],
    };
    let h0 = state(5)?;
    let (c0, p) = if let Cell::Lstm { .. } = cell {
        (state(6)?, opt_input(inputs, 7).map(values::<R>).transpose()?)
    } else {
        (None, None)
    };
    let xv = values::<R>(input(inputs, 0, "X")?)?;
    let x = if attrs.batch_first { swap01(&xv, batch, seq, n_in) } else { xv };
    let (w, r) = (values::<R>(input(inputs, 1, "W")?)?, values::<R>(input(inputs, 2, "R")?)?);
    Ok(Problem { dims, x, w, r, b, p, h0, c0, lens })
}

/// Row-major `rows x cols` -> its transpose.
fn transposed<R: Copy>(v: &[R], rows: usize, cols: usize) -> Vec<R> {
    let mut out = Vec::with_capacity(v.len());
    for j in 0..cols {
        out.extend((0..rows).map(|i| v[i * cols + j]));
    }
    out
}

#[inline]
fn act<R: Real>(a: Activation, clip: Option<f64>, v: R) -> R {
    let x = v.to_f64();
    let x = match clip {
        Some(c) => x.clamp(-c, c),
        None => x,
    };
    R::from_f64(a.apply(x))
}

/// Runs every direction; `acts` holds one set of activations per direction.
fn run<R: Real>(
    pb: &Problem<R>,
    cell: Cell,
    direction: Direction,
    acts: &[Activation],
    clip: Option<f32>,
) -> Outputs<R> {
    let Dims { seq, batch, input, hidden: h, dirs } = pb.dims;
    let g = cell.gates();
    let gh = g * h;
    let zero = R::zero();
    let one = R::one();
    let clip = clip.map(|c| c as f64);
    let mut y = vec![zero; seq * dirs * batch * h];
    let mut yh = vec![zero; dirs * batch * h];
    let mut yc = vec![zero; dirs * batch * h];
    let per_dir = acts.len() / dirs;
    for d in 0..dirs {
        let rev = direction == Direction::Reverse || d == 1;
        let acts = &acts[d * per_dir..(d + 1) * per_dir];
        let w = &pb.w[d * gh * input..(d + 1) * gh * input];
        let r = &pb.r[d * gh * h..(d + 1) * gh * h];
        // W^T [input, gh] and R^T [h, gh], so products stream contiguous rows
        let wt = transposed(w, gh, input);
        let rt = transposed(r, gh, h);
        // input projection of all steps, plus biases
        let mut xw = vec![zero; seq * batch * gh];
        R::gemm(&pb.x, seq * batch, input, &wt, gh, gh, &mut xw, false);
        let lbr = matches!(cell, Cell::Gru { linear_before_reset: true });
        let mut rbh = vec![zero; h];
        if let Some(b) = &pb.b {
            let b = &b[d * 2 * gh..(d + 1) * 2 * gh];
            let (wb, rb) = b.split_at(gh);
            let mut bias: Vec<R> = wb.iter().zip(rb).map(|(&a, &c)| a + c).collect();
            if lbr {
                // Rbh is applied inside r * (H Rh^T + Rbh)
                rbh.copy_from_slice(&rb[2 * h..3 * h]);
                bias[2 * h..].copy_from_slice(&wb[2 * h..3 * h]);
            }
            for row in xw.chunks_mut(gh) {
                for (v, &bv) in row.iter_mut().zip(&bias) {
                    *v = *v + bv;
                }
            }
        }
        let mut hs = match &pb.h0 {
            Some(v) => v[d * batch * h..(d + 1) * batch * h].to_vec(),
            None => vec![zero; batch * h],
        };
        let mut cs = match &pb.c0 {
            Some(v) => v[d * batch * h..(d + 1) * batch * h].to_vec(),
            None => vec![zero; batch * h],
        };
        let peep = pb.p.as_ref().map(|p| &p[d * 3 * h..(d + 1) * 3 * h]);
        // recurrent projection H R^T, one row per batch entry; GRU without
        // linear_before_reset takes only z and r from it (h needs (r * H) Rh^T)
        let ncols = if matches!(cell, Cell::Gru { linear_before_reset: false }) { 2 * h } else { gh };
        let mut hr = vec![zero; batch * ncols];
        let mut rh = vec![zero; batch * h];
        let mut hh = vec![zero; batch * h];
        for s in 0..seq {
            R::gemm(&hs, batch, h, &rt, gh, ncols, &mut hr, false);
            let active = |bi: usize| s < pb.lens[bi];
            let time = |bi: usize| if rev { pb.lens[bi] - 1 - s } else { s };
            if let Cell::Gru { linear_before_reset: false } = cell {
                // r = f(...), then (r * H) Rh^T
                for bi in 0..batch {
                    if !active(bi) {
                        continue;
                    }
                    let xr = &xw[(time(bi) * batch + bi) * gh..][..gh];
                    for j in 0..h {
                        let rg = act(acts[0], clip, xr[h + j] + hr[bi * ncols + h + j]);
                        rh[bi * h + j] = rg * hs[bi * h + j];
                    }
                }
                R::gemm(&rh, batch, h, &rt[2 * h..], gh, h, &mut hh, false);
            }
            for bi in 0..batch {
                if !active(bi) {
                    continue;
                }
                let t = time(bi);
                let xr = &xw[(t * batch + bi) * gh..][..gh];
                let hrow = &hr[bi * ncols..(bi + 1) * ncols];
                let hprev = &mut hs[bi * h..(bi + 1) * h];
                let cprev = &mut cs[bi * h..(bi + 1) * h];
                match cell {
                    Cell::Rnn => {
                        for j in 0..h {
                            hprev[j] = act(acts[0], clip, xr[j] + hrow[j]);
                        }
                    }
                    Cell::Gru { linear_before_reset } => {
                        for j in 0..h {
                            let z = act(acts[0], clip, xr[j] + hrow[j]);
                            let pre = if linear_before_reset {
                                let r = act(acts[0], clip, xr[h + j] + hrow[h + j]);
                                xr[2 * h + j] + r * (hrow[2 * h + j] + rbh[j])
                            } else {
                                xr[2 * h + j] + hh[bi * h + j]
                            };
                            let cand = act(acts[1], clip, pre);
                            hprev[j] = (one - z) * cand + z * hprev[j];
                        }
                    }
                    Cell::Lstm { input_forget } => {
                        for j in 0..h {
                            let pk = |k: usize| peep.map_or(zero, |p| p[k * h + j]);
                            let c_old = cprev[j];
                            let i = act(acts[0], clip, xr[j] + hrow[j] + pk(0) * c_old);
                            let f = if input_forget {
                                one - i
                            } else {
                                act(acts[0], clip, xr[2 * h + j] + hrow[2 * h + j] + pk(2) * c_old)
                            };
                            let cand = act(acts[1], clip, xr[3 * h + j] + hrow[3 * h + j]);
                            let c_new = f * c_old + i * cand;
                            let o = act(acts[0], clip, xr[h + j] + hrow[h + j] + pk(1) * c_new);
                            cprev[j] = c_new;
                            hprev[j] = o * R::from_f64(acts[2].apply(c_new.to_f64()));
                        }
                    }
                }
                let at = ((t * dirs + d) * batch + bi) * h;
                y[at..at + h].copy_from_slice(hprev);
            }
        }
        for bi in 0..batch {
            // an empty sequence has no last step: its final state is zero
            if pb.lens[bi] == 0 {
                hs[bi * h..(bi + 1) * h].iter_mut().for_each(|v| *v = zero);
                cs[bi * h..(bi + 1) * h].iter_mut().for_each(|v| *v = zero);
            }
        }
        yh[d * batch * h..(d + 1) * batch * h].copy_from_slice(&hs);
        yc[d * batch * h..(d + 1) * batch * h].copy_from_slice(&cs);
    }
    Outputs { y, yh, yc }
}

impl RnnOp {
    fn activations(&self) -> Result<Vec<Activation>> {
        let (attrs, cell) = self.parts();
        let dirs = attrs.direction.count();
        let n = cell.default_activations().len();
        let given = &attrs.activations;
        Ok(if given.is_empty() {
            cell.default_activations().repeat(dirs)
        } else if given.len() == n * dirs {
            given.clone()
        } else if given.len() == n {
            given.repeat(dirs)
        } else {
            bail!("{} expects {} activations ({n} per direction), got {}", self.name(), n * dirs, given.len())
        })
    }

    fn compute<R: Real>(&self, inputs: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
        let (attrs, cell) = self.parts();
        let acts = self.activations()?;
        let pb = problem::<R>(attrs, cell, inputs)?;
        let out = run(&pb, cell, attrs.direction, &acts, attrs.clip);
        let Dims { seq, batch, hidden, dirs, .. } = pb.dims;
        let (y, yh, yc) = if attrs.batch_first {
            // [seq, dirs, batch, h] -> [batch, seq, dirs, h]; [dirs, batch, h] -> [batch, dirs, h]
            let y = swap01(&out.y, seq * dirs, batch, hidden);
            (y, swap01(&out.yh, dirs, batch, hidden), swap01(&out.yc, dirs, batch, hidden))
        } else {
            (out.y, out.yh, out.yc)
        };
        let (ys, ss): (Vec<usize>, Vec<usize>) = if attrs.batch_first {
            (vec![batch, seq, dirs, hidden], vec![batch, dirs, hidden])
        } else {
            (vec![seq, dirs, batch, hidden], vec![dirs, batch, hidden])
        };
        let all = [Tensor::from_vec(&ys, y)?, Tensor::from_vec(&ss, yh)?, Tensor::from_vec(&ss, yc)?];
        Ok(all.into_iter().take(n_out).collect())
    }
}

impl OpImpl for RnnOp {
    fn name(&self) -> &'static str {
        match self {
            RnnOp::Rnn(_) => "RNN",
            RnnOp::Gru { .. } => "GRU",
            RnnOp::Lstm { .. } => "LSTM",
        }
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let (attrs, _) = self.parts();
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let dtype = x.dtype;
        let hidden = match attrs.hidden_size {
            Some(h) => Some(Dim::Fixed(h)),
            None => inputs.get(2).and_then(|r| r.fact.shape.as_ref()).filter(|s| s.rank() == 3).map(|s| s.0[2].clone()),
        };
        let dirs = Dim::Fixed(attrs.direction.count());
        let shapes = match (&x.shape, hidden) {
            (Some(s), Some(h)) if s.rank() == 3 => {
                let (seq, batch) =
                    if attrs.batch_first { (s.0[1].clone(), s.0[0].clone()) } else { (s.0[0].clone(), s.0[1].clone()) };
                if attrs.batch_first {
                    Some((Shape(vec![batch.clone(), seq, dirs.clone(), h.clone()]), Shape(vec![batch, dirs, h])))
                } else {
                    Some((Shape(vec![seq, dirs.clone(), batch.clone(), h.clone()]), Shape(vec![dirs, batch, h])))
                }
            }
            _ => None,
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let shape = shapes.as_ref().map(|(y, s)| if i == 0 { y.clone() } else { s.clone() });
            out.push(Fact { dtype, shape });
        }
        Ok(out)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if ctx.n_outputs > self.outputs() {
            bail!("{} has at most {} outputs, the node declares {}", self.name(), self.outputs(), ctx.n_outputs);
        }
        let x = input(inputs, 0, "X")?;
        let n = ctx.n_outputs.max(1);
        match x.dtype() {
            DType::F32 => self.compute::<f32>(inputs, n),
            DType::F64 => self.compute::<f64>(inputs, n),
            DType::F16 => {
                let cast: Vec<Option<Tensor>> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| t.map(|t| if i == 4 { Ok(t.clone()) } else { t.cast(DType::F32) }).transpose())
                    .collect::<Result<_>>()?;
                let refs: Vec<Option<&Tensor>> = cast.iter().map(|t| t.as_ref()).collect();
                self.compute::<f32>(&refs, n)?.iter().map(|t| t.cast(DType::F16)).collect()
            }
            other => unsupported!("{} on {other} input", self.name()),
        }
    }

    fn kernel(&self, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        Ok(kernel::prepare(self, inputs, outputs.len())?.map(|k| Box::new(k) as Box<dyn Kernel>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_slice(shape, v).unwrap()
    }

    fn attrs(direction: Direction, activations: Vec<Activation>) -> RnnAttrs {
        RnnAttrs { hidden_size: Some(1), direction, activations, clip: None, batch_first: false }
    }

    fn eval(op: &RnnOp, n: usize, ins: &[Option<&Tensor>]) -> Vec<Vec<f32>> {
        let outs = op.eval(&EvalCtx { n_outputs: n }, ins).unwrap();
        outs.iter().map(|o| o.as_slice::<f32>().unwrap().to_vec()).collect()
    }

    #[test]
    fn rnn_directions_and_sequence_lens() {
        // h_t = relu(x_t + 0.5 h_{t-1}); x = 1, 2, -1
        // forward: 1, 2.5, 0.25; reverse (from t=2): 0, 2, 2
        let (x, w, r) = (t(&[3, 1, 1], &[1.0, 2.0, -1.0]), t(&[1, 1, 1], &[1.0]), t(&[1, 1, 1], &[0.5]));
        let fwd = RnnOp::Rnn(attrs(Direction::Forward, vec![Activation::Relu]));
        let o = eval(&fwd, 2, &[Some(&x), Some(&w), Some(&r)]);
        assert_eq!(o, vec![vec![1.0, 2.5, 0.25], vec![0.25]]);
        let lens = Tensor::from_slice(&[1], &[2i32]).unwrap();
        let o = eval(&fwd, 2, &[Some(&x), Some(&w), Some(&r), None, Some(&lens)]);
        assert_eq!(o, vec![vec![1.0, 2.5, 0.0], vec![2.5]]);
        let w2 = t(&[2, 1, 1], &[1.0, 1.0]);
        let r2 = t(&[2, 1, 1], &[0.5, 0.5]);
        let bi = RnnOp::Rnn(attrs(Direction::Bidirectional, vec![Activation::Relu]));
        let o = eval(&bi, 2, &[Some(&x), Some(&w2), Some(&r2)]);
        // Y is [seq, dirs, batch, hidden]
        assert_eq!(o, vec![vec![1.0, 2.0, 2.5, 2.0, 0.25, 0.0], vec![0.25, 2.0]]);
    }

    #[test]
    fn gru_linear_before_reset_changes_where_r_applies() {
        // z = r = HardSigmoid(alpha 0, beta 0.5) = 0.5, g = identity, W_h = 1, R_h = 2
        let acts = Activation::parse_list(&["HardSigmoid".into(), "Affine".into()], &[0.0, 1.0], &[0.5, 0.0]).unwrap();
        let (x, w, r) = (t(&[2, 1, 1], &[1.0, 1.0]), t(&[1, 3, 1], &[0.0, 0.0, 1.0]), t(&[1, 3, 1], &[0.0, 0.0, 2.0]));
        let b = t(&[1, 6], &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        // lbr = 0: h~ = x + (r h) R_h + Rb_h: 1 + 0 + 1 = 2 -> h = 1; 1 + 1 + 1 = 3 -> h = 2
        let op = RnnOp::Gru { attrs: attrs(Direction::Forward, acts.clone()), linear_before_reset: false };
        assert_eq!(eval(&op, 2, &[Some(&x), Some(&w), Some(&r), Some(&b)])[1], vec![2.0]);
        // lbr = 1: h~ = x + r (h R_h + Rb_h): 1 + 0.5 = 1.5 -> 0.75; 1 + 0.5 * 2.5 = 2.25 -> 1.5
        let op = RnnOp::Gru { attrs: attrs(Direction::Forward, acts), linear_before_reset: true };
        assert_eq!(eval(&op, 2, &[Some(&x), Some(&w), Some(&r), Some(&b)])[1], vec![1.5]);
    }

    #[test]
    fn lstm_peepholes_and_input_forget() {
        // identity activations, W = 1 for every gate, R = 0, C_0 = 1, P = (i 1, o 1, f 0), x = 1:
        // i = 1 + 1 = 2, f = 1, c~ = 1, C = 1 + 2 = 3, o = 1 + 3 = 4, H = 4 * 3 = 12
        let id = Activation::Affine { alpha: 1.0, beta: 0.0 };
        let (x, w, r) = (t(&[1, 1, 1], &[1.0]), t(&[1, 4, 1], &[1.0; 4]), t(&[1, 4, 1], &[0.0; 4]));
        let (h0, c0, p) = (t(&[1, 1, 1], &[0.0]), t(&[1, 1, 1], &[1.0]), t(&[1, 3], &[1.0, 1.0, 0.0]));
        let ins = [Some(&x), Some(&w), Some(&r), None, None, Some(&h0), Some(&c0), Some(&p)];
        let op = RnnOp::Lstm { attrs: attrs(Direction::Forward, vec![id; 3]), input_forget: false };
        assert_eq!(eval(&op, 3, &ins), vec![vec![12.0], vec![12.0], vec![3.0]]);
        // input_forget: f = 1 - i = -1, C = -1 + 2 = 1, o = 2, H = 2
        let op = RnnOp::Lstm { attrs: attrs(Direction::Forward, vec![id; 3]), input_forget: true };
        assert_eq!(eval(&op, 3, &ins)[1..], [vec![2.0], vec![1.0]]);
        // a W of the wrong shape is an error naming W
        let bad = t(&[1, 3, 1], &[1.0; 3]);
        let e = op.eval(&EvalCtx { n_outputs: 1 }, &[Some(&x), Some(&bad), Some(&r)]).unwrap_err();
        assert!(e.to_string().contains("W must have shape"), "{e}");
    }
}
