//! `floe::LMUMemory`: the linear memory of a Legendre Memory Unit, the LTI system
//! `m_t = Ā m_{t-1} + B̄ u_t` run over the time axis of `u` `[B, T, du]`, one memory of
//! `order` Legendre coefficients per input channel.
//!
//! Why a custom op: the parallel LMU (LMUFormer) exports as an FFT over a complex
//! constant or an unrolled Loop, and Ā cannot be recovered reliably from either
//! (ALGORITHMS.md 4.3). The op carries the four numbers that define the memory, and
//! the engine rebuilds Ā and B̄ from them.
//!
//! Math (ALGORITHMS.md 3.1-3.2; Voelker et al. 2019, the [d-1/d] Padé approximant of a
//! delay of `theta`):
//! - `A_ij = (2i+1)/θ · (-1 if i < j else (-1)^(i-j+1))`, `B_i = (2i+1)/θ · (-1)^i`.
//! - zoh: `[[Ā, B̄], [0, 1]] = expm([[A dt, B dt], [0, 0]])` (as scipy's cont2discrete and
//!   KerasLMU's `_cont2discrete_zoh`); euler: `Ā = I + A dt`, `B̄ = B dt`.
//!   Both in f64 ([`expm`]: scaling and squaring with the degree-13 Padé approximant,
//!   Higham 2005), cast to f32 once per distinct attribute set ([`tables`]).
//!
//! Evaluation: one frame (`T = 1`, the streaming step) is the recurrence, an
//! `[B·du, d] x [d, d]` product per step whatever came before. Longer inputs run in
//! chunks of `L` frames: the zero-state response of a chunk is the causal Toeplitz
//! product `Toe(u) [L, L] @ H [L, d]` with the impulse response `H[j] = Ā^j B̄`, and the
//! state entering the chunk adds `Ā^{i+1} s` to row `i`, one product of the states by
//! the stacked powers `[Ā^1 .. Ā^L]^T` (`L` is chosen so those stay within 1 MiB). Both
//! are GEMMs with no step-to-step dependency inside a chunk; the last row of a chunk is
//! the state of the next one, so results do not depend on how a stream is split
//! (up to f32 rounding). A sequence without initial state starts with one longer
//! Toeplitz segment (up to `2d` frames, no powers needed): a whole utterance of
//! LMUFormer (T = 128, d = 256) is then a single GEMM. FFT is not used: it would cost
//! `O(T log T)` per coefficient but bring an FFT into the runtime for sizes where the
//! GEMM already wins.

use super::{fixed_shape, input, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, unsupported};
use floe_kernels::gemm::{sgemm, MatRef};
use std::sync::{Arc, Mutex, OnceLock};

/// How the continuous system is discretised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Discretizer {
    /// Zero-order hold (exact for piecewise-constant input): the LMUFormer default.
    Zoh,
    /// Forward Euler; KerasLMU recommends `theta > 4 * order` with it.
    Euler,
}

/// `floe::LMUMemory` attributes. Inputs: `u` `[B, T, du]`, optional `initial_state`
/// `[B, du * order]`. Outputs: `m` `[B, T, du * order]` (channel `c` at
/// `c * order .. (c + 1) * order`), optional `final_state` `[B, du * order]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmuMemoryOp {
    /// Memory order `d` (Legendre coefficients per input channel), >= 1.
    pub order: usize,
    /// Window length in frames, > 0.
    pub theta: f32,
    pub discretizer: Discretizer,
    /// Time step in frames, > 0 (1 in LMUFormer).
    pub dt: f32,
}

impl LmuMemoryOp {
    /// Refuses attributes that define no stable memory.
    pub fn validate(&self) -> Result<()> {
        if self.order == 0 {
            bail!("LMUMemory order must be >= 1, got 0");
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            bail!("LMUMemory theta must be finite and > 0, got {}", self.theta);
        }
        if !(self.dt.is_finite() && self.dt > 0.0) {
            bail!("LMUMemory dt must be finite and > 0, got {}", self.dt);
        }
        Ok(())
    }
}

