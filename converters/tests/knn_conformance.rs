//! ONNX's conformance `test_attention_*` cases again, after `--attention knn` lowering
//! with `k` above every key count: a lowered node then retrieves every visible key,
//! so k-NN attention must give ONNX's expected outputs. Nodes the lowering keeps
//! exact (attn_mask, softcap, a read qk_matmul_output) must pass as before. (ONNX's
//! KV-cache cases all carry an attn_mask, so they stay exact; the k-NN KV cache is
//! checked end to end by knn_decode.rs.)

use floe_convert::conformance::{list_cases, run_case, run_case_with, Outcome};
use floe_convert::pipeline::optimize;
use floe_engine::passes::lower_knn_attention::Decision;
use floe_engine::passes::{lower_knn_attention, KnnLowering};
use std::cell::Cell;
use std::path::PathBuf;

#[test]
fn attention_conformance_cases_pass_through_knn_attention_when_k_covers_every_key() {
    let root = std::env::var_os("FLOE_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance-data/node"));
    let cases: Vec<PathBuf> = list_cases(&root)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_attention_")))
        .collect();
    assert!(
        !cases.is_empty(),
        "no test_attention_* cases under {}: run scripts/prepare-conformance.sh",
        root.display()
    );
    let lowering = KnnLowering::parse("min_keys=0,k=100000,seed=1").unwrap();
    let mut lowered = 0;
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if run_case(dir) != Outcome::Passed {
            continue; // unsupported by the exact path too
        }
        let n = Cell::new(0);
        let prepare = |g: &floe_engine::Graph| {
            let mut g = g.clone();
            optimize(&mut g).map_err(|e| e.to_string())?;
            let report = lower_knn_attention(&mut g, &lowering);
            n.set(report.iter().filter(|(_, d)| matches!(d, Decision::Lowered { .. })).count());
            g.validate().map_err(|e| e.to_string())?;
            Ok(g)
        };
        match run_case_with(dir, &prepare) {
            Outcome::Passed => {}
            o => failures.push(format!("{name}: {o:?}")),
        }
        lowered += (n.get() > 0) as usize;
    }
    println!("knn conformance: {} attention cases, {lowered} lowered to KnnAttention", cases.len());
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    assert!(lowered >= 10, "only {lowered} cases were lowered to KnnAttention");
}
