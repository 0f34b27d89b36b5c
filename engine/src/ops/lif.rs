//! `floe::LIF`: a leaky integrate-and-fire neuron per element, run along a time axis
//! (the token axis of a spiking LMUFormer), with hard reset.
//!
//! Why a custom op: spikingjelly's multi-step LIF has no ONNX form (its cupy
//! backend does not export, ALGORITHMS.md 4.3); as one node the membrane state can be
//! carried between streamed chunks (`initial_v` / `final_v`).
//!
//! Math (ALGORITHMS.md 3.5; spikingjelly `LIFNode.neuronal_charge`, `BaseNode`), per
//! element, with `v_rest = 0`:
//! - charge, `decay_input`: `H_t = V_{t-1} + (X_t - (V_{t-1} - v_reset)) / tau`;
//!   otherwise `H_t = V_{t-1} - (V_{t-1} - v_reset) / tau + X_t`;
//! - fire: `S_t = 1[H_t >= v_th]`;
//! - hard reset: `V_t = H_t (1 - S_t) + v_reset S_t`;
//! - `V_{-1} = initial_v`, or `v_reset` when omitted (spikingjelly's `v` starts at
//!   `v_reset`; 0 in LMUFormer).
//!
//! The arithmetic is exactly the expressions above in f32, so a sequence split into
//! pieces with `final_v` threaded into `initial_v` gives bitwise the same spikes.

use super::{fixed_shape, input, norm_axis, opt_input, EvalCtx, InferInput, Kernel, OpImpl};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Fact, Shape};
use crate::tensor::Tensor;
use crate::{bail, unsupported};
use std::sync::Mutex;

/// `floe::LIF` attributes. Inputs: `x` f32 (rank >= 2), optional `initial_v` (`x`'s
/// shape without the time axis). Outputs: spikes (0/1, `x`'s shape), optional
/// `final_v` (the shape of `initial_v`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LifOp {
    /// Membrane time constant, > 0 (2 in LMUFormer).
    pub tau: f32,
    /// Firing threshold.
    pub v_th: f32,
    /// Potential after a spike (and the initial potential).
    pub v_reset: f32,
    /// Whether the input is divided by `tau` along with the leak.
    pub decay_input: bool,
    /// The time axis of `x` (negative counts from the end).
    pub time_axis: i64,
}

impl Default for LifOp {
    fn default() -> Self {
        LifOp { tau: 2.0, v_th: 1.0, v_reset: 0.0, decay_input: true, time_axis: 1 }
    }
}

impl LifOp {
    /// Refuses a `tau` that defines no neuron and non-finite thresholds.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau.is_finite() && self.tau > 0.0) {
            bail!("LIF tau must be finite and > 0, got {}", self.tau);
        }
        if !self.v_th.is_finite() || !self.v_reset.is_finite() {
            bail!("LIF v_th and v_reset must be finite, got {} and {}", self.v_th, self.v_reset);
        }
        Ok(())
    }

    /// `(outer, T, inner)` of `x`: the elements before, along and after the time axis.
    fn split(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        if shape.len() < 2 {
            return Err(Error::Shape(format!("LIF: x must have rank >= 2, got {shape:?}")));
        }
        let a = norm_axis(self.time_axis, shape.len())?;
        Ok((shape[..a].iter().product(), shape[a], shape[a + 1..].iter().product()))
    }

    /// One step of the neuron: the new potential and whether it fired.
    #[inline(always)]
    fn step(&self, v: f32, x: f32) -> (f32, bool) {
        let h = if self.decay_input {
            v + (x - (v - self.v_reset)) / self.tau
        } else {
            v - (v - self.v_reset) / self.tau + x
        };
        let spike = h >= self.v_th;
        (if spike { self.v_reset } else { h }, spike)
    }
}

/// Runs the neuron over `x` viewed as `[outer, t, inner]`: `v` (`[outer, inner]`)
/// holds the initial potential and is left at the final one; `s` gets the spikes.
pub fn lif(
    op: &LifOp,
    x: &[f32],
    (outer, t, inner): (usize, usize, usize),
    v: &mut [f32],
    s: &mut [f32],
) -> Result<()> {
    if x.len() != outer * t * inner || s.len() != x.len() || v.len() != outer * inner {
        return Err(Error::Shape(format!(
            "LIF: x has {} values, spikes {}, potentials {} for [{outer}, {t}, {inner}]",
            x.len(),
            s.len(),
            v.len()
        )));
    }
    for o in 0..outer {
        let vrow = &mut v[o * inner..(o + 1) * inner];
        for ti in 0..t {
            let at = (o * t + ti) * inner;
            for ((vv, &xv), sv) in vrow.iter_mut().zip(&x[at..at + inner]).zip(&mut s[at..at + inner]) {
                let (nv, spike) = op.step(*vv, xv);
                *vv = nv;
                *sv = if spike { 1.0 } else { 0.0 };
            }
        }
    }
    Ok(())
}

/// The prepared f32 kernel (fixed dims).
struct LifKernel {
    op: LifOp,
    dims: (usize, usize, usize),
    /// The running potential when the node does not output `final_v`.
    scratch: Mutex<Vec<f32>>,
}