/// Row-major `n x n` product in f64.
fn mm(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..n {
            let av = a[i * n + p];
            if av != 0.0 {
                for (cv, &bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *cv += av * bv;
                }
            }
        }
    }
    c
}

/// Solves `P X = Q` (`n x n` each) by Gaussian elimination with partial pivoting.
fn solve(mut p: Vec<f64>, mut q: Vec<f64>, n: usize) -> Vec<f64> {
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| p[i * n + c].abs().total_cmp(&p[j * n + c].abs())).unwrap_or(c);
        if piv != c {
            for k in 0..n {
                p.swap(piv * n + k, c * n + k);
                q.swap(piv * n + k, c * n + k);
            }
        }
        let d = p[c * n + c];
        for i in c + 1..n {
            let f = p[i * n + c] / d;
            if f != 0.0 {
                for k in c..n {
                    p[i * n + k] -= f * p[c * n + k];
                }
                for k in 0..n {
                    q[i * n + k] -= f * q[c * n + k];
                }
            }
        }
    }
    for c in (0..n).rev() {
        let d = p[c * n + c];
        for k in 0..n {
            let mut v = q[c * n + k];
            for j in c + 1..n {
                v -= p[c * n + j] * q[j * n + k];
            }
            q[c * n + k] = v / d;
        }
    }
    q
}

/// The matrix exponential of a row-major `n x n` f64 matrix: scaling and squaring with
/// the [13/13] Padé approximant (Higham, "The scaling and squaring method for the
/// matrix exponential revisited", SIAM J. Matrix Anal. Appl. 2005, Algorithm 2.3).
pub fn expm(m: &[f64], n: usize) -> Vec<f64> {
    const B: [f64; 14] = [
        64764752532480000.0,
        32382376266240000.0,
        7771770303897600.0,
        1187353796428800.0,
        129060195264000.0,
        10559470521600.0,
        670442572800.0,
        33522128640.0,
        1323241920.0,
        40840800.0,
        960960.0,
        16380.0,
        182.0,
        1.0,
    ];
    const THETA13: f64 = 5.371920351148152;
    let norm = (0..n).map(|j| (0..n).map(|i| m[i * n + j].abs()).sum::<f64>()).fold(0.0, f64::max);
    let s = if norm > THETA13 { (norm / THETA13).log2().ceil() as i32 } else { 0 };
    let scale = 0.5f64.powi(s);
    let a: Vec<f64> = m.iter().map(|v| v * scale).collect();
    let a2 = mm(&a, &a, n);
    let a4 = mm(&a2, &a2, n);
    let a6 = mm(&a4, &a2, n);
    // c0 a6 + c1 a4 + c2 a2 + c3 I
    let lin = |c: [f64; 4]| -> Vec<f64> {
        let mut r: Vec<f64> = (0..n * n).map(|i| c[0] * a6[i] + c[1] * a4[i] + c[2] * a2[i]).collect();
        for i in 0..n {
            r[i * n + i] += c[3];
        }
        r
    };
    let mut ui = mm(&a6, &lin([B[13], B[11], B[9], 0.0]), n);
    for (x, y) in ui.iter_mut().zip(lin([B[7], B[5], B[3], B[1]])) {
        *x += y;
    }
    let u = mm(&a, &ui, n);
    let mut v = mm(&a6, &lin([B[12], B[10], B[8], 0.0]), n);
    for (x, y) in v.iter_mut().zip(lin([B[6], B[4], B[2], B[0]])) {
        *x += y;
    }
    let p: Vec<f64> = v.iter().zip(&u).map(|(v, u)| v - u).collect();
    let q: Vec<f64> = v.iter().zip(&u).map(|(v, u)| v + u).collect();
    let mut r = solve(p, q, n);
    for _ in 0..s {
        r = mm(&r, &r, n);
    }
    r
}

