//! The prepared f32 kernel of RNN, GRU and LSTM, for constant weights and fixed shapes.
//!
//! At plan time W^T is packed for the GEMM micro-kernel, R^T is stored the way the
//! per-step product reads it fastest (plain rows for the skinny path when the batch
//! is a few rows, packed panels otherwise), the two biases are added into one, and
//! the activations are resolved. A run then does, per direction, one GEMM for the
//! input projection of every step with the bias fused, and per step one skinny GEMM
//! `H R^T` and the gate equations (vectorised sigmoid / tanh), writing Y, Y_h and
//! Y_c straight into the planned outputs. Scratch is sized at plan time and kept in
//! a `Mutex` across runs, so runs allocate nothing.
//!
//! The semantics (gate layouts, `sequence_lens`, `linear_before_reset`, peepholes,
//! clip) are those of the reference `eval` in `mod.rs`, which the tests compare
//! against on random problems.

use super::{dims, Activation, Cell, Dims, Direction, RnnOp};
use crate::bail;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{fixed_shape, opt_input, InferInput, Kernel};
use crate::tensor::Tensor;
use floe_kernels::gemm::{self, BSource, Bias, Epilogue, MatRef, PackedB};
use floe_kernels::vecmath;
use std::sync::Mutex;

/// A gate nonlinearity, resolved for the vector path where there is one.
#[derive(Clone, Copy, Debug)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    /// Every other activation of the spec, element by element (as `eval` does).
    Scalar(Activation),
}

impl Act {
    fn new(a: Activation) -> Act {
        match a {
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Tanh => Act::Tanh,
            Activation::Relu => Act::Relu,
            other => Act::Scalar(other),
        }
    }

    /// `x = f(clamp(x, -clip, clip))`. Clamping in f32 is exact, so this is what
    /// `eval` computes up to the vector functions' rounding.
    fn apply(self, clip: Option<f32>, x: &mut [f32]) {
        if let Some(c) = clip {
            x.iter_mut().for_each(|v| *v = v.clamp(-c, c));
        }
        match self {
            Act::Sigmoid => vecmath::sigmoid_in_place(x),
            Act::Tanh => vecmath::tanh_in_place(x),
            Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Scalar(a) => x.iter_mut().for_each(|v| *v = a.apply(*v as f64) as f32),
        }
    }
}

/// The right-hand side of a per-step product (a transposed slice of R), stored the
/// way the GEMM reads it fastest for this batch size.
enum Recurrent {
    /// Row-major `k x n`, streamed row by row by the skinny GEMM (few batch rows,
    /// on a micro-kernel without a few-rows entry).
    Rows { data: Vec<f32>, k: usize, n: usize },
    /// Panels packed for the blocked driver, or for the micro-kernel's few-rows
    /// tiles (which beat streaming rows several times over).
    Packed(PackedB),
}

impl Recurrent {
    fn new(m: MatRef<'_>, batch: usize) -> Recurrent {
        let kernel = gemm::selected();
        if batch <= gemm::SKINNY_ROWS && kernel.run_few.is_none() {
            let data = (0..m.rows).flat_map(|i| (0..m.cols).map(move |j| m.at(i, j))).collect();
            Recurrent::Rows { data, k: m.rows, n: m.cols }
        } else {
            Recurrent::Packed(PackedB::new(kernel, m))
        }
    }

    /// `c = epilogue(a @ self)` for `rows` rows of `a` (contiguous).
    fn product(&self, a: &[f32], rows: usize, c: &mut [f32], epi: &Epilogue<'_>) {
        match self {
            Recurrent::Rows { data, k, n } => {
                let b = BSource::Mat(MatRef::new(data, *k, *n));
                gemm::sgemm_ex(gemm::selected(), 1.0, MatRef::new(a, rows, *k), b, 0.0, c, epi)
            }
            Recurrent::Packed(p) => gemm::sgemm_packed(1.0, MatRef::new(a, rows, p.k()), p, 0.0, c, epi),
        }
    }
}

/// The constant part of one direction.
struct DirectionPlan {
    /// W^T `[input, gates * hidden]`.
    w: PackedB,
    /// R^T `[hidden, gates * hidden]`; for a GRU without `linear_before_reset`, only
    /// its z and r columns (`[hidden, 2 hidden]`).
    r: Recurrent,
    /// GRU without `linear_before_reset`: Rh^T, applied to `r * H`.
    rh: Option<Recurrent>,
    /// `Wb + Rb` per gate column (a GRU with `linear_before_reset` takes Wbh alone
    /// for h); empty without B.
    bias: Vec<f32>,
    /// GRU with `linear_before_reset`: `[0; 2 hidden] ++ Rbh`, fused into `H R^T` so
    /// its h columns are `H Rh^T + Rbh`; empty otherwise.
    recurrent_bias: Vec<f32>,
    /// LSTM peepholes `[i, o, f]`, `3 hidden`; empty without P.
    peep: Vec<f32>,
    /// f, g, h of the spec (the ones the cell uses).
    acts: [Act; 3],
}

