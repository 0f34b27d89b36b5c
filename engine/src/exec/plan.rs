//! [`Plan`]: a graph specialised for concrete input shapes.

use super::memory::{plan_buffers, BufferPlan, StepInfo};
use super::{bind_input, Bindings, PlannedInput};
use crate::dtype::DType;
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::{InferInput, Kernel};
use crate::passes::{infer_and_fold, remove_dead_nodes, FoldOptions};
use crate::shape::{Fact, Shape};

pub(super) struct Step {
    pub node: usize,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// The prepared kernel, when the op has one for these shapes.
    pub kernel: Option<Box<dyn Kernel>>,
    /// Planned dtype and shape of each output (kernel steps).
    pub layouts: Vec<(DType, Vec<usize>)>,
    /// Values whose last use is this step (dropped after it).
    pub free: Vec<ValueId>,
    /// (value, buffer): buffers that return to the pool after this step.
    pub release: Vec<(ValueId, usize)>,
    /// A view (Reshape, Identity, ...) with a planned shape: the executor makes
    /// the output from input 0 directly.
    pub view: bool,
}

/// A graph specialised for concrete input shapes, ready to run many times.
pub struct Plan {
    pub(super) graph: Graph,
    pub(super) steps: Vec<Step>,
    pub(super) inputs: Vec<(ValueId, PlannedInput)>,
    pub(super) outputs: Vec<ValueId>,
    pub(super) output_names: Vec<String>,
    pub(super) buffer_of: Vec<Option<usize>>,
    pub(super) buffer_sizes: Vec<usize>,
}

impl Plan {
    /// Binds input shapes, folds what becomes constant, orders the work, prepares
    /// kernels and plans buffers.
    pub fn new(graph: &Graph, bindings: &Bindings) -> Result<Plan> {
        let mut g = graph.clone();
        let mut inputs = Vec::new();
        for &id in &g.inputs {
            let v = &g.values[id];
            let planned = bind_input(&v.name, &v.fact, bindings)?;
            g.values[id].fact = Fact::new(planned.dtype, Shape::fixed(&planned.shape));
            inputs.push((id, planned));
        }
        infer_and_fold(&mut g, FoldOptions::default())?;
        remove_dead_nodes(&mut g);
        let n_values = g.values.len();
        let keep: std::collections::HashSet<ValueId> = g.outputs.iter().copied().collect();
        let mut last_use = vec![0usize; n_values];
        let mut steps = Vec::with_capacity(g.nodes.len());
        for (si, n) in g.nodes.iter().enumerate() {
            for &i in n.inputs.iter().flatten() {
                last_use[i] = si;
            }
            for &o in &n.outputs {
                last_use[o] = si;
            }
            let (kernel, layouts) = prepare(&g, si)?;
            let view = n.op.is_view()
                && n.outputs.len() == 1
                && layouts.len() == 1
                && n.inputs.first().is_some_and(|i| i.is_some());
            steps.push(Step {
                node: si,
                inputs: n.inputs.clone(),
                outputs: n.outputs.clone(),
                kernel,
                layouts,
                free: Vec::new(),
                release: Vec::new(),
                view,
            });
        }
        for &o in &keep {
            last_use[o] = usize::MAX;
        }
        for (v, &si) in last_use.iter().enumerate() {
            if si < steps.len() && g.values[v].konst.is_none() {
                steps[si].free.push(v);
            }
        }
        let infos: Vec<StepInfo<'_>> = steps
            .iter()
            .map(|s| StepInfo {
                inputs: &s.inputs,
                outputs: &s.outputs,
                kernel_outputs: s
                    .kernel
                    .as_ref()
                    .map(|_| s.layouts.iter().map(|(d, sh)| d.size() * sh.iter().product::<usize>()).collect()),
                is_view: g.nodes[s.node].op.is_view(),
            })
            .collect();
        let BufferPlan { buffer_of, sizes, release } = plan_buffers(n_values, &infos, &last_use);
        drop(infos);
        for (s, r) in steps.iter_mut().zip(release) {
            s.release = r;
        }
        let outputs = g.outputs.clone();
        let output_names = outputs.iter().map(|&o| g.values[o].name.clone()).collect();
        Ok(Plan { graph: g, steps, inputs, outputs, output_names, buffer_of, buffer_sizes: sizes })
    }

    /// The inputs with the concrete shapes this plan was made for.
    pub fn inputs(&self) -> impl Iterator<Item = &PlannedInput> {
        self.inputs.iter().map(|(_, p)| p)
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// The specialised graph (after folding), e.g. for per-op reports.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Facts of the outputs as inferred for the bound shapes.
    pub fn output_facts(&self) -> Vec<Fact> {
        self.outputs.iter().map(|&o| self.graph.values[o].fact.clone()).collect()
    }

    /// Nodes that run a prepared kernel, and all nodes.
    pub fn kernel_coverage(&self) -> (usize, usize) {
        (self.steps.iter().filter(|s| s.kernel.is_some()).count(), self.steps.len())
    }

    /// Nodes that run through their op's generic `eval` (no prepared kernel, not
    /// a view): these allocate their outputs on every run.
    pub fn eval_nodes(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.kernel.is_none() && !s.view)
            .map(|s| self.graph.nodes[s.node].name.as_str())
            .collect()
    }

    /// Bytes of the planned intermediate buffers (allocated once per session).
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_sizes.iter().sum()
    }
}

/// Planned dtype and shape of each output of a step.
type Layouts = Vec<(DType, Vec<usize>)>;

/// The kernel for step `si` when every input and output shape is concrete and the
/// op has one.
fn prepare(g: &Graph, si: usize) -> Result<(Option<Box<dyn Kernel>>, Layouts)> {
    let n = &g.nodes[si];
    let mut layouts = Vec::with_capacity(n.outputs.len());
    for &o in &n.outputs {
        let f = &g.values[o].fact;
        match (f.dtype, f.shape.as_ref().and_then(|s| s.as_fixed())) {
            (Some(d), Some(s)) => layouts.push((d, s)),
            _ => return Ok((None, layouts)),
        }
    }
    let unknown = Fact::unknown();
    let ins: Vec<InferInput<'_>> = n
        .inputs
        .iter()
        .map(|i| match i {
            Some(i) => InferInput { fact: &g.values[*i].fact, value: g.values[*i].konst.as_ref() },
            None => InferInput { fact: &unknown, value: None },
        })
        .collect();
    if n.inputs.iter().flatten().any(|&i| g.values[i].fact.shape.as_ref().and_then(|s| s.as_fixed()).is_none()) {
        return Ok((None, layouts));
    }
    let facts: Vec<Fact> = n.outputs.iter().map(|&o| g.values[o].fact.clone()).collect();
    let kernel = n.op.kernel(&ins, &facts).map_err(|e| e.in_node(&n.name, n.op.name()))?;
    Ok((kernel, layouts))
}
