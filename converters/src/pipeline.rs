//! The conversion pipeline behind `floe convert`: import, the portable passes,
//! weight quantization, then a `.floe` file.

use crate::onnx::{self, ImportError};
use floe_engine::format::{ModelInfo, Quantization, QuantizedTensor};
use floe_engine::passes::{self, FoldOptions};
use floe_engine::Graph;
use std::path::Path;

/// What `floe convert` was asked to do.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub quantize: Quantization,
    /// A preset name from floe-targets.
    pub target: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { quantize: Quantization::None, target: "generic".into() }
    }
}

/// A converted graph with what was done to it.
pub struct Conversion {
    pub graph: Graph,
    pub info: ModelInfo,
    /// One line per pass that changed something, e.g. "fuse_linear: 12".
    pub passes: Vec<String>,
    pub quantized: Vec<QuantizedTensor>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{path}: {source}")]
    Engine { path: String, source: floe_engine::Error },
    #[error("{0}")]
    Options(String),
}

/// Runs the portable passes in order; returns a line per pass that fired.
pub fn optimize(g: &mut Graph) -> Result<Vec<String>, floe_engine::Error> {
    let mut log = Vec::new();
    let mut note = |name: &str, n: usize| {
        if n > 0 {
            log.push(format!("{name}: {n}"));
        }
    };
    note("fold_constants", passes::infer_and_fold(g, FoldOptions::default())?);
    note("fold_batch_norm", passes::fold_batch_norm(g));
    note("fuse_layer_norm", passes::fuse_layer_norm(g));
    note("fuse_gelu", passes::fuse_gelu(g));
    note("fuse_attention", passes::fuse_attention(g));
    note("fuse_linear_attention", passes::fuse_linear_attention(g));
    note("fuse_linear", passes::fuse_linear(g));
    note("fuse_activation", passes::fuse_activation(g));
    note("remove_dead_nodes", passes::remove_dead_nodes(g));
    note("fold_constants", passes::infer_and_fold(g, FoldOptions::default())?);
    Ok(log)
}

/// Imports `path` and prepares it for a `.floe` file.
pub fn convert(path: &Path, opts: &ConvertOptions) -> Result<Conversion, ConvertError> {
    floe_targets::preset(&opts.target).map_err(ConvertError::Options)?;
    let model = onnx::load(path)?;
    let mut graph = model.graph;
    let eng = |source| ConvertError::Engine { path: path.display().to_string(), source };
    let passes = optimize(&mut graph).map_err(eng)?;
    let quantized = passes::quantize_weights(&mut graph, opts.quantize).map_err(eng)?;
    let info = ModelInfo {
        producer: format!("floe {}", env!("CARGO_PKG_VERSION")),
        source: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        target: opts.target.clone(),
        quantization: opts.quantize,
        quantized: quantized.clone(),
        opset: model.opset,
    };
    Ok(Conversion { graph, info, passes, quantized })
}