/// Buffers of one run, sized at plan time.
struct Scratch {
    /// Input projection of every step, `[rows of X, gates * hidden]`.
    xw: Vec<f32>,
    /// `H R^T`, `[batch, columns of R^T]`.
    hr: Vec<f32>,
    /// Gate pre-activations and activations, `[batch, gates * hidden]`.
    gates: Vec<f32>,
    /// Hidden and cell state, `[batch, hidden]`.
    h: Vec<f32>,
    c: Vec<f32>,
    /// GRU without `linear_before_reset`: `r * H` and `(r * H) Rh^T`, `[batch, hidden]`.
    rh: Vec<f32>,
    hh: Vec<f32>,
    lens: Vec<usize>,
}

/// RNN / GRU / LSTM on fixed shapes with constant W, R, B and P.
pub(super) struct RnnKernel {
    cell: Cell,
    dims: Dims,
    batch_first: bool,
    reverse: bool,
    clip: Option<f32>,
    /// Columns of `H R^T` (of `hr`).
    ncols: usize,
    dirs: Vec<DirectionPlan>,
    scratch: Mutex<Scratch>,
}

/// Input `i` if the node has it (an omitted optional input has neither a value nor a fact).
fn given<'a, 'b>(inputs: &'b [InferInput<'a>], i: usize) -> Option<&'b InferInput<'a>> {
    inputs.get(i).filter(|i| i.value.is_some() || i.fact.dtype.is_some() || i.fact.shape.is_some())
}

/// The constant f32 value of input `i`, if it has one.
fn constant<'a>(inputs: &[InferInput<'a>], i: usize) -> Option<&'a [f32]> {
    given(inputs, i)?.value.filter(|t| t.dtype() == DType::F32)?.as_slice::<f32>().ok()
}

/// The kernel for `op`, or `None` when it does not apply (another dtype, a shape only
/// known at run time, weights that are not constants): `eval` runs those.
pub(super) fn prepare(op: &RnnOp, inputs: &[InferInput<'_>], n_out: usize) -> Result<Option<RnnKernel>> {
    let (attrs, cell) = op.parts();
    // too many outputs, or a clip no range can be made of: eval reports those
    if n_out > op.outputs() || attrs.clip.is_some_and(|c| c.is_nan() || c < 0.0) {
        return Ok(None);
    }
    let n_in = if let Cell::Lstm { .. } = cell { 8 } else { 6 };
    if (n_in..inputs.len()).any(|i| given(inputs, i).is_some()) {
        return Ok(None);
    }
    let mut shapes = Vec::with_capacity(n_in);
    for i in 0..n_in {
        let Some(inp) = given(inputs, i) else {
            shapes.push(None);
            continue;
        };
        let dtype_ok = match i {
            4 => matches!(inp.fact.dtype, Some(DType::I32 | DType::I64)),
            _ => inp.fact.dtype == Some(DType::F32),
        };
        let Some(shape) = fixed_shape(inp) else { return Ok(None) };
        if !dtype_ok {
            return Ok(None);
        }
        shapes.push(Some(shape));
    }
    let shape_refs: Vec<Option<&[usize]>> = shapes.iter().map(|s| s.as_deref()).collect();
    let dims = dims(attrs, cell, &shape_refs)?;
    // W, R, B and P are folded into the plan: each must be a constant if given
    let (Some(w), Some(r)) = (constant(inputs, 1), constant(inputs, 2)) else { return Ok(None) };
    let optional = |i: usize| match shapes.get(i) {
        Some(Some(_)) => constant(inputs, i).map(Some),
        _ => Some(None),
    };
    let (Some(b), Some(p)) = (optional(3), optional(7)) else { return Ok(None) };
    let acts = op.activations()?;
    let Dims { seq, batch, input, hidden: h, dirs } = dims;
    let gh = cell.gates() * h;
    let per_dir = acts.len() / dirs;
    let gru_split = matches!(cell, Cell::Gru { linear_before_reset: false });
    let lbr = matches!(cell, Cell::Gru { linear_before_reset: true });
    let plans = (0..dirs)
        .map(|d| {
            let wd = &w[d * gh * input..(d + 1) * gh * input];
            let rd = &r[d * gh * h..(d + 1) * gh * h];
            let (r, rh) = if gru_split {
                let zr = Recurrent::new(MatRef::new(&rd[..2 * h * h], 2 * h, h).t(), batch);
                (zr, Some(Recurrent::new(MatRef::new(&rd[2 * h * h..], h, h).t(), batch)))
            } else {
                (Recurrent::new(MatRef::new(rd, gh, h).t(), batch), None)
            };
            let (mut bias, mut recurrent_bias) = (Vec::new(), Vec::new());
            if let Some(b) = b {
                let (wb, rb) = b[d * 2 * gh..(d + 1) * 2 * gh].split_at(gh);
                bias = wb.iter().zip(rb).map(|(a, c)| a + c).collect();
                if lbr {
                    bias[2 * h..].copy_from_slice(&wb[2 * h..]);
                    recurrent_bias = vec![0.0; gh];
                    recurrent_bias[2 * h..].copy_from_slice(&rb[2 * h..]);
                }
            }
            let a = &acts[d * per_dir..(d + 1) * per_dir];
            let act = |i: usize| Act::new(a.get(i).copied().unwrap_or(Activation::Tanh));
            DirectionPlan {
                w: PackedB::new(gemm::selected(), MatRef::new(wd, gh, input).t()),
                r,
                rh,
                bias,
                recurrent_bias,
                peep: p.map(|p| p[d * 3 * h..(d + 1) * 3 * h].to_vec()).unwrap_or_default(),
                acts: [act(0), act(1), act(2)],
            }
        })
        .collect();
    let ncols = if gru_split { 2 * h } else { gh };
    let scratch = Scratch {
        xw: vec![0.0; seq * batch * gh],
        hr: vec![0.0; batch * ncols],
        gates: vec![0.0; batch * gh],
        h: vec![0.0; batch * h],
        c: vec![0.0; batch * h],
        rh: vec![0.0; if gru_split { batch * h } else { 0 }],
        hh: vec![0.0; if gru_split { batch * h } else { 0 }],
        lens: vec![seq; batch],
    };
    Ok(Some(RnnKernel {
        cell,
        dims,
        batch_first: attrs.batch_first,
        reverse: attrs.direction == Direction::Reverse,
        clip: attrs.clip,
        ncols,
        dirs: plans,
        scratch: Mutex::new(scratch),
    }))
}

/// Input `i` as f32 of the planned length, if given.
fn f32_input<'a>(inputs: &[Option<&'a Tensor>], i: usize, what: &str, len: usize) -> Result<Option<&'a [f32]>> {
    let Some(t) = opt_input(inputs, i) else { return Ok(None) };
    let s = t.as_slice::<f32>()?;
    if s.len() != len {
        return Err(Error::Shape(format!("{what} has shape {:?}, the plan expects {len} elements", t.shape())));
    }
    Ok(Some(s))
}

