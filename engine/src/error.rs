//! Typed errors that say where things went wrong: node, op, input, expected vs actual.

use crate::dtype::DType;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure inside one node, with the node's name and op type.
    #[error("node '{node}' ({op}): {source}")]
    Node {
        node: String,
        op: String,
        #[source]
        source: Box<Error>,
    },
    /// A model input given to `run` does not match what the plan expects.
    #[error("input '{name}': expected {expected}, got {actual}")]
    Input { name: String, expected: String, actual: String },
    /// A tensor had the wrong element type.
    #[error("expected dtype {expected}, got {actual}")]
    DType { expected: String, actual: DType },
    /// A shape could not be inferred or did not agree.
    #[error("shape error: {0}")]
    Shape(String),
    /// The op or attribute combination is valid ONNX that floe does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Anything else that is wrong with the model or the call.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps this error with the node it happened in.
    pub fn in_node(self, node: &str, op: &str) -> Error {
        Error::Node { node: node.to_string(), op: op.to_string(), source: Box::new(self) }
    }
}

/// `Err(Error::Invalid(format!(...)))` in one word.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error::Invalid(format!($($arg)*))) };
}

/// `Err(Error::Unsupported(format!(...)))` in one word.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { return Err($crate::Error::Unsupported(format!($($arg)*))) };
}
