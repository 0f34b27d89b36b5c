//! The executor: a [`Plan`] binds input shapes once (resolving symbolic dims,
//! folding shape arithmetic, ordering nodes, computing when each value dies) and a
//! [`Session`] runs it: `run` only computes, with no per-run graph work.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::EvalCtx;
use crate::passes::{infer_and_fold, remove_dead_nodes, FoldOptions};
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// How a plan binds the model's inputs.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    /// Values of symbolic dims, e.g. `T -> 100`.
    pub symbols: HashMap<String, usize>,
    /// Concrete shapes for named inputs (override the declared shape's unknown dims).
    pub shapes: HashMap<String, Vec<usize>>,
}

impl Bindings {
    pub fn with_symbol(mut self, name: &str, value: usize) -> Self {
        self.symbols.insert(name.to_string(), value);
        self
    }
}

/// A concrete model input as the plan expects it.
#[derive(Clone, Debug)]
pub struct PlannedInput {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

struct Step {
    node: usize,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<ValueId>,
    /// Values whose last use is this step (freed after it).
    free: Vec<ValueId>,
}

/// A graph specialised for concrete input shapes, ready to run many times.
pub struct Plan {
    graph: Graph,
    steps: Vec<Step>,
    inputs: Vec<(ValueId, PlannedInput)>,
    outputs: Vec<ValueId>,
    output_names: Vec<String>,
}

impl Plan {
    /// Binds input shapes, folds what becomes constant and orders the work.
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
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (si, n) in g.nodes.iter().enumerate() {
            for &i in n.inputs.iter().flatten() {
                last_use.insert(i, si);
            }
        }
        let keep: std::collections::HashSet<ValueId> = g.outputs.iter().copied().collect();
        let mut steps: Vec<Step> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Step { node: i, inputs: n.inputs.clone(), outputs: n.outputs.clone(), free: Vec::new() })
            .collect();
        for (v, si) in last_use {
            if !keep.contains(&v) && g.values[v].konst.is_none() {
                steps[si].free.push(v);
            }
        }
        let outputs = g.outputs.clone();
        let output_names = outputs.iter().map(|&o| g.values[o].name.clone()).collect();
        Ok(Plan { graph: g, steps, inputs, outputs, output_names })
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
}

fn bind_input(name: &str, fact: &Fact, b: &Bindings) -> Result<PlannedInput> {
    let dtype = fact.dtype.ok_or_else(|| Error::Input {
        name: name.to_string(),
        expected: "a declared element type".into(),
        actual: "none in the model".into(),
    })?;
    let declared = fact.shape.clone().ok_or_else(|| Error::Input {
        name: name.to_string(),
        expected: "a declared shape".into(),
        actual: "unknown rank".into(),
    });
    if let Some(shape) = b.shapes.get(name) {
        if let Ok(d) = &declared {
            check_compatible(name, d, shape)?;
        }
        return Ok(PlannedInput { name: name.to_string(), dtype, shape: shape.clone() });
    }
    let bound = declared?.bind(&b.symbols);
    let mut shape = Vec::with_capacity(bound.rank());
    for (i, d) in bound.0.iter().enumerate() {
        match d {
            Dim::Fixed(n) => shape.push(*n),
            Dim::Sym(s) => {
                return Err(Error::Input {
                    name: name.to_string(),
                    expected: format!("a value for symbolic dim '{s}' (axis {i}); set it with --dim {s}=N"),
                    actual: "unbound".into(),
                })
            }
            Dim::Unknown => {
                return Err(Error::Input {
                    name: name.to_string(),
                    expected: format!("a size for unnamed dim {i}; give the input's shape"),
                    actual: "unknown".into(),
                })
            }
        }
    }
    Ok(PlannedInput { name: name.to_string(), dtype, shape })
}

fn check_compatible(name: &str, declared: &Shape, actual: &[usize]) -> Result<()> {
    let ok = declared.rank() == actual.len()
        && declared.0.iter().zip(actual).all(|(d, &a)| d.fixed().is_none_or(|n| n == a));
    if ok {
        Ok(())
    } else {
        Err(Error::Input {
            name: name.to_string(),
            expected: format!("shape {declared}"),
            actual: format!("{actual:?}"),
        })
    }
}

/// Runs a [`Plan`]. Holds the per-run value slots; cheap to create per thread.
pub struct Session {
    plan: Arc<Plan>,
    slots: Vec<Option<Tensor>>,
}

impl Session {
    pub fn new(plan: Arc<Plan>) -> Session {
        let slots = plan.graph.values.iter().map(|v| v.konst.clone()).collect();
        Session { plan, slots }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
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
        mut observe: impl FnMut(usize, std::time::Duration),
    ) -> Result<Vec<Tensor>> {
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
            self.slots[*id] = Some(t);
        }
        for step in &plan.steps {
            let node = &plan.graph.nodes[step.node];
            let start = std::time::Instant::now();
            let outs = {
                let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(step.inputs.len());
                for i in &step.inputs {
                    match i {
                        None => ins.push(None),
                        Some(i) => match self.slots[*i].as_ref() {
                            Some(t) => ins.push(Some(t)),
                            None => {
                                return Err(Error::Invalid(format!(
                                    "value '{}' is not available",
                                    plan.graph.values[*i].name
                                ))
                                .in_node(&node.name, node.op.name()))
                            }
                        },
                    }
                }
                let ctx = EvalCtx { n_outputs: step.outputs.len() };
                node.op.eval(&ctx, &ins).map_err(|e| e.in_node(&node.name, node.op.name()))?
            };
            if outs.len() < step.outputs.len() {
                return Err(Error::Invalid(format!(
                    "produced {} outputs, {} expected",
                    outs.len(),
                    step.outputs.len()
                ))
                .in_node(&node.name, node.op.name()));
            }
            for (&o, t) in step.outputs.iter().zip(outs) {
                self.slots[o] = Some(t);
            }
            for &f in &step.free {
                self.slots[f] = None;
            }
            observe(step.node, start.elapsed());
        }
        let mut result = Vec::with_capacity(plan.outputs.len());
        for &o in &plan.outputs {
            let t = self.slots[o]
                .clone()
                .ok_or_else(|| Error::Invalid(format!("output '{}' was not produced", plan.graph.values[o].name)))?;
            result.push(t);
        }
        for (id, _) in &plan.inputs {
            self.slots[*id] = None;
        }
        Ok(result)
    }
}

/// Plans and runs a graph once on the given inputs (shapes taken from the inputs).
/// Used for If/Loop/Scan bodies and one-off evaluation.
pub fn run_graph(graph: &Graph, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    let mut b = Bindings::default();
    for (&id, t) in graph.inputs.iter().zip(&inputs) {
        b.shapes.insert(graph.values[id].name.clone(), t.shape().to_vec());
    }
    let mut g = graph.clone();
    for (&id, t) in graph.inputs.iter().zip(&inputs) {
        // Bodies often leave input types unspecified; take them from the values.
        g.values[id].fact = Fact::new(t.dtype(), Shape::fixed(t.shape()));
    }
    let plan = Arc::new(Plan::new(&g, &b)?);
    Session::new(plan).run(inputs)
}