/// The continuous `(A, B)` of ALGORITHMS.md 3.1 with `1/θ` folded in (row-major `d x d`, `d`).
pub fn continuous(order: usize, theta: f64) -> (Vec<f64>, Vec<f64>) {
    let d = order;
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d];
    for i in 0..d {
        let r = (2 * i + 1) as f64 / theta;
        for j in 0..d {
            let sign = if i < j || (i - j).is_multiple_of(2) { -1.0 } else { 1.0 };
            a[i * d + j] = r * sign;
        }
        b[i] = if i.is_multiple_of(2) { r } else { -r };
    }
    (a, b)
}

/// The discrete `(Ā, B̄)` in f64 (row-major `d x d`, `d`).
pub fn discrete(op: &LmuMemoryOp) -> (Vec<f64>, Vec<f64>) {
    let d = op.order;
    let dt = op.dt as f64;
    let (a, b) = continuous(d, op.theta as f64);
    match op.discretizer {
        Discretizer::Euler => {
            let mut ab: Vec<f64> = a.iter().map(|v| v * dt).collect();
            for i in 0..d {
                ab[i * d + i] += 1.0;
            }
            (ab, b.iter().map(|v| v * dt).collect())
        }
        Discretizer::Zoh => {
            let n = d + 1;
            let mut m = vec![0.0; n * n];
            for i in 0..d {
                for j in 0..d {
                    m[i * n + j] = a[i * d + j] * dt;
                }
                m[i * n + d] = b[i] * dt;
            }
            let e = expm(&m, n);
            let ab = (0..d * d).map(|k| e[(k / d) * n + k % d]).collect();
            let bb = (0..d).map(|i| e[i * n + d]).collect();
            (ab, bb)
        }
    }
}

/// Floats the stacked powers of Ā may take (1 MiB); sets the chunk length.
const POWERS_BUDGET: usize = 1 << 18;
/// Longest chunk (the Toeplitz block grows as `L^2`).
const MAX_CHUNK: usize = 64;
/// Longest zero-state segment (see [`LmuTables::h_rows`]).
const MAX_SEGMENT: usize = 512;

/// The f32 tables of one attribute set, computed once (see [`tables`]).
#[derive(Debug)]
pub struct LmuTables {
    pub order: usize,
    /// Chunk length `L` once a state is carried.
    pub chunk: usize,
    /// Rows of `h`, the longest segment run from a zero state (no initial state):
    /// one Toeplitz product of `h_rows^2 d` multiply-adds in place of the
    /// recurrence's `h_rows d^2`, so up to `2d` frames (at most [`MAX_SEGMENT`]).
    pub h_rows: usize,
    /// `Ā^T`, `d x d` (the recurrence multiplies states from the left).
    pub a_t: Vec<f32>,
    /// `B̄`, `d`.
    pub b: Vec<f32>,
    /// Impulse response, `h_rows x d`: row `j` is `Ā^j B̄`.
    pub h: Vec<f32>,
    /// Stacked powers, `d x (L d)`: `q[p, i d + k] = (Ā^{i+1})[k, p]`.
    pub q: Vec<f32>,
}

impl LmuTables {
    /// Computes the tables of `op` (f64, then cast).
    pub fn new(op: &LmuMemoryOp) -> Result<LmuTables> {
        op.validate()?;
        let d = op.order;
        let chunk = (POWERS_BUDGET / (d * d)).clamp(1, MAX_CHUNK);
        let h_rows = (2 * d).clamp(chunk, MAX_SEGMENT.max(chunk));
        let (ab, bb) = discrete(op);
        let mut a_t = vec![0.0f32; d * d];
        for i in 0..d {
            for j in 0..d {
                a_t[j * d + i] = ab[i * d + j] as f32;
            }
        }
        let mut h = Vec::with_capacity(h_rows * d);
        let mut x = bb.clone();
        for _ in 0..h_rows {
            h.extend(x.iter().map(|&v| v as f32));
            x = (0..d).map(|i| (0..d).map(|j| ab[i * d + j] * x[j]).sum()).collect();
        }
        let w = chunk * d;
        let mut q = vec![0.0f32; d * w];
        let mut pw = ab.clone();
        for i in 0..chunk {
            for k in 0..d {
                for p in 0..d {
                    q[p * w + i * d + k] = pw[k * d + p] as f32;
                }
            }
            if i + 1 < chunk {
                pw = mm(&pw, &ab, d);
            }
        }
        Ok(LmuTables { order: d, chunk, h_rows, a_t, b: bb.iter().map(|&v| v as f32).collect(), h, q })
    }
}

