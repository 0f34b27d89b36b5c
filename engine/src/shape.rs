//! Shapes of graph values: each dim is fixed, symbolic (a named axis such as the
//! streaming time axis `T`) or not yet known. Concrete tensors use `&[usize]`.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// One dimension of a value's shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    Fixed(usize),
    /// A named dimension bound when a plan is made (`--dim T=100`).
    Sym(String),
    /// Not known until run time (data-dependent or not inferred).
    Unknown,
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape of fixed or symbolic dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The concrete dims if every dim is fixed.
    pub fn as_fixed(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::fixed).collect()
    }

    /// Replaces symbolic dims by their bound values.
    pub fn bind(&self, symbols: &HashMap<String, usize>) -> Shape {
        Shape(
            self.0
                .iter()
                .map(|d| match d {
                    Dim::Sym(s) => symbols.get(s).map_or(d.clone(), |&n| Dim::Fixed(n)),
                    other => other.clone(),
                })
                .collect(),
        )
    }

    /// Names of the symbolic dims, in order of appearance.
    pub fn symbols(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|d| match d {
                Dim::Sym(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// What is known about a graph value before running: dtype and (maybe) shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub dtype: DTypeFact,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
}

pub type DTypeFact = Option<crate::DType>;

impl Fact {
    pub fn unknown() -> Fact {
        Fact { dtype: None, shape: None }
    }

    pub fn new(dtype: crate::DType, shape: Shape) -> Fact {
        Fact { dtype: Some(dtype), shape: Some(shape) }
    }

    pub fn dtype_only(dtype: crate::DType) -> Fact {
        Fact { dtype: Some(dtype), shape: None }
    }

    pub fn dtype_only_opt(dtype: Option<crate::DType>) -> Fact {
        Fact { dtype, shape: None }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("[..]"),
        }
    }
}
