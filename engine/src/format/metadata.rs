//! The metadata section: what the file holds besides raw tensor bytes.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

/// How a tensor's bytes are laid out in the data section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Row-major, as the tensor's shape says.
    Plain,
}

/// One tensor of the data section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// The graph value it backs (empty for op attributes).
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub layout: Layout,
    /// Byte offset from the start of the data section (a multiple of 64).
    pub offset: u64,
    pub len: u64,
}

/// Weight storage chosen at conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quantization {
    None,
    /// Weights stored as f16, widened to f32 when a plan is made.
    F16,
    /// Weights stored as int8 with one f32 scale per output channel (symmetric).
    Int8,
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantization::None => "none",
            Quantization::F16 => "f16",
            Quantization::Int8 => "int8",
        })
    }
}

/// One weight that conversion quantized, with the error it introduced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    pub name: String,
    pub kind: Quantization,
    /// For int8: the axis the scales run along.
    pub axis: Option<usize>,
    pub max_abs_error: f32,
    /// max |w - q(w)| / max |w|.
    pub rel_error: f32,
}

/// Descriptive facts about a converted model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// floe version that wrote the file.
    pub producer: String,
    /// File the model was converted from.
    pub source: String,
    /// Target preset it was converted for.
    pub target: String,
    pub quantization: Quantization,
    pub quantized: Vec<QuantizedTensor>,
    /// ONNX opset of the source model (0 if not from ONNX).
    pub opset: i64,
}

/// The whole metadata section.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub info: ModelInfo,
    pub tensors: Vec<TensorEntry>,
    /// The graph, postcard-encoded, with tensors as indices into `tensors`.
    pub graph: Vec<u8>,
}