/// An output as f32 of the planned length.
fn output<'a>(t: &'a mut Tensor, what: &str, len: usize) -> Result<&'a mut [f32]> {
    let s = t.as_mut_slice::<f32>()?;
    if s.len() != len {
        return Err(Error::Shape(format!("{what} has {} elements, the plan expects {len}", s.len())));
    }
    Ok(s)
}

/// Reads `sequence_lens` (int32 or int64) into `lens`, each checked to be in `[0, seq]`.
fn read_lens(t: Option<&Tensor>, seq: usize, lens: &mut [usize]) -> Result<()> {
    fn fill<T: Element + Copy + Into<i64>>(t: &Tensor, seq: usize, lens: &mut [usize]) -> Result<()> {
        let v = t.as_slice::<T>()?;
        if v.len() != lens.len() {
            return Err(Error::Shape(format!("sequence_lens must have shape [{}], got {:?}", lens.len(), t.shape())));
        }
        for (l, &x) in lens.iter_mut().zip(v) {
            let x: i64 = x.into();
            if x < 0 || x as usize > seq {
                bail!("sequence_lens value {x} is outside [0, {seq}]");
            }
            *l = x as usize;
        }
        Ok(())
    }
    match t {
        None => {
            lens.fill(seq);
            Ok(())
        }
        Some(t) if t.dtype() == DType::I32 => fill::<i32>(t, seq, lens),
        Some(t) => fill::<i64>(t, seq, lens),
    }
}

/// `out[j] = a[j] + b[j]`.
#[inline]
fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = x + y);
}

/// `h = (1 - z) * cand + z * h`, the GRU update.
#[inline]
fn gru_update(h: &mut [f32], z: &[f32], cand: &[f32]) {
    h.iter_mut().zip(z.iter().zip(cand)).for_each(|(h, (&z, &c))| *h = (1.0 - z) * c + z * *h);
}

impl RnnKernel {
    /// The row of the input projection (and of X) for batch entry `bi` at time `t`.
    fn x_row(&self, t: usize, bi: usize) -> usize {
        let Dims { seq, batch, .. } = self.dims;
        if self.batch_first {
            bi * seq + t
        } else {
            t * batch + bi
        }
    }

