//! onnxruntime's fused attention contrib ops (`com.microsoft.Attention`,
//! `com.microsoft.MultiHeadAttention`) imported by lowering onto floe's canonical
//! `Attention`: each model written by scripts/make_contrib_attention.py must match
//! onnxruntime's CPU outputs (committed .npy files) within 1e-4, and each variant
//! floe does not implement must be refused with an error naming the op and the
//! attribute or input.

use floe_convert::ImportError;
use floe_engine::exec::Bindings;
use floe_engine::{npy, Op, Plan, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/contrib")
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Imports `name`, runs it on the stored inputs and compares every output with
/// onnxruntime's (relative error where |value| > 1, as scores near the -10000 mask
/// value are rounded by ORT in f32).
fn check_model(name: &str) {
    let dir = models_dir();
    let model = floe_convert::load(dir.join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = &model.graph;
    assert!(
        g.nodes.iter().any(|n| matches!(n.op, Op::Attention(_))),
        "{name}: the lowering holds no canonical Attention node"
    );
    let data = dir.join(name);
    let inputs: Vec<Tensor> = files(&data, "input_").iter().map(|p| npy::read(p).unwrap()).collect();
    let wants: Vec<Tensor> = files(&data, "output_").iter().map(|p| npy::read(p).unwrap()).collect();
    assert!(!wants.is_empty(), "{name}: no reference outputs");
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
        assert!(worst <= 1e-4, "{name} output {k}: max error {worst:e} > 1e-4");
    }
}

/// Imports `name` and returns the error, which must be an "unsupported" one.
fn refused(name: &str) -> String {
    let path = models_dir().join(format!("{name}.onnx"));
    match floe_convert::load(&path) {
        Ok(_) => panic!("{name}: imported, but floe does not implement this variant"),
        Err(e @ ImportError::Unsupported { .. }) => e.to_string(),
        Err(e) => panic!("{name}: expected an 'unsupported' error, got: {e}"),
    }
}

fn assert_names(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "error does not name '{w}': {msg}");
    }
}

#[test]
fn attention_without_mask_matches_onnxruntime() {
    check_model("attention_basic");
}

#[test]
fn attention_with_key_lengths_mask_matches_onnxruntime() {
    check_model("attention_mask_1d");
}

#[test]
fn attention_with_2d_mask_and_custom_filter_value_matches_onnxruntime() {
    check_model("attention_mask_2d");
}

#[test]
fn attention_with_3d_mask_matches_onnxruntime() {
    check_model("attention_mask_3d");
}

#[test]
fn attention_unidirectional_with_scale_matches_onnxruntime() {
    check_model("attention_unidirectional");
}

#[test]
fn attention_with_qkv_hidden_sizes_and_attention_bias_matches_onnxruntime() {
    check_model("attention_qkv_sizes_bias");
}

#[test]
fn attention_with_stacked_past_and_present_matches_onnxruntime() {
    check_model("attention_past_present");
}

#[test]
fn mha_cross_attention_with_projection_bias_matches_onnxruntime() {
    check_model("mha_bias_cross");
}

#[test]
fn mha_with_2d_key_padding_mask_matches_onnxruntime() {
    check_model("mha_key_padding_2d");
}

#[test]
fn mha_with_key_lengths_matches_onnxruntime() {
    check_model("mha_key_padding_1d");
}

#[test]
fn mha_with_attention_bias_scale_and_qk_output_matches_onnxruntime() {
    check_model("mha_attention_bias_qk");
}

#[test]
fn mha_with_past_unidirectional_and_present_matches_onnxruntime() {
    check_model("mha_past_unidirectional");
}

#[test]
fn attention_with_mask_index_computed_in_the_graph_matches_onnxruntime() {
    // mask_index = Cast(ReduceSum(attention_mask)) has no declared shape: its rank is inferred at import.
    check_model("attention_inferred_mask_rank");
}

#[test]
fn lowered_attention_is_one_canonical_node_with_key_lengths_as_nonpad_input() {
    let model = floe_convert::load(models_dir().join("attention_mask_1d.onnx")).unwrap();
    let g = &model.graph;
    let attn: Vec<_> = g.nodes.iter().filter(|n| matches!(n.op, Op::Attention(_))).collect();
    assert_eq!(attn.len(), 1);
    let n = attn[0];
    // Node named after the ONNX node; the key lengths reach input 6 (nonpad_kv_seqlen).
    assert!(n.name.starts_with("attention_mask_1d/"), "{}", n.name);
    assert!(n.inputs.get(6).copied().flatten().is_some(), "key lengths not wired to nonpad_kv_seqlen");
    assert!(n.inputs.get(3).copied().flatten().is_none(), "no additive mask expected");
}

#[test]
fn attention_rotary_is_refused_naming_do_rotary() {
    assert_names(&refused("unsupported_attention_rotary"), &["Attention", "com.microsoft", "do_rotary"]);
}

#[test]
fn attention_shared_buffer_is_refused_naming_the_attribute() {
    assert_names(
        &refused("unsupported_attention_share_buffer"),
        &["Attention", "com.microsoft", "past_present_share_buffer"],
    );
}

#[test]
fn attention_left_padding_mask_index_is_refused() {
    assert_names(&refused("unsupported_attention_mask_2b"), &["Attention", "mask_index", "2 * batch"]);
}

#[test]
fn attention_4d_mask_index_is_refused() {
    assert_names(&refused("unsupported_attention_mask_4d"), &["Attention", "mask_index", "rank 4"]);
}

#[test]
fn mha_packed_qkv_is_refused() {
    assert_names(&refused("unsupported_mha_packed_qkv"), &["MultiHeadAttention", "com.microsoft", "packed QKV"]);
}

#[test]
fn mha_packed_kv_is_refused() {
    assert_names(&refused("unsupported_mha_packed_kv"), &["MultiHeadAttention", "packed KV"]);
}

#[test]
fn mha_causal_cross_attention_is_refused_naming_unidirectional() {
    assert_names(&refused("unsupported_mha_causal_cross"), &["MultiHeadAttention", "unidirectional"]);
}
