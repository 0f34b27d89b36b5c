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
    /// How `floe convert --stream` prepared it for streaming (a
    /// [`StreamSpec`](crate::stream::StreamSpec): `T` or `windowed:N@T`), if it
    /// did (format version 3).
    pub stream: Option<String>,
}

/// [`ModelInfo`] as format versions 1 and 2 store it (no `stream`); still read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfoV2 {
    pub producer: String,
    pub source: String,
    pub target: String,
    pub quantization: Quantization,
    pub quantized: Vec<QuantizedTensor>,
    pub opset: i64,
}

impl From<ModelInfoV2> for ModelInfo {
    fn from(i: ModelInfoV2) -> ModelInfo {
        let ModelInfoV2 { producer, source, target, quantization, quantized, opset } = i;
        ModelInfo { producer, source, target, quantization, quantized, opset, stream: None }
    }
}

impl From<&ModelInfo> for ModelInfoV2 {
    fn from(i: &ModelInfo) -> ModelInfoV2 {
        ModelInfoV2 {
            producer: i.producer.clone(),
            source: i.source.clone(),
            target: i.target.clone(),
            quantization: i.quantization,
            quantized: i.quantized.clone(),
            opset: i.opset,
        }
    }
}

/// The board preset a file was converted for, and what that preset's kernels need
/// from the CPU. Recorded by `floe convert --target` (format version 2) so that a
/// file carries its own requirements: a floe that does not know the preset (an
/// older or newer build) can still tell whether this machine runs its kernels.
///
/// Weights are stored in the portable [`Layout::Plain`] today (the GEMM packs them
/// for whichever micro-kernel runs, when a plan is made), so a file converted for
/// one preset computes the same results on any CPU; `floe run` warns when this CPU
/// does not meet the record. A packed layout that only one kernel family can read
/// must make loading on another CPU an error naming both presets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Preset name (see `floe targets`), e.g. `rpi4-aarch64`.
    pub preset: String,
    /// Kernel family of the preset, e.g. `neon-aarch64` (empty: not recorded).
    pub kernels: String,
    /// `std::env::consts::ARCH` of machines that run those kernels (empty: any).
    pub arch: String,
    /// CPU features the kernels assume (std's detection names, e.g. `avx512f`).
    pub cpu_features: Vec<String>,
}

impl TargetRecord {
    /// A record naming only the preset (files written without preset data, and
    /// version 1 files, which stored the name in [`ModelInfo::target`] only).
    pub fn named(preset: &str) -> TargetRecord {
        TargetRecord { preset: preset.to_string(), ..TargetRecord::default() }
    }

    /// True if the record says which CPU the kernels need.
    pub fn has_requirements(&self) -> bool {
        !self.kernels.is_empty() || !self.arch.is_empty() || !self.cpu_features.is_empty()
    }
}

/// The whole metadata section (format versions 3 to 5: versions 4 and 5 change only the graph).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub info: ModelInfo,
    pub target: TargetRecord,
    pub tensors: Vec<TensorEntry>,
    /// The graph, postcard-encoded, with tensors as indices into `tensors`.
    pub graph: Vec<u8>,
}

/// The metadata section of format version 1 (no [`TargetRecord`]); still read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetadataV1 {
    pub info: ModelInfoV2,
    pub tensors: Vec<TensorEntry>,
    pub graph: Vec<u8>,
}

/// The metadata section of format version 2 (no `stream` in the info); still read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetadataV2 {
    pub info: ModelInfoV2,
    pub target: TargetRecord,
    pub tensors: Vec<TensorEntry>,
    pub graph: Vec<u8>,
}

impl Metadata {
    /// Decodes a metadata section written by format `version` (1 to 4).
    pub fn decode(bytes: &[u8], version: u32) -> Result<Metadata, postcard::Error> {
        match version {
            1 => {
                let m: MetadataV1 = postcard::from_bytes(bytes)?;
                let target = TargetRecord::named(&m.info.target);
                Ok(Metadata { info: m.info.into(), target, tensors: m.tensors, graph: m.graph })
            }
            2 => {
                let m: MetadataV2 = postcard::from_bytes(bytes)?;
                Ok(Metadata { info: m.info.into(), target: m.target, tensors: m.tensors, graph: m.graph })
            }
            _ => postcard::from_bytes(bytes),
        }
    }

    /// Encodes the section as format `version` (1 to 4) writes it.
    pub fn encode(&self, version: u32) -> Result<Vec<u8>, postcard::Error> {
        let (info, tensors, graph) = ((&self.info).into(), self.tensors.clone(), self.graph.clone());
        match version {
            1 => postcard::to_allocvec(&MetadataV1 { info, tensors, graph }),
            2 => postcard::to_allocvec(&MetadataV2 { info, target: self.target.clone(), tensors, graph }),
            _ => postcard::to_allocvec(self),
        }
    }
}