    /// Where the state of batch entry `bi` in direction `d` sits in Y_h, Y_c and the
    /// initial states (`[dirs, batch, hidden]`, or `[batch, dirs, hidden]`).
    fn state_at(&self, d: usize, bi: usize) -> usize {
        let Dims { batch, hidden, dirs, .. } = self.dims;
        if self.batch_first {
            (bi * dirs + d) * hidden
        } else {
            (d * batch + bi) * hidden
        }
    }

    /// Where Y of batch entry `bi` in direction `d` at time `t` starts
    /// (`[seq, dirs, batch, hidden]`, or `[batch, seq, dirs, hidden]`).
    fn y_at(&self, t: usize, d: usize, bi: usize) -> usize {
        let Dims { seq, batch, hidden, dirs, .. } = self.dims;
        if self.batch_first {
            ((bi * seq + t) * dirs + d) * hidden
        } else {
            ((t * dirs + d) * batch + bi) * hidden
        }
    }

    /// One step of batch entry `bi`: reads its projection row `xr`, `H R^T` row `hr`
    /// (and `hh` for a split GRU), updates `h` (and `c`) in place; `g` is its gate scratch.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        dp: &DirectionPlan,
        xr: &[f32],
        hr: &[f32],
        hh: &[f32],
        g: &mut [f32],
        h: &mut [f32],
        c: &mut [f32],
    ) {
        let n = h.len();
        let clip = self.clip;
        let [f, gact, hact] = dp.acts;
        match self.cell {
            Cell::Rnn => {
                add(h, xr, hr);
                f.apply(clip, h);
            }
            Cell::Gru { linear_before_reset: true } => {
                let (zr, cand) = g.split_at_mut(2 * n);
                add(zr, &xr[..2 * n], &hr[..2 * n]);
                f.apply(clip, zr);
                let r = &zr[n..];
                cand.iter_mut()
                    .zip(xr[2 * n..].iter().zip(&hr[2 * n..]).zip(r))
                    .for_each(|(o, ((&x, &hv), &r))| *o = x + r * hv);
                gact.apply(clip, cand);
                gru_update(h, &zr[..n], cand);
            }
            Cell::Gru { linear_before_reset: false } => {
                // z is in g[..n] already (see `run_direction`); h~ = g(Xh + (r * H) Rh^T)
                let (z, rest) = g.split_at_mut(n);
                let cand = &mut rest[n..2 * n];
                add(cand, &xr[2 * n..], hh);
                gact.apply(clip, cand);
                gru_update(h, z, cand);
            }
            Cell::Lstm { input_forget } => {
                // gate order i, o, f, c
                add(g, xr, hr);
                let peep = !dp.peep.is_empty();
                if peep {
                    let (pi, pf) = (&dp.peep[..n], &dp.peep[2 * n..]);
                    let (i, rest) = g.split_at_mut(n);
                    let fg = &mut rest[n..2 * n];
                    for j in 0..n {
                        i[j] += pi[j] * c[j];
                        fg[j] += pf[j] * c[j];
                    }
                    f.apply(clip, &mut g[..n]);
                    if !input_forget {
                        f.apply(clip, &mut g[2 * n..3 * n]);
                    }
                } else {
                    // o does not depend on the new cell state: i, o, f at once
                    f.apply(clip, &mut g[..3 * n]);
                }
                if input_forget {
                    let (i, rest) = g.split_at_mut(n);
                    rest[n..2 * n].iter_mut().zip(&*i).for_each(|(fv, &iv)| *fv = 1.0 - iv);
                }
                gact.apply(clip, &mut g[3 * n..]);
                let (io, fc) = g.split_at_mut(2 * n);
                let (fg, cand) = fc.split_at_mut(n);
                c.iter_mut()
                    .zip(fg.iter().zip(&*cand).zip(&io[..n]))
                    .for_each(|(c, ((&fv, &cv), &iv))| *c = fv * *c + iv * cv);
                if peep {
                    let po = &dp.peep[n..2 * n];
                    io[n..].iter_mut().zip(po.iter().zip(&*c)).for_each(|(o, (&p, &cv))| *o += p * cv);
                    f.apply(clip, &mut io[n..]);
                }
                // H = o * h(C): h takes no clip, as in the reference
                cand.copy_from_slice(c);
                hact.apply(None, cand);
                h.iter_mut().zip(io[n..].iter().zip(&*cand)).for_each(|(h, (&o, &hc))| *h = o * hc);
            }
        }
    }

    /// Runs direction `d` over every step, writing its part of Y (if requested) and
    /// leaving the final states in `sc.h` / `sc.c`.
    fn run_direction(
        &self,
        d: usize,
        x: &[f32],
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
        sc: &mut Scratch,
        mut y: Option<&mut [f32]>,
    ) {
        let Dims { seq, batch, input, hidden: n, .. } = self.dims;
        let dp = &self.dirs[d];
        let gh = self.cell.gates() * n;
        let rev = self.reverse || d == 1;
        let bias = if dp.bias.is_empty() { Bias::None } else { Bias::Cols(&dp.bias) };
        gemm::sgemm_packed(
            1.0,
            MatRef::new(x, seq * batch, input),
            &dp.w,
            0.0,
            &mut sc.xw,
            &Epilogue { bias, ..Epilogue::NONE },
        );
        for bi in 0..batch {
            let at = self.state_at(d, bi);
            let hs = &mut sc.h[bi * n..(bi + 1) * n];
            match h0 {
                Some(v) => hs.copy_from_slice(&v[at..at + n]),
                None => hs.fill(0.0),
            }
            let cs = &mut sc.c[bi * n..(bi + 1) * n];
            match c0 {
                Some(v) => cs.copy_from_slice(&v[at..at + n]),
                None => cs.fill(0.0),
            }
        }
        let rbias = if dp.recurrent_bias.is_empty() { Bias::None } else { Bias::Cols(&dp.recurrent_bias) };
        let repi = Epilogue { bias: rbias, ..Epilogue::NONE };
        let ncols = self.ncols;
        let longest = sc.lens.iter().copied().max().unwrap_or(0);
        for s in 0..longest {
            dp.r.product(&sc.h, batch, &mut sc.hr, &repi);
            let time = |bi: usize| if rev { sc.lens[bi] - 1 - s } else { s };
            if let Some(rh) = &dp.rh {
                // GRU without linear_before_reset: z, r = f(...), then (r * H) Rh^T
                for bi in (0..batch).filter(|&bi| s < sc.lens[bi]) {
                    let xr = &sc.xw[self.x_row(time(bi), bi) * gh..][..2 * n];
                    let g = &mut sc.gates[bi * gh..][..2 * n];
                    add(g, xr, &sc.hr[bi * ncols..(bi + 1) * ncols]);
                    dp.acts[0].apply(self.clip, g);
                    let (r, hs) = (&g[n..], &sc.h[bi * n..(bi + 1) * n]);
                    sc.rh[bi * n..(bi + 1) * n].iter_mut().zip(r.iter().zip(hs)).for_each(|(o, (&r, &h))| *o = r * h);
                }
                rh.product(&sc.rh, batch, &mut sc.hh, &Epilogue::NONE);
            }
            for bi in 0..batch {
                if s >= sc.lens[bi] {
                    continue;
                }
                let t = time(bi);
                let xr = &sc.xw[self.x_row(t, bi) * gh..][..gh];
                let hr = &sc.hr[bi * ncols..(bi + 1) * ncols];
                let hh = if sc.hh.is_empty() { &[][..] } else { &sc.hh[bi * n..(bi + 1) * n] };
                let g = &mut sc.gates[bi * gh..(bi + 1) * gh];
                let hs = &mut sc.h[bi * n..(bi + 1) * n];
                let cs = &mut sc.c[bi * n..(bi + 1) * n];
                self.step(dp, xr, hr, hh, g, hs, cs);
                if let Some(y) = y.as_deref_mut() {
                    let at = self.y_at(t, d, bi);
                    y[at..at + n].copy_from_slice(hs);
                }
            }
        }
    }
}

