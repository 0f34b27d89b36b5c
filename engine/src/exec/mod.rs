//! The executor: a [`Plan`] binds input shapes once (resolving symbolic dims,
//! folding shape arithmetic, ordering nodes, computing when each value dies,
//! preparing each hot op's kernel and assigning every intermediate a reusable
//! buffer) and a [`Session`] runs it: `run` only computes, with no per-run graph
//! work and, after the first run, no allocation on the kernel path.

mod memory;
mod plan;
mod session;

pub use plan::Plan;
pub use session::{physical_cores, Session, SessionOptions};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::Graph;
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
    Session::with_options(plan, SessionOptions { threads: 1 }).run(inputs)
}