/// The tables of `op`, from a small process-wide cache: an attribute set is
/// discretised once, however many nodes, plans or `eval` calls use it.
pub fn tables(op: &LmuMemoryOp) -> Result<Arc<LmuTables>> {
    type Key = (usize, u32, Discretizer, u32);
    type Cache = Mutex<Vec<(Key, Arc<LmuTables>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (op.order, op.theta.to_bits(), op.discretizer, op.dt.to_bits());
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    if let Some((_, t)) =
        cache.lock().map_err(|_| Error::Invalid("LMU table cache poisoned".into()))?.iter().find(|(k, _)| *k == key)
    {
        return Ok(t.clone());
    }
    let t = Arc::new(LmuTables::new(op)?);
    let mut c = cache.lock().map_err(|_| Error::Invalid("LMU table cache poisoned".into()))?;
    if c.len() >= 16 {
        c.remove(0);
    }
    c.push((key, t.clone()));
    Ok(t)
}

/// Buffers of one call, kept by a kernel across runs.
#[derive(Debug, Default)]
pub struct Scratch {
    toe: Vec<f32>,
    y: Vec<f32>,
    z: Vec<f32>,
    s: Vec<f32>,
}

/// Runs the memory over `u` `[batch, t, du]` from `init` (`[batch, du * d]`, zeros if
/// `None`), writing `m` `[batch, t, du * d]` and leaving the final state in
/// `final_state` when given.
pub fn lmu_memory(
    tb: &LmuTables,
    u: &[f32],
    (batch, t, du): (usize, usize, usize),
    init: Option<&[f32]>,
    m: &mut [f32],
    final_state: Option<&mut [f32]>,
    sc: &mut Scratch,
) -> Result<()> {
    let d = tb.order;
    let bc = batch * du;
    if u.len() != bc * t || m.len() != bc * t * d || init.is_some_and(|s| s.len() != bc * d) {
        return Err(Error::Shape(format!(
            "LMUMemory: u has {} values, m {}, initial_state {:?} for [B={batch}, T={t}, du={du}] and order {d}",
            u.len(),
            m.len(),
            init.map(|s| s.len())
        )));
    }
    // state rows are channels r = b * du + c, the layout of `[B, du * d]`
    sc.s.clear();
    match init {
        Some(s) => sc.s.extend_from_slice(s),
        None => sc.s.resize(bc * d, 0.0),
    }
    let mut has_state = init.is_some();
    let u_at = |r: usize, ti: usize| u[((r / du) * t + ti) * du + r % du];
    let row = |r: usize, ti: usize| ((r / du) * t + ti) * du + r % du;
    if t == 1 {
        // the streaming step: m = s Ā^T + u B̄, an order x order product per channel
        sc.y.resize(bc * d, 0.0);
        sgemm(1.0, MatRef::new(&sc.s, bc, d), MatRef::new(&tb.a_t, d, d), 0.0, &mut sc.y);
        for r in 0..bc {
            let uv = u_at(r, 0);
            let dst = &mut m[row(r, 0) * d..][..d];
            for ((o, &y), &b) in dst.iter_mut().zip(&sc.y[r * d..(r + 1) * d]).zip(&tb.b) {
                *o = y + uv * b;
            }
            sc.s[r * d..(r + 1) * d].copy_from_slice(dst);
        }
    } else {
        let lmax = tb.chunk;
        // the first segment's Toeplitz block stays within 16 MiB of scratch
        let first = tb.h_rows.min(((1usize << 22) / bc.max(1)).isqrt()).max(lmax);
        let mut t0 = 0;
        while t0 < t {
            // from a zero state the first segment may be longer: it needs no powers of Ā
            let l = if has_state { lmax } else { first }.min(t - t0);
            // zero-state response: Toe [bc * l, l] @ H [l, d]
            sc.toe.clear();
            sc.toe.resize(bc * l * l, 0.0);
            for r in 0..bc {
                for i in 0..l {
                    let dst = &mut sc.toe[(r * l + i) * l..][..l];
                    for (j, v) in dst[..=i].iter_mut().enumerate() {
                        *v = u_at(r, t0 + i - j);
                    }
                }
            }
            sc.y.resize(bc * l * d, 0.0);
            sgemm(
                1.0,
                MatRef::new(&sc.toe, bc * l, l),
                MatRef::new(&tb.h[..l * d], l, d),
                0.0,
                &mut sc.y[..bc * l * d],
            );
            if has_state {
                // Ā^{i+1} s for each row i: s [bc, d] @ [Ā^1 .. Ā^l]^T [d, l d]
                sc.z.resize(bc * l * d, 0.0);
                let q = MatRef { data: &tb.q, rows: d, cols: l * d, row_stride: lmax * d, col_stride: 1 };
                sgemm(1.0, MatRef::new(&sc.s, bc, d), q, 0.0, &mut sc.z[..bc * l * d]);
                for (y, &z) in sc.y[..bc * l * d].iter_mut().zip(&sc.z) {
                    *y += z;
                }
            }
            for r in 0..bc {
                for i in 0..l {
                    m[row(r, t0 + i) * d..][..d].copy_from_slice(&sc.y[(r * l + i) * d..][..d]);
                }
                sc.s[r * d..(r + 1) * d].copy_from_slice(&sc.y[(r * l + l - 1) * d..][..d]);
            }
            has_state = true;
            t0 += l;
        }
    }
    if let Some(f) = final_state {
        if f.len() != bc * d {
            return Err(Error::Shape(format!("LMUMemory: final_state has {} values, expected {}", f.len(), bc * d)));
        }
        f.copy_from_slice(&sc.s);
    }
    Ok(())
}

/// `[B, T, du]` of `u`, checked.
fn dims(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *shape {
        [b, t, du] => Ok((b, t, du)),
        _ => Err(Error::Shape(format!("LMUMemory: u must be [B, T, du], got {shape:?}"))),
    }
}

/// The prepared f32 kernel: tables shared from the cache, scratch kept across runs.
struct LmuKernel {
    tables: Arc<LmuTables>,
    dims: (usize, usize, usize),
    scratch: Mutex<Scratch>,
}

impl Kernel for LmuKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let u = input(inputs, 0, "u")?.as_slice::<f32>()?;
        let init = opt_input(inputs, 1).map(|t| t.as_slice::<f32>()).transpose()?;
        let mut sc = self.scratch.lock().map_err(|_| Error::Invalid("LMUMemory scratch poisoned".into()))?;
        let (m, rest) = outputs.split_first_mut().ok_or_else(|| Error::Invalid("LMUMemory has no output".into()))?;
        let fin = match rest.first_mut() {
            Some(f) => Some(f.as_mut_slice::<f32>()?),
            None => None,
        };
        lmu_memory(&self.tables, u, self.dims, init, m.as_mut_slice::<f32>()?, fin, &mut sc)
    }
}

