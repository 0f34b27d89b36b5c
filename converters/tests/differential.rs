//! Differential tests: models written by scripts/make_models.py, reference
//! outputs from onnxruntime (committed .npy files). floe must match within 1e-4.
//! The LMUFormer models (scripts/make_lmu_models.py) use floe's own ops, which
//! onnxruntime cannot run; their references come from the script's numpy model.

use floe_engine::exec::Bindings;
use floe_engine::ops::attention::AttentionOp;
use floe_engine::{npy, Graph, Op, Plan, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn check_model(name: &str) {
    let model = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    check_graph(name, &model.graph);
}

/// Runs `g` (imported from model `name`, maybe optimised) on the reference inputs
/// and compares with onnxruntime's outputs.
fn check_graph(name: &str, g: &Graph) {
    let data = models_dir().join(name);
    let inputs: Vec<Tensor> = files(&data, "input_").iter().map(|p| npy::read(p).unwrap()).collect();
    let wants: Vec<Tensor> = files(&data, "output_").iter().map(|p| npy::read(p).unwrap()).collect();
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(&inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    let plan = Arc::new(Plan::new(g, &b).unwrap_or_else(|e| panic!("{name}: {e}")));
    let outs = Session::new(plan).run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(outs.len(), wants.len(), "{name}: output count");
    for (k, (got, want)) in outs.iter().zip(&wants).enumerate() {
        assert_eq!(got.shape(), want.shape(), "{name} output {k}: shape");
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max);
        println!("{name} output {k}: max error {worst:e}");
        assert!(worst <= 1e-4, "{name} output {k}: max error {worst:e} > 1e-4");
    }
}

#[test]
fn mlp_matches_onnxruntime() {
    check_model("mlp");
}

#[test]
fn keyword_cnn_matches_onnxruntime() {
    check_model("keyword_cnn");
}

#[test]
fn transformer_encoder_matches_onnxruntime() {
    check_model("transformer_encoder");
}

#[test]
fn gru_matches_onnxruntime() {
    check_model("gru");
}

#[test]
fn lstm_matches_onnxruntime() {
    check_model("lstm");
}

#[test]
fn transformer_shape_chains_fold_to_constants_when_shapes_are_bound() {
    let model = floe_convert::load(models_dir().join("transformer_encoder.onnx")).unwrap();
    let g = &model.graph;
    let shape_nodes = |g: &floe_engine::Graph| {
        g.nodes.iter().filter(|n| matches!(n.op.name(), "Shape" | "Gather" | "Concat")).count()
    };
    // With S symbolic the Shape -> Gather -> Concat chains stay ...
    assert!(shape_nodes(g) > 0);
    // ... and once S is bound, planning folds all of them into constants.
    let b = Bindings::default().with_symbol("S", 24);
    let plan = Plan::new(g, &b).unwrap();
    assert_eq!(shape_nodes(plan.graph()), 0, "shape arithmetic left in the plan");
}

#[test]
fn attention_p1_matches_onnxruntime() {
    check_model("attention_p1");
}

#[test]
fn attention_sdpa_matches_onnxruntime() {
    check_model("attention_sdpa");
}

#[test]
fn attention_sdpa_causal_matches_onnxruntime() {
    check_model("attention_sdpa_causal");
}

/// Runs the conversion pipeline on model `name`, checks that it left `n` Attention
/// nodes and no Softmax, and that the optimised graph still matches onnxruntime.
/// Returns the Attention ops and the node counts before and after.
fn fused(name: &str, n: usize) -> (Vec<AttentionOp>, usize, usize) {
    let mut g = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap().graph;
    let before = g.nodes.len();
    let log = floe_convert::pipeline::optimize(&mut g).unwrap();
    let ops: Vec<AttentionOp> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Attention(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    let hist = g.op_histogram();
    assert_eq!(ops.len(), n, "{name}: {hist:?} ({log:?})");
    assert!(!hist.contains_key("Softmax"), "{name}: {hist:?}");
    check_graph(name, &g);
    (ops, before, g.nodes.len())
}

fn heads_and_causal(a: &AttentionOp) -> (Option<usize>, bool) {
    match a {
        AttentionOp::Attention { q_num_heads, is_causal, .. } => (*q_num_heads, *is_causal),
        _ => (None, false),
    }
}

#[test]
fn attention_p1_fuses_to_3d_attention_and_still_matches_onnxruntime() {
    let (ops, _, _) = fused("attention_p1", 1);
    assert_eq!(heads_and_causal(&ops[0]), (Some(4), false));
}

#[test]
fn attention_sdpa_fuses_to_3d_attention_and_still_matches_onnxruntime() {
    let (ops, _, _) = fused("attention_sdpa", 1);
    assert_eq!(heads_and_causal(&ops[0]), (Some(4), false));
}

#[test]
fn attention_sdpa_causal_fuses_to_causal_attention_and_still_matches_onnxruntime() {
    let (ops, _, _) = fused("attention_sdpa_causal", 1);
    assert_eq!(heads_and_causal(&ops[0]), (None, true));
}

#[test]
fn transformer_encoder_fuses_both_attention_blocks_without_transposes() {
    let mut g = floe_convert::load(models_dir().join("transformer_encoder.onnx")).unwrap().graph;
    let (ops, before, after) = fused("transformer_encoder", 2);
    assert!(ops.iter().all(|a| heads_and_causal(a) == (Some(4), false)));
    floe_convert::pipeline::optimize(&mut g).unwrap();
    assert!(!g.op_histogram().contains_key("Transpose"), "{:?}", g.op_histogram());
    println!("transformer_encoder: {before} nodes imported, {after} after optimize");
}

#[test]
fn gru_kws_matches_onnxruntime() {
    check_model("gru_kws");
}

#[test]
fn causal_transformer_matches_onnxruntime() {
    check_model("causal_transformer");
}

#[test]
fn running_sum_matches_onnxruntime() {
    check_model("running_sum");
}

#[test]
fn lmuformer_kws_matches_numpy() {
    check_model("lmuformer_kws");
}

/// The spiking model matches numpy as imported and after the pipeline, where every
/// Linear fed by a LIF runs accumulate-only (the reference input keeps every membrane
/// potential at least 4e-4 from its threshold, so f32 rounding cannot flip a spike).
#[test]
fn lmuformer_kws_spiking_matches_numpy_and_runs_accumulate_only() {
    check_model("lmuformer_kws_spiking");
    let mut g = floe_convert::load(models_dir().join("lmuformer_kws_spiking.onnx")).unwrap().graph;
    let log = floe_convert::pipeline::optimize(&mut g).unwrap();
    let hist = g.op_histogram();
    // u, p, f1, f2 and the head take LIF spikes directly; h reads Concat(spikes)
    assert_eq!(hist.get("SpikeLinear"), Some(&5), "{hist:?} ({log:?})");
    assert_eq!(hist.get("LIF"), Some(&8), "{hist:?}");
    check_graph("lmuformer_kws_spiking", &g);
}

#[test]
fn lmuformer_kws_optimized_matches_numpy() {
    let mut g = floe_convert::load(models_dir().join("lmuformer_kws.onnx")).unwrap().graph;
    floe_convert::pipeline::optimize(&mut g).unwrap();
    assert!(!g.op_histogram().contains_key("SpikeLinear"));
    check_graph("lmuformer_kws", &g);
}

#[test]
fn linear_transformer_matches_onnxruntime() {
    check_model("linear_transformer");
}

/// Expected outputs from onnx.reference (onnxruntime 1.22 has no LinearAttention-27).
#[test]
fn linear_transformer_onnx_matches_the_onnx_reference() {
    check_model("linear_transformer_onnx");
}

#[test]
fn linear_transformer_fuses_each_layer_into_one_linear_attention_op() {
    use floe_engine::ops::linear_attention::{FeatureMap, LinearAttentionOp};
    let mut g = floe_convert::load(models_dir().join("linear_transformer.onnx")).unwrap().graph;
    let log = floe_convert::pipeline::optimize(&mut g).unwrap();
    let hist = g.op_histogram();
    let ops: Vec<&LinearAttentionOp> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::LinearAttention(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(ops.len(), 2, "{hist:?} ({log:?})");
    assert!(ops
        .iter()
        .all(|a| matches!(a, LinearAttentionOp::Normalized { causal: true, feature_map: FeatureMap::EluPlusOne, .. })));
    for gone in ["Einsum", "CumSum", "Elu", "Reciprocal", "Div"] {
        assert!(!hist.contains_key(gone), "{gone} left: {hist:?}");
    }
    check_graph("linear_transformer", &g);
}

/// Expected outputs from onnx.reference (onnxruntime 1.22 has no CausalConvWithState-27).
#[test]
fn causal_conv_block_matches_the_onnx_reference() {
    check_model("causal_conv_block");
}
