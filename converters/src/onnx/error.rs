//! Import errors: each names the file and, where it applies, the node, op and value.

use std::path::PathBuf;

/// One op (or op configuration) the importer does not support.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnsupportedOp {
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
    /// Why, when the op type is known but this use of it is not.
    pub detail: Option<String>,
    /// First node that uses it.
    pub node: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dom = if self.domain.is_empty() { "ai.onnx".to_string() } else { self.domain.clone() };
        write!(f, "{} ({dom} opset {}, node '{}')", self.op_type, self.opset, self.node)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid ONNX model (truncated or corrupt protobuf): {msg}")]
    Decode { path: PathBuf, msg: String },
    #[error("{path}: {} unsupported op(s): {}", .ops.len(), .ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; "))]
    Unsupported { path: PathBuf, ops: Vec<UnsupportedOp> },
    #[error("{path}: tensor '{tensor}': external data file '{file}': {msg}")]
    ExternalData { path: PathBuf, tensor: String, file: String, msg: String },
    #[error("{path}: node '{node}' ({op}): {msg}")]
    Node { path: PathBuf, node: String, op: String, msg: String },
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
}

impl ImportError {
    /// True when the model is valid but uses something floe does not implement.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ImportError::Unsupported { .. })
    }
}