impl OpImpl for LmuMemoryOp {
    fn name(&self) -> &'static str {
        "LMUMemory"
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let width = |du: &Dim| match du {
            Dim::Fixed(v) => Dim::Fixed(v * self.order),
            _ => Dim::Unknown,
        };
        let shapes = x.shape.as_ref().filter(|s| s.rank() == 3).map(|s| {
            let w = width(&s.0[2]);
            (Shape(vec![s.0[0].clone(), s.0[1].clone(), w.clone()]), Shape(vec![s.0[0].clone(), w]))
        });
        Ok((0..n)
            .map(|i| Fact {
                dtype: x.dtype,
                shape: shapes.as_ref().map(|(m, f)| if i == 0 { m.clone() } else { f.clone() }),
            })
            .collect())
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if ctx.n_outputs > 2 {
            bail!("LMUMemory has at most 2 outputs, the node declares {}", ctx.n_outputs);
        }
        let u = input(inputs, 0, "u")?;
        if u.dtype() != DType::F32 {
            unsupported!("LMUMemory on {} input (f32 only)", u.dtype());
        }
        let (b, t, du) = dims(u.shape())?;
        let d = self.order;
        let init = match opt_input(inputs, 1) {
            Some(s) if s.shape() != [b, du * d] => {
                return Err(Error::Shape(format!(
                    "LMUMemory: initial_state must be [{b}, {}], got {:?}",
                    du * d,
                    s.shape()
                )))
            }
            Some(s) => Some(s.cast(DType::F32)?),
            None => None,
        };
        let tb = tables(self)?;
        let mut m = Tensor::zeros(DType::F32, &[b, t, du * d])?;
        let mut f = Tensor::zeros(DType::F32, &[b, du * d])?;
        let init_s = init.as_ref().map(|s| s.as_slice::<f32>()).transpose()?;
        lmu_memory(
            &tb,
            u.as_slice::<f32>()?,
            (b, t, du),
            init_s,
            m.as_mut_slice::<f32>()?,
            Some(f.as_mut_slice::<f32>()?),
            &mut Scratch::default(),
        )?;
        Ok([m, f].into_iter().take(ctx.n_outputs.max(1)).collect())
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        let Some(u) = inputs.first() else { return Ok(None) };
        if u.fact.dtype != Some(DType::F32) {
            return Ok(None);
        }
        let Some(shape) = fixed_shape(u) else { return Ok(None) };
        let dims = dims(&shape)?;
        if inputs.get(1).is_some_and(|s| s.fact.dtype.is_some_and(|d| d != DType::F32)) {
            return Ok(None);
        }
        Ok(Some(Box::new(LmuKernel { tables: tables(self)?, dims, scratch: Mutex::new(Scratch::default()) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(order: usize, theta: f32, discretizer: Discretizer) -> LmuMemoryOp {
        LmuMemoryOp { order, theta, discretizer, dt: 1.0 }
    }

    /// A deterministic pseudo-random sequence in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The plain f64 recurrence, independent of the tables and the chunked form.
    fn naive(op: &LmuMemoryOp, u: &[f32], (b, t, du): (usize, usize, usize), init: Option<&[f32]>) -> Vec<f64> {
        let d = op.order;
        let (ab, bb) = discrete(op);
        let mut m = vec![0.0; b * t * du * d];
        for bi in 0..b {
            for c in 0..du {
                let mut s: Vec<f64> = match init {
                    Some(v) => v[(bi * du + c) * d..][..d].iter().map(|&x| x as f64).collect(),
                    None => vec![0.0; d],
                };
                for ti in 0..t {
                    let uv = u[(bi * t + ti) * du + c] as f64;
                    s = (0..d).map(|i| (0..d).map(|j| ab[i * d + j] * s[j]).sum::<f64>() + bb[i] * uv).collect();
                    m[((bi * t + ti) * du + c) * d..][..d].copy_from_slice(&s);
                }
            }
        }
        m
    }

    fn run(op: &LmuMemoryOp, u: &[f32], dims: (usize, usize, usize), init: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let (b, t, du) = dims;
        let d = op.order;
        let mut m = vec![0.0; b * t * du * d];
        let mut f = vec![0.0; b * du * d];
        lmu_memory(&tables(op).unwrap(), u, dims, init, &mut m, Some(&mut f), &mut Scratch::default()).unwrap();
        (m, f)
    }

    fn max_err(a: &[f32], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn expm_matches_closed_forms() {
        // a rotation generator: expm([[0, -w], [w, 0]]) = [[cos, -sin], [sin, cos]]
        let w = 7.5f64;
        let e = expm(&[0.0, -w, w, 0.0], 2);
        let want = [w.cos(), -w.sin(), w.sin(), w.cos()];
        for (g, x) in e.iter().zip(want) {
            assert!((g - x).abs() < 1e-12, "{e:?}");
        }
        // an upper triangular 2x2: expm([[a, b], [0, c]]) = [[e^a, b (e^a - e^c)/(a - c)], [0, e^c]]
        let (a, b, c) = (-3.0f64, 2.0, 0.5);
        let e = expm(&[a, b, 0.0, c], 2);
        let want = [a.exp(), b * (a.exp() - c.exp()) / (a - c), 0.0, c.exp()];
        for (g, x) in e.iter().zip(want) {
            assert!((g - x).abs() < 1e-12 * x.abs().max(1.0), "{e:?}");
        }
    }

    #[test]
    fn zoh_of_order_one_is_the_exponential_decay() {
        // A = -1/θ, B = 1/θ: Ā = e^{-dt/θ}, B̄ = 1 - e^{-dt/θ}
        let o = LmuMemoryOp { order: 1, theta: 4.0, discretizer: Discretizer::Zoh, dt: 0.5 };
        let (a, b) = discrete(&o);
        let e = (-0.5f64 / 4.0).exp();
        assert!((a[0] - e).abs() < 1e-15 && (b[0] - (1.0 - e)).abs() < 1e-15, "{a:?} {b:?}");
        let o = LmuMemoryOp { discretizer: Discretizer::Euler, ..o };
        assert_eq!(discrete(&o), (vec![1.0 - 0.125], vec![0.125]));
    }

    #[test]
    fn zoh_agrees_with_the_euler_limit_and_differs_from_one_euler_step() {
        // zoh(dt) is exactly n zoh steps of dt/n; n Euler steps of dt/n converge to it
        let zoh = discrete(&op(6, 5.0, Discretizer::Zoh));
        let n = 4096;
        let fine = LmuMemoryOp { order: 6, theta: 5.0, discretizer: Discretizer::Euler, dt: 1.0 / n as f32 };
        let (ae, be) = discrete(&fine);
        // run u = 1 for n fine steps from 0: gives B̄_zoh; and Ā_euler^n ~ Ā_zoh
        let d = 6;
        let mut s = vec![0.0; d];
        let mut p: Vec<f64> = (0..d * d).map(|k| if k % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
        for _ in 0..n {
            s = (0..d).map(|i| (0..d).map(|j| ae[i * d + j] * s[j]).sum::<f64>() + be[i]).collect();
            p = mm(&ae, &p, d);
        }
        let err_b = s.iter().zip(&zoh.1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let err_a = p.iter().zip(&zoh.0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err_a < 1e-3 && err_b < 1e-3, "{err_a} {err_b}");
        let euler = discrete(&op(6, 5.0, Discretizer::Euler));
        let diff = euler.0.iter().zip(&zoh.0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff > 0.05, "one Euler step should differ visibly from zoh: {diff}");
    }

    #[test]
    fn matches_the_f64_recurrence_for_orders_1_to_256() {
        for (order, theta, disc) in [
            (1, 3.0, Discretizer::Zoh),
            (2, 8.0, Discretizer::Euler),
            (7, 20.0, Discretizer::Zoh),
            (32, 40.0, Discretizer::Zoh),
            (32, 160.0, Discretizer::Euler),
            (100, 128.0, Discretizer::Zoh),
            (256, 128.0, Discretizer::Zoh),
        ] {
            let o = op(order, theta, disc);
            let dims = (2, 150, 2);
            let u = noise(2 * 150 * 2, order as u64);
            let init = noise(2 * 2 * order, 99);
            for init in [None, Some(&init[..])] {
                let (m, f) = run(&o, &u, dims, init);
                let want = naive(&o, &u, dims, init);
                let err = max_err(&m, &want);
                let scale = want.iter().fold(1.0f64, |a, &b| a.max(b.abs()));
                assert!(err <= 1e-5 * scale, "order {order} {disc:?}: max err {err:e} (scale {scale})");
                let d = order * 2;
                for bi in 0..2 {
                    assert_eq!(f[bi * d..(bi + 1) * d], m[(bi * 150 + 149) * d..][..d]);
                }
            }
        }
    }

    #[test]
    fn streaming_matches_whole_sequence_for_any_chunking() {
        for order in [1, 5, 32, 128] {
            let o = op(order, 30.0, Discretizer::Zoh);
            let (b, t, du) = (2, 97, 1);
            let u = noise(b * t * du, 7 + order as u64);
            let (whole, whole_f) = run(&o, &u, (b, t, du), None);
            for pieces in [vec![1; 97], vec![3, 1, 50, 2, 41], vec![64, 33], vec![96, 1]] {
                let mut state: Option<Vec<f32>> = None;
                let mut t0 = 0;
                for len in pieces {
                    let part: Vec<f32> = (0..b).flat_map(|bi| u[bi * t + t0..bi * t + t0 + len].to_vec()).collect();
                    let (m, f) = run(&o, &part, (b, len, du), state.as_deref());
                    for bi in 0..b {
                        for i in 0..len {
                            let got = &m[(bi * len + i) * order..][..order];
                            let want = &whole[(bi * t + t0 + i) * order..][..order];
                            let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                            assert!(err <= 1e-5, "order {order}, frame {}: err {err:e}", t0 + i);
                        }
                    }
                    state = Some(f);
                    t0 += len;
                }
                let err = state.unwrap().iter().zip(&whole_f).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err <= 1e-5, "order {order}: final state err {err:e}");
            }
        }
    }

    #[test]
    fn legendre_decode_of_a_sine_recovers_the_delayed_signal() {
        // ALGORITHMS.md 3.1: u(t - θ') ≈ Σ P̃_i(θ'/θ) m_i(t), d = 12, θ = 50
        let (d, theta) = (12, 50.0f32);
        let o = op(d, theta, Discretizer::Zoh);
        let t = 400;
        let f = |k: f64| (2.0 * std::f64::consts::PI * k / 100.0).sin();
        let u: Vec<f32> = (0..t).map(|k| f(k as f64) as f32).collect();
        let (m, _) = run(&o, &u, (1, t, 1), None);
        let last = &m[(t - 1) * d..];
        let binom = |n: usize, k: usize| (0..k).fold(1.0f64, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
        let p = |i: usize, r: f64| {
            let s: f64 = (0..=i).map(|j| binom(i, j) * binom(i + j, j) * (-r).powi(j as i32)).sum();
            if i.is_multiple_of(2) {
                s
            } else {
                -s
            }
        };
        for r in [0.0, 0.5, 1.0] {
            let dec: f64 = (0..d).map(|i| p(i, r) * last[i] as f64).sum();
            let truth = f((t - 1) as f64 - r * theta as f64);
            assert!((dec - truth).abs() < 0.1, "r={r}: decoded {dec}, true {truth}");
        }
    }

    #[test]
    fn kernel_matches_eval_and_reuses_scratch() {
        let o = op(16, 12.0, Discretizer::Zoh);
        let u = Tensor::from_vec(&[1, 10, 2], noise(20, 3)).unwrap();
        let s = Tensor::from_vec(&[1, 32], noise(32, 4)).unwrap();
        let want = o.eval(&EvalCtx { n_outputs: 2 }, &[Some(&u), Some(&s)]).unwrap();
        let fact = Fact::new(DType::F32, Shape::fixed(&[1, 10, 2]));
        let k = o.kernel(&[InferInput { fact: &fact, value: None }], &[]).unwrap().unwrap();
        let mut outs =
            vec![Tensor::zeros(DType::F32, &[1, 10, 32]).unwrap(), Tensor::zeros(DType::F32, &[1, 32]).unwrap()];
        for _ in 0..2 {
            k.run(&[Some(&u), Some(&s)], &mut outs).unwrap();
            assert_eq!(outs, want);
        }
    }

    #[test]
    fn bad_attributes_are_refused() {
        assert!(op(0, 1.0, Discretizer::Zoh).validate().unwrap_err().to_string().contains("order"));
        assert!(op(4, 0.0, Discretizer::Zoh).validate().unwrap_err().to_string().contains("theta"));
        let o = LmuMemoryOp { dt: -1.0, ..op(4, 1.0, Discretizer::Euler) };
        assert!(o.validate().unwrap_err().to_string().contains("dt"));
    }
}