impl Kernel for LifKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let x = input(inputs, 0, "x")?.as_slice::<f32>()?;
        let (outer, _, inner) = self.dims;
        let (s, rest) = outputs.split_first_mut().ok_or_else(|| Error::Invalid("LIF has no output".into()))?;
        let s = s.as_mut_slice::<f32>()?;
        // final_v is the running potential when the node asks for it
        let mut own = self.scratch.lock().map_err(|_| Error::Invalid("LIF scratch poisoned".into()))?;
        let v: &mut [f32] = match rest.first_mut() {
            Some(f) => f.as_mut_slice::<f32>()?,
            None => {
                own.resize(outer * inner, 0.0);
                &mut own
            }
        };
        match opt_input(inputs, 1) {
            Some(init) if init.numel() != v.len() => {
                return Err(Error::Shape(format!(
                    "LIF: initial_v has {} values, expected {} ({outer} x {inner})",
                    init.numel(),
                    v.len()
                )))
            }
            Some(init) => v.copy_from_slice(init.as_slice::<f32>()?),
            None => v.fill(self.op.v_reset),
        }
        lif(&self.op, x, self.dims, v, s)
    }
}

impl OpImpl for LifOp {
    fn name(&self) -> &'static str {
        "LIF"
    }

    fn infer(&self, inputs: &[InferInput<'_>], n: usize) -> Result<Vec<Fact>> {
        let x = inputs.first().map(|i| i.fact.clone()).unwrap_or_else(Fact::unknown);
        let state = x.shape.as_ref().filter(|s| s.rank() >= 2).and_then(|s| {
            let a = norm_axis(self.time_axis, s.rank()).ok()?;
            let mut d = s.0.clone();
            d.remove(a);
            Some(Shape(d))
        });
        let mut out = vec![x.clone()];
        out.extend((1..n).map(|_| Fact { dtype: x.dtype, shape: state.clone() }));
        Ok(out)
    }

    fn eval(&self, ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if ctx.n_outputs > 2 {
            bail!("LIF has at most 2 outputs, the node declares {}", ctx.n_outputs);
        }
        self.validate()?;
        let x = input(inputs, 0, "x")?;
        if x.dtype() != DType::F32 {
            unsupported!("LIF on {} input (f32 only)", x.dtype());
        }
        let dims = self.split(x.shape())?;
        let a = norm_axis(self.time_axis, x.rank())?;
        let mut vshape = x.shape().to_vec();
        vshape.remove(a);
        let mut v = match opt_input(inputs, 1) {
            Some(i) if i.shape() != vshape => {
                return Err(Error::Shape(format!("LIF: initial_v must be {vshape:?}, got {:?}", i.shape())))
            }
            Some(i) => i.cast(DType::F32)?,
            None => Tensor::from_vec(&vshape, vec![self.v_reset; dims.0 * dims.2])?,
        };
        let mut s = Tensor::zeros(DType::F32, x.shape())?;
        lif(self, x.as_slice::<f32>()?, dims, v.as_mut_slice::<f32>()?, s.as_mut_slice::<f32>()?)?;
        Ok([s, v].into_iter().take(ctx.n_outputs.max(1)).collect())
    }

    fn kernel(&self, inputs: &[InferInput<'_>], _outputs: &[Fact]) -> Result<Option<Box<dyn Kernel>>> {
        let Some(x) = inputs.first() else { return Ok(None) };
        if x.fact.dtype != Some(DType::F32)
            || inputs.get(1).is_some_and(|v| v.fact.dtype.is_some_and(|d| d != DType::F32))
        {
            return Ok(None);
        }
        let Some(shape) = fixed_shape(x) else { return Ok(None) };
        self.validate()?;
        Ok(Some(Box::new(LifKernel { op: self.clone(), dims: self.split(&shape)?, scratch: Mutex::new(Vec::new()) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one element at a time, on `[outer, t, inner]` in f32.
    fn naive(op: &LifOp, x: &[f32], (outer, t, inner): (usize, usize, usize)) -> Vec<f32> {
        let mut s = vec![0.0; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut v = op.v_reset;
                for ti in 0..t {
                    let xv = x[(o * t + ti) * inner + i];
                    let h = if op.decay_input {
                        v + (xv - (v - op.v_reset)) / op.tau
                    } else {
                        v - (v - op.v_reset) / op.tau + xv
                    };
                    let sp = if h >= op.v_th { 1.0 } else { 0.0 };
                    v = h * (1.0 - sp) + op.v_reset * sp;
                    s[(o * t + ti) * inner + i] = sp;
                }
            }
        }
        s
    }

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 3.0 - 0.5
            })
            .collect()
    }

    fn eval(op: &LifOp, x: &Tensor, init: Option<&Tensor>) -> (Tensor, Tensor) {
        let mut o = op.eval(&EvalCtx { n_outputs: 2 }, &[Some(x), init]).unwrap();
        let v = o.pop().unwrap();
        (o.pop().unwrap(), v)
    }

    #[test]
    fn hand_computed_spike_train() {
        // tau 2, v_th 1: x = 2 -> H = 1 (spike); x = 1, 1 -> 0.5, 0.75; x = 1.5 -> 1.125 (spike)
        let x = Tensor::from_slice(&[1, 5, 1], &[2.0f32, 1.0, 1.0, 1.5, 0.0]).unwrap();
        let (s, v) = eval(&LifOp::default(), &x, None);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(v.as_slice::<f32>().unwrap(), &[0.0]);
        // without decay_input: H = V - V/2 + X: 0.6, 0.3 + 0.6 = 0.9, 0.45 + 0.6 = 1.05 (spike)
        let op = LifOp { decay_input: false, ..LifOp::default() };
        let x = Tensor::from_slice(&[1, 3, 1], &[0.6f32, 0.6, 0.6]).unwrap();
        let (s, _) = eval(&op, &x, None);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn matches_the_definition_for_every_variant_and_time_axis() {
        let shape = [2, 7, 3, 4];
        let x: Vec<f32> = noise(shape.iter().product(), 1);
        let xt = Tensor::from_slice(&shape, &x).unwrap();
        for decay_input in [true, false] {
            for (v_th, v_reset) in [(1.0, 0.0), (0.5, 0.0), (0.8, -0.3), (1.0, 0.2)] {
                for time_axis in [0i64, 1, 2, 3, -1] {
                    let op = LifOp { tau: 2.0, v_th, v_reset, decay_input, time_axis };
                    let dims = op.split(&shape).unwrap();
                    let (s, v) = eval(&op, &xt, None);
                    assert_eq!(s.as_slice::<f32>().unwrap(), naive(&op, &x, dims), "{op:?}");
                    let mut vs = shape.to_vec();
                    vs.remove(norm_axis(time_axis, 4).unwrap());
                    assert_eq!(v.shape(), vs);
                    assert!(s.as_slice::<f32>().unwrap().contains(&1.0), "{op:?} never fires");
                }
            }
        }
    }

    #[test]
    fn streaming_matches_whole_sequence_bitwise_for_any_chunking() {
        // [B, T, C] with time axis 1, split into pieces along T
        let (b, t, c) = (2, 40, 5);
        let x = noise(b * t * c, 9);
        for op in [LifOp::default(), LifOp { decay_input: false, v_reset: 0.1, v_th: 0.7, ..LifOp::default() }] {
            let (whole, whole_v) = eval(&op, &Tensor::from_slice(&[b, t, c], &x).unwrap(), None);
            let whole = whole.as_slice::<f32>().unwrap();
            for pieces in [vec![1; 40], vec![7, 1, 20, 12], vec![39, 1]] {
                let mut v: Option<Tensor> = None;
                let mut t0 = 0;
                for len in pieces {
                    let part: Vec<f32> =
                        (0..b).flat_map(|bi| x[(bi * t + t0) * c..(bi * t + t0 + len) * c].to_vec()).collect();
                    let (s, nv) = eval(&op, &Tensor::from_slice(&[b, len, c], &part).unwrap(), v.as_ref());
                    let s = s.as_slice::<f32>().unwrap();
                    for bi in 0..b {
                        assert_eq!(
                            s[bi * len * c..(bi + 1) * len * c],
                            whole[(bi * t + t0) * c..(bi * t + t0 + len) * c]
                        );
                    }
                    v = Some(nv);
                    t0 += len;
                }
                assert_eq!(v.unwrap(), whole_v);
            }
        }
    }

    #[test]
    fn kernel_matches_eval() {
        let op = LifOp { time_axis: 2, ..LifOp::default() };
        let x = Tensor::from_vec(&[2, 3, 6], noise(36, 4)).unwrap();
        let init = Tensor::from_vec(&[2, 3], noise(6, 5)).unwrap();
        let want = op.eval(&EvalCtx { n_outputs: 2 }, &[Some(&x), Some(&init)]).unwrap();
        let fact = Fact::new(DType::F32, Shape::fixed(&[2, 3, 6]));
        let k = op.kernel(&[InferInput { fact: &fact, value: None }], &[]).unwrap().unwrap();
        let mut outs =
            vec![Tensor::zeros(DType::F32, &[2, 3, 6]).unwrap(), Tensor::zeros(DType::F32, &[2, 3]).unwrap()];
        k.run(&[Some(&x), Some(&init)], &mut outs).unwrap();
        assert_eq!(outs, want);
        let mut one = vec![Tensor::zeros(DType::F32, &[2, 3, 6]).unwrap()];
        k.run(&[Some(&x), Some(&init)], &mut one).unwrap();
        assert_eq!(one[0], want[0]);
        // a wrong-sized state is an error, not a panic
        let bad = Tensor::from_vec(&[2, 2], noise(4, 6)).unwrap();
        assert!(k.run(&[Some(&x), Some(&bad)], &mut one).is_err());
    }

    #[test]
    fn bad_tau_is_refused() {
        let e = LifOp { tau: 0.0, ..LifOp::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("tau"), "{e}");
    }
}
