//! [`Session`]: runs a [`Plan`], holding the value slots, the planned buffers and
//! (with more than one thread) the rayon pool large kernels split their work in.

use super::plan::{Plan, Step};
use crate::error::{Error, Result};
use crate::ops::EvalCtx;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a session runs.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// Threads the kernels may use (1: everything on the calling thread).
    pub threads: usize,
}

impl Default for SessionOptions {
    /// One thread per physical core.
    fn default() -> Self {
        SessionOptions { threads: physical_cores() }
    }
}

/// Physical cores of this machine (hyper-threads not counted), at least 1.
pub fn physical_cores() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return logical };
        let mut cores = std::collections::HashSet::new();
        let mut phys = "";
        for line in info.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next()) {
                (Some("physical id"), Some(v)) => phys = v,
                (Some("core id"), Some(v)) => {
                    cores.insert((phys.to_string(), v.to_string()));
                }
                _ => {}
            }
        }
        if cores.is_empty() {
            logical
        } else {
            cores.len().min(logical)
        }
    })
}

/// One rayon pool per thread count, shared by every session of the process.
fn shared_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("floe-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(pool)
}

/// Runs a [`Plan`]. Cheap to create per thread; the plan is shared.
pub struct Session {
    plan: Arc<Plan>,
    slots: Vec<Option<Tensor>>,
    /// Planned buffers not in use, by buffer id.
    buffers: Vec<Option<Tensor>>,
    /// The last run's outputs (their buffers return to the pool on the next run).
    outputs: Vec<Tensor>,
    scratch: Vec<Tensor>,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Session {
    /// A session with the default options (one thread per physical core).
    pub fn new(plan: Arc<Plan>) -> Session {
        Self::with_options(plan, SessionOptions::default())
    }

    /// A session with explicit options. Thread pools are shared per thread count;
    /// if one cannot be started the session runs on the calling thread.
    pub fn with_options(plan: Arc<Plan>, options: SessionOptions) -> Session {
        let slots = plan.graph.values.iter().map(|v| v.konst.clone()).collect();
        let pool = if options.threads > 1 { shared_pool(options.threads).ok() } else { None };
        Session {
            buffers: vec![None; plan.buffer_sizes.len()],
            plan,
            slots,
            outputs: Vec::new(),
            scratch: Vec::new(),
            pool,
        }
    }

    /// The outputs of the last run (empty before the first).
    pub fn last_outputs(&self) -> &[Tensor] {
        &self.outputs
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Threads the kernels may use.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Runs the model on inputs given in the order of the graph's inputs.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_with(inputs, |_, _| {})
    }

    /// Like [`run`](Self::run), calling `observe(node_index, elapsed)` after each
    /// node (for per-op timing tables).
    pub fn run_with(
        &mut self,
        inputs: Vec<Tensor>,
        observe: impl FnMut(usize, Duration) + Send,
    ) -> Result<Vec<Tensor>> {
        Ok(self.run_borrowed(&inputs, observe)?.to_vec())
    }

    /// Runs the model and returns its outputs held by the session (valid until the
    /// next run). With the outputs not kept beyond that, a run allocates nothing on
    /// the kernel path after the first: every planned buffer is reused.
    pub fn run_borrowed(
        &mut self,
        inputs: &[Tensor],
        observe: impl FnMut(usize, Duration) + Send,
    ) -> Result<&[Tensor]> {
        // The session runs on the caller's thread; large kernels enter the pool.
        let pool = self.pool.clone();
        floe_kernels::parallel::with_pool(pool.as_ref(), || self.run_inner(inputs, observe))?;
        Ok(&self.outputs)
    }

    fn run_inner(&mut self, inputs: &[Tensor], mut observe: impl FnMut(usize, Duration)) -> Result<()> {
        let plan = self.plan.clone();
        if inputs.len() != plan.inputs.len() {
            let names: Vec<&str> = plan.inputs.iter().map(|(_, p)| p.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "the model takes {} inputs ({}), {} were given",
                names.len(),
                names.join(", "),
                inputs.len()
            )));
        }
        for ((id, p), t) in plan.inputs.iter().zip(inputs) {
            if t.dtype() != p.dtype {
                return Err(Error::Input {
                    name: p.name.clone(),
                    expected: format!("dtype {}", p.dtype),
                    actual: format!("dtype {}", t.dtype()),
                });
            }
            if t.shape() != p.shape.as_slice() {
                return Err(Error::Input {
                    name: p.name.clone(),
                    expected: format!("shape {:?}", p.shape),
                    actual: format!("shape {:?}", t.shape()),
                });
            }
            self.slots[*id] = Some(t.clone());
        }
        // The previous outputs' buffers are free again (unless the caller kept them).
        for (t, &o) in self.outputs.drain(..).zip(&plan.outputs) {
            if let Some(b) = plan.buffer_of[o] {
                self.buffers[b] = Some(t);
            }
        }
        let result = self.run_steps(&plan, &mut observe);
        if result.is_err() {
            // Leave no half-run state behind.
            for (v, s) in self.slots.iter_mut().enumerate() {
                if plan.graph.values[v].konst.is_none() {
                    *s = None;
                }
            }
            return result;
        }
        for &o in &plan.outputs {
            let t = self.slots[o]
                .clone()
                .ok_or_else(|| Error::Invalid(format!("output '{}' was not produced", plan.graph.values[o].name)))?;
            self.outputs.push(t);
        }
        for (v, s) in self.slots.iter_mut().enumerate() {
            if plan.graph.values[v].konst.is_none() {
                *s = None;
            }
        }
        Ok(())
    }

    fn run_steps(&mut self, plan: &Plan, observe: &mut impl FnMut(usize, Duration)) -> Result<()> {
        for step in &plan.steps {
            let node = &plan.graph.nodes[step.node];
            let start = Instant::now();
            self.run_step(plan, step).map_err(|e| e.in_node(&node.name, node.op.name()))?;
            for &(v, b) in &step.release {
                self.buffers[b] = self.slots[v].take();
            }
            for &f in &step.free {
                self.slots[f] = None;
            }
            observe(step.node, start.elapsed());
        }
        Ok(())
    }

    fn run_step(&mut self, plan: &Plan, step: &Step) -> Result<()> {
        let node = &plan.graph.nodes[step.node];
        const INLINE: usize = 16;
        let mut inline: [Option<&Tensor>; INLINE] = [None; INLINE];
        let mut spilled = Vec::new();
        let ins: &mut [Option<&Tensor>] = if step.inputs.len() <= INLINE {
            &mut inline[..step.inputs.len()]
        } else {
            spilled.resize(step.inputs.len(), None);
            &mut spilled
        };
        for (slot, i) in ins.iter_mut().zip(&step.inputs) {
            if let Some(i) = i {
                *slot = Some(self.slots[*i].as_ref().ok_or_else(|| {
                    Error::Invalid(format!("value '{}' is not available", plan.graph.values[*i].name))
                })?);
            }
        }
        if step.view {
            let x = ins[0].ok_or_else(|| Error::Invalid("missing input 0".into()))?;
            let t = if x.dtype() == step.layouts[0].0 {
                x.reshaped(&step.layouts[0].1)?
            } else {
                x.cast(step.layouts[0].0)?
            };
            self.slots[step.outputs[0]] = Some(t);
            return Ok(());
        }
        if let Some(kernel) = &step.kernel {
            let mut outs = std::mem::take(&mut self.scratch);
            outs.clear();
            for (&o, (dtype, shape)) in step.outputs.iter().zip(&step.layouts) {
                let (old, cap) = match plan.buffer_of[o] {
                    Some(b) => (self.buffers[b].take(), plan.buffer_sizes[b]),
                    None => (None, 0),
                };
                outs.push(Tensor::recycle(old, *dtype, shape, cap)?);
            }
            let r = kernel.run(ins, &mut outs);
            for (&o, t) in step.outputs.iter().zip(outs.drain(..)) {
                self.slots[o] = Some(t);
            }
            self.scratch = outs;
            return r;
        }
        let ctx = EvalCtx { n_outputs: step.outputs.len() };
        let outs = node.op.eval(&ctx, ins)?;
        if outs.len() < step.outputs.len() {
            return Err(Error::Invalid(format!("produced {} outputs, {} expected", outs.len(), step.outputs.len())));
        }
        for (&o, t) in step.outputs.iter().zip(outs) {
            self.slots[o] = Some(t);
        }
        Ok(())
    }
}
