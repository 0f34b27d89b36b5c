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
    /// `--stream`: check the model streams this way and record it.
    pub stream: Option<floe_engine::stream::StreamSpec>,
    /// `--attention knn[:...]`: lower long attention to k-NN attention after the
    /// portable passes. `None`: keep exact attention.
    pub attention: Option<passes::KnnLowering>,
    /// `--attention unfused` sets this false: softmax attention stays the ops the
    /// exporter wrote (MatMul, Softmax, ...), for comparing with the fused op.
    pub fuse_attention: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            quantize: Quantization::None,
            target: "generic".into(),
            stream: None,
            attention: None,
            fuse_attention: true,
        }
    }
}

/// A converted graph with what was done to it.
pub struct Conversion {
    pub graph: Graph,
    pub info: ModelInfo,
    /// One line per pass that changed something, e.g. "fuse_linear: 12".
    pub passes: Vec<String>,
    pub quantized: Vec<QuantizedTensor>,
    /// With `--stream`: the resolved spec and every node's classification.
    pub stream: Option<(floe_engine::stream::StreamSpec, floe_engine::stream::Analysis)>,
    /// With `--attention knn`: every Attention node's name and whether it was lowered, and why.
    pub attention: Vec<(String, passes::lower_knn_attention::Decision)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Import(#[from] ImportError),
    /// (Not a `source` field: the message already includes it, and error
    /// reporters would print it twice.)
    #[error("{path}: {error}")]
    Engine { path: String, error: floe_engine::Error },
    #[error("{0}")]
    Options(String),
}

/// Runs the portable passes in order; returns a line per pass that fired.
pub fn optimize(g: &mut Graph) -> Result<Vec<String>, floe_engine::Error> {
    optimize_with(g, true)
}

/// [`optimize`], with attention fusion only when `fuse_attention` (off: the
/// exporter's MatMul/Softmax attention runs op by op, `--attention unfused`).
pub fn optimize_with(g: &mut Graph, fuse_attention: bool) -> Result<Vec<String>, floe_engine::Error> {
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
    if fuse_attention {
        note("fuse_attention", passes::fuse_attention(g));
    }
    note("fuse_linear_attention", passes::fuse_linear_attention(g));
    // Fusions above leave their replaced nodes behind; drop them first so that a
    // product they read counts as having one consumer.
    note("remove_dead_nodes", passes::remove_dead_nodes(g));
    note("fuse_linear", passes::fuse_linear(g));
    note("fuse_activation", passes::fuse_activation(g));
    note("spike_accumulate", passes::spike_accumulate(g));
    note("channels_last", passes::channels_last(g));
    note("remove_dead_nodes", passes::remove_dead_nodes(g));
    note("fold_constants", passes::infer_and_fold(g, FoldOptions::default())?);
    Ok(log)
}

/// Imports `path` and prepares it for a `.floe` file.
pub fn convert(path: &Path, opts: &ConvertOptions) -> Result<Conversion, ConvertError> {
    floe_targets::preset(&opts.target).map_err(ConvertError::Options)?;
    let model = onnx::load(path)?;
    let mut graph = model.graph;
    let eng = |error| ConvertError::Engine { path: path.display().to_string(), error };
    if opts.attention.is_some() && !opts.fuse_attention {
        return Err(ConvertError::Options(
            "--attention knn needs fused attention; it cannot be combined with unfused".into(),
        ));
    }
    let mut passes = optimize_with(&mut graph, opts.fuse_attention).map_err(eng)?;
    let attention = match &opts.attention {
        Some(_) if opts.stream.is_some() => {
            return Err(ConvertError::Options(
                "--attention knn and --stream cannot be combined: KnnAttention has no streaming form".into(),
            ))
        }
        Some(lowering) => passes::lower_knn_attention(&mut graph, lowering),
        None => Vec::new(),
    };
    let lowered = attention.iter().filter(|(_, d)| matches!(d, passes::lower_knn_attention::Decision::Lowered { .. }));
    if let n @ 1.. = lowered.count() {
        passes.push(format!("lower_knn_attention: {n}"));
    }
    let quantized = passes::quantize_weights(&mut graph, opts.quantize).map_err(eng)?;
    // Weights that folds or quantization replaced are not stored.
    passes::drop_unused_constants(&mut graph);
    let stream = match &opts.stream {
        Some(spec) => Some(check_stream(&graph, spec).map_err(eng)?),
        None => None,
    };
    let info = ModelInfo {
        producer: format!("floe {}", env!("CARGO_PKG_VERSION")),
        source: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        target: opts.target.clone(),
        quantization: opts.quantize,
        quantized: quantized.clone(),
        opset: model.opset,
        stream: stream.as_ref().map(|(s, _)| s.to_string()),
    };
    Ok(Conversion { graph, info, passes, quantized, stream, attention })
}

/// Classifies every node for `spec`; a stateful spec fails, naming each blocking
/// node, when the model cannot stream.
fn check_stream(
    g: &Graph,
    spec: &floe_engine::stream::StreamSpec,
) -> Result<(floe_engine::stream::StreamSpec, floe_engine::stream::Analysis), floe_engine::Error> {
    use floe_engine::stream::{analyze, StreamMode};
    let spec = spec.resolved(g)?;
    let symbol = spec.symbol.clone().unwrap_or_default();
    let analysis = analyze(g, &symbol, &floe_engine::exec::Bindings::default())?;
    if let (StreamMode::Stateful(_), Some(e)) = (&spec.mode, analysis.blocking_error()) {
        return Err(e);
    }
    Ok((spec, analysis))
}