impl Kernel for RnnKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let Dims { seq, batch, input, hidden, dirs } = self.dims;
        let x = f32_input(inputs, 0, "X", seq * batch * input)?
            .ok_or_else(|| Error::Invalid("missing input 0 (X)".into()))?;
        let state_len = dirs * batch * hidden;
        let h0 = f32_input(inputs, 5, "initial_h", state_len)?;
        let c0 = if let Cell::Lstm { .. } = self.cell { f32_input(inputs, 6, "initial_c", state_len)? } else { None };
        let mut guard = self.scratch.lock().map_err(|_| Error::Invalid("RNN scratch poisoned".into()))?;
        let sc = &mut *guard;
        read_lens(opt_input(inputs, 4), seq, &mut sc.lens)?;
        // any prefix of Y, Y_h, Y_c may be requested
        let mut outs = outputs.iter_mut();
        let mut y = outs.next().map(|t| output(t, "Y", seq * state_len)).transpose()?;
        let mut yh = outs.next().map(|t| output(t, "Y_h", state_len)).transpose()?;
        let mut yc = outs.next().map(|t| output(t, "Y_c", state_len)).transpose()?;
        if let Some(y) = y.as_deref_mut() {
            // steps past a sequence's length are never written
            if sc.lens.iter().any(|&l| l < seq) {
                y.fill(0.0);
            }
        }
        for d in 0..dirs {
            self.run_direction(d, x, h0, c0, sc, y.as_deref_mut());
            for bi in 0..batch {
                // an empty sequence has no last step: its final state is zero
                let empty = sc.lens[bi] == 0;
                let at = self.state_at(d, bi);
                for (out, state) in [(yh.as_deref_mut(), &sc.h), (yc.as_deref_mut(), &sc.c)] {
                    if let Some(out) = out {
                        let dst = &mut out[at..at + hidden];
                        if empty {
                            dst.fill(0.0);
                        } else {
                            dst.copy_from_slice(&state[bi * hidden..(bi + 1) * hidden]);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::RnnAttrs;
    use super::*;
    use crate::ops::{EvalCtx, OpImpl};
    use crate::shape::{Fact, Shape};

    /// Deterministic values in [-scale, scale) (xorshift; no test-only dependencies).
    struct Rng(u64);

    impl Rng {
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
                })
                .collect()
        }
    }

    /// One problem: the sizes and which optional inputs and attributes it has.
    #[derive(Clone, Debug)]
    struct Case {
        op: RnnOp,
        seq: usize,
        batch: usize,
        input: usize,
        hidden: usize,
        bias: bool,
        init: bool,
        /// `sequence_lens`, as int64 if `wide`.
        lens: Option<(Vec<i64>, bool)>,
        peep: bool,
        n_out: usize,
    }

    fn op(
        cell: Cell,
        direction: Direction,
        batch_first: bool,
        clip: Option<f32>,
        activations: Vec<Activation>,
    ) -> RnnOp {
        let attrs = RnnAttrs { hidden_size: None, direction, activations, clip, batch_first };
        match cell {
            Cell::Rnn => RnnOp::Rnn(attrs),
            Cell::Gru { linear_before_reset } => RnnOp::Gru { attrs, linear_before_reset },
            Cell::Lstm { input_forget } => RnnOp::Lstm { attrs, input_forget },
        }
    }

    /// The inputs of `case` in ONNX order (`None` = omitted).
    fn inputs(case: &Case, rng: &mut Rng) -> Vec<Option<Tensor>> {
        let (attrs, cell) = case.op.parts();
        let Case { seq, batch, input, hidden: h, .. } = *case;
        let dirs = attrs.direction.count();
        let gh = cell.gates() * h;
        let t = |shape: &[usize], v: Vec<f32>| Some(Tensor::from_vec(shape, v).unwrap());
        let x_shape = if attrs.batch_first { [batch, seq, input] } else { [seq, batch, input] };
        let state = if attrs.batch_first { [batch, dirs, h] } else { [dirs, batch, h] };
        let mut ins = vec![
            t(&x_shape, rng.vec(seq * batch * input, 1.5)),
            t(&[dirs, gh, input], rng.vec(dirs * gh * input, 0.6)),
            t(&[dirs, gh, h], rng.vec(dirs * gh * h, 0.6)),
            if case.bias { t(&[dirs, 2 * gh], rng.vec(dirs * 2 * gh, 0.5)) } else { None },
            case.lens.as_ref().map(|(l, wide)| {
                if *wide {
                    Tensor::from_slice(&[batch], l).unwrap()
                } else {
                    Tensor::from_vec(&[batch], l.iter().map(|&v| v as i32).collect()).unwrap()
                }
            }),
            if case.init { t(&state, rng.vec(dirs * batch * h, 1.0)) } else { None },
        ];
        if let Cell::Lstm { .. } = cell {
            ins.push(if case.init { t(&state, rng.vec(dirs * batch * h, 1.0)) } else { None });
            ins.push(if case.peep { t(&[dirs, 3 * h], rng.vec(dirs * 3 * h, 0.5)) } else { None });
        }
        while ins.last().is_some_and(|i| i.is_none()) {
            ins.pop();
        }
        ins
    }

    /// What the planner hands `kernel`: W, R, B and P are constants, the rest only facts.
    fn infer_inputs<'a>(ins: &'a [Option<Tensor>], facts: &'a [Fact], unknown: &'a Fact) -> Vec<InferInput<'a>> {
        ins.iter()
            .zip(facts)
            .enumerate()
            .map(|(i, (t, f))| match t {
                Some(t) => InferInput { fact: f, value: [1, 2, 3, 7].contains(&i).then_some(t) },
                None => InferInput { fact: unknown, value: None },
            })
            .collect()
    }

    fn facts(ins: &[Option<Tensor>]) -> Vec<Fact> {
        ins.iter()
            .map(|t| t.as_ref().map_or_else(Fact::unknown, |t| Fact::new(t.dtype(), Shape::fixed(t.shape()))))
            .collect()
    }

    fn prepared(op: &RnnOp, ins: &[Option<Tensor>], n_out: usize) -> Option<RnnKernel> {
        let (facts, unknown) = (facts(ins), Fact::unknown());
        prepare(op, &infer_inputs(ins, &facts, &unknown), n_out).unwrap()
    }

    /// Runs the prepared kernel (outputs start as NaN, so every element must be
    /// written) and `eval` on the same inputs, and compares them.
    fn run_and_compare(kernel: &RnnKernel, case: &Case, ins: &[Option<Tensor>], what: &str) {
        let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
        let want = case.op.eval(&EvalCtx { n_outputs: case.n_out }, &refs).unwrap();
        let mut got: Vec<Tensor> =
            want.iter().map(|w| Tensor::from_vec(w.shape(), vec![f32::NAN; w.numel()]).unwrap()).collect();
        kernel.run(&refs, &mut got).unwrap();
        assert_eq!(got.len(), case.n_out);
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{what}: output {o}[{i}] = {a}, eval gives {b}\n{case:?}"
                );
            }
        }
    }

    fn check(case: &Case, seed: u64) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let ins = inputs(case, &mut rng);
        let kernel = prepared(&case.op, &ins, case.n_out).unwrap_or_else(|| panic!("no kernel for {case:?}"));
        run_and_compare(&kernel, case, &ins, "first run");
        // a second run with other runtime inputs (X, states) reuses the scratch
        let mut again = inputs(case, &mut rng);
        for i in [1, 2, 3, 7] {
            if i < again.len() {
                again[i] = ins[i].clone();
            }
        }
        run_and_compare(&kernel, case, &again, "second run");
    }

    const CELLS: [Cell; 5] = [
        Cell::Rnn,
        Cell::Gru { linear_before_reset: false },
        Cell::Gru { linear_before_reset: true },
        Cell::Lstm { input_forget: false },
        Cell::Lstm { input_forget: true },
    ];
    const DIRECTIONS: [Direction; 3] = [Direction::Forward, Direction::Reverse, Direction::Bidirectional];

    #[test]
    fn prepared_kernel_matches_eval_for_every_cell_direction_layout_and_optional_input() {
        let mut seed = 0;
        for cell in CELLS {
            let n_outputs = if let Cell::Lstm { .. } = cell { 3 } else { 2 };
            for direction in DIRECTIONS {
                for batch_first in [false, true] {
                    for variant in 0..32u32 {
                        let bit = |b: u32| variant & (1 << b) != 0;
                        let peep = bit(3);
                        if peep && !matches!(cell, Cell::Lstm { .. }) {
                            continue;
                        }
                        seed += 1;
                        let case = Case {
                            op: op(cell, direction, batch_first, bit(4).then_some(0.8), Vec::new()),
                            seq: 5,
                            batch: 3,
                            input: 4,
                            hidden: 5,
                            bias: bit(0),
                            init: bit(1),
                            // one full sequence, one empty, one shorter
                            lens: bit(2).then(|| (vec![5, 0, 3], seed % 2 == 0)),
                            peep,
                            n_out: 1 + (seed as usize % n_outputs),
                        };
                        check(&case, seed);
                    }
                }
            }
        }
    }

    #[test]
    fn one_and_many_batch_rows_match_eval_on_either_recurrent_path() {
        // batch 1 (few-rows tiles, or plain rows of R^T on a kernel without them) and
        // batch 7 (> SKINNY_ROWS: packed panels through the blocked driver)
        let mut seed = 1000;
        for cell in CELLS {
            for direction in DIRECTIONS {
                for (batch, lens) in [(1, vec![4]), (7, vec![7, 1, 0, 7, 3, 6, 2])] {
                    seed += 1;
                    let case = Case {
                        op: op(cell, direction, seed % 2 == 0, None, Vec::new()),
                        seq: 7,
                        batch,
                        input: 3,
                        hidden: 9,
                        bias: true,
                        init: true,
                        lens: Some((lens, true)),
                        peep: matches!(cell, Cell::Lstm { .. }),
                        n_out: if let Cell::Lstm { .. } = cell { 3 } else { 2 },
                    };
                    check(&case, seed);
                }
            }
        }
    }

    #[test]
    fn activations_without_a_vector_path_and_clip_match_eval() {
        let names = ["Relu", "LeakyRelu", "HardSigmoid", "Affine", "ScaledTanh", "Elu", "Softsign", "Softplus"];
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut seed = 2000;
        for cell in CELLS {
            let per_dir = cell.default_activations().len();
            for direction in DIRECTIONS {
                for clip in [None, Some(0.7)] {
                    seed += 1;
                    let dirs = direction.count();
                    // a different activation per slot, cycling through the list
                    let picked: Vec<String> =
                        (0..per_dir * dirs).map(|i| names[(seed as usize + i) % names.len()].clone()).collect();
                    let acts = Activation::parse_list(&picked, &[0.3, 0.7, 1.2], &[0.1, 0.4]).unwrap();
                    let case = Case {
                        op: op(cell, direction, false, clip, acts),
                        seq: 4,
                        batch: 2,
                        input: 3,
                        hidden: 4,
                        bias: true,
                        init: true,
                        lens: Some((vec![4, 2], false)),
                        peep: matches!(cell, Cell::Lstm { .. }),
                        n_out: if let Cell::Lstm { .. } = cell { 3 } else { 2 },
                    };
                    check(&case, seed);
                }
            }
        }
    }

    #[test]
    fn runs_reuse_the_scratch_sized_at_plan_time() {
        let case = Case {
            op: op(Cell::Lstm { input_forget: false }, Direction::Bidirectional, true, None, Vec::new()),
            seq: 6,
            batch: 2,
            input: 3,
            hidden: 4,
            bias: true,
            init: true,
            lens: Some((vec![6, 3], true)),
            peep: true,
            n_out: 3,
        };
        let ins = inputs(&case, &mut Rng(7));
        let kernel = prepared(&case.op, &ins, 3).unwrap();
        let buffers = |k: &RnnKernel| {
            let sc = k.scratch.lock().unwrap();
            [&sc.xw, &sc.hr, &sc.gates, &sc.h, &sc.c].map(|v| (v.as_ptr(), v.capacity()))
        };
        let before = buffers(&kernel);
        for _ in 0..3 {
            run_and_compare(&kernel, &case, &ins, "repeated run");
        }
        assert_eq!(buffers(&kernel), before, "a run reallocated the scratch");
    }

    #[test]
    fn no_kernel_without_constant_weights_or_for_other_dtypes() {
        let case = Case {
            op: op(Cell::Gru { linear_before_reset: true }, Direction::Forward, false, None, Vec::new()),
            seq: 3,
            batch: 1,
            input: 2,
            hidden: 3,
            bias: true,
            init: false,
            lens: None,
            peep: false,
            n_out: 2,
        };
        let ins = inputs(&case, &mut Rng(3));
        let (facts, unknown) = (facts(&ins), Fact::unknown());
        let mut infer = infer_inputs(&ins, &facts, &unknown);
        assert!(prepare(&case.op, &infer, 2).unwrap().is_some());
        // B known only at run time
        infer[3].value = None;
        assert!(prepare(&case.op, &infer, 2).unwrap().is_none());
        // R known only at run time
        let mut infer = infer_inputs(&ins, &facts, &unknown);
        infer[2].value = None;
        assert!(prepare(&case.op, &infer, 2).unwrap().is_none());
        // f64 X
        let infer = infer_inputs(&ins, &facts, &unknown);
        let f64_fact = Fact::new(DType::F64, Shape::fixed(&[3, 1, 2]));
        let mut f64_infer = infer.clone();
        f64_infer[0].fact = &f64_fact;
        assert!(prepare(&case.op, &f64_infer, 2).unwrap().is_none());
        // more outputs than the op has: eval reports it
        assert!(prepare(&case.op, &infer, 3).unwrap().is_none());
    }

    #[test]
    fn a_bad_shape_is_reported_at_plan_time_as_eval_reports_it() {
        let case = Case {
            op: op(Cell::Lstm { input_forget: false }, Direction::Forward, false, None, Vec::new()),
            seq: 3,
            batch: 2,
            input: 2,
            hidden: 3,
            bias: true,
            init: true,
            lens: None,
            peep: true,
            n_out: 3,
        };
        let mut ins = inputs(&case, &mut Rng(5));
        ins[7] = Some(Tensor::from_vec(&[1, 8], vec![0.0f32; 8]).unwrap());
        let (facts, unknown) = (facts(&ins), Fact::unknown());
        let planned = prepare(&case.op, &infer_inputs(&ins, &facts, &unknown), 3).err().unwrap();
        let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
        let evaluated = case.op.eval(&EvalCtx { n_outputs: 3 }, &refs).unwrap_err();
        assert_eq!(planned.to_string(), evaluated.to_string());
        assert!(planned.to_string().contains("P must have shape [1, 9]"), "{planned}");
    }

    #[test]
    fn out_of_range_sequence_lens_is_an_error_at_run_time() {
        let case = Case {
            op: op(Cell::Rnn, Direction::Forward, false, None, Vec::new()),
            seq: 3,
            batch: 2,
            input: 2,
            hidden: 3,
            bias: false,
            init: false,
            lens: Some((vec![3, 4], true)),
            peep: false,
            n_out: 2,
        };
        let ins = inputs(&case, &mut Rng(9));
        let kernel = prepared(&case.op, &ins, 2).unwrap();
        let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
        let mut outs =
            vec![Tensor::zeros(DType::F32, &[3, 1, 2, 3]).unwrap(), Tensor::zeros(DType::F32, &[1, 2, 3]).unwrap()];
        let e = kernel.run(&refs, &mut outs).unwrap_err();
        assert!(e.to_string().contains("sequence_lens value 4 is outside [0, 3]"), "{e}");
    }
}
