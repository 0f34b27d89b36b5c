//! ONNX backend node tests (prepared by scripts/prepare-conformance.sh into
//! conformance-data/node, or FLOE_ONNX_NODE_DIR). No case may fail, and every
//! case listed as `passed` in conformance_expected.txt must still pass.

use floe_convert::conformance::{list_cases, parse_expectations, run_case_guarded, Outcome};
use std::collections::HashMap;
use std::path::PathBuf;

#[test]
fn onnx_node_tests_pass_and_do_not_regress() {
    let root = std::env::var_os("FLOE_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance-data/node"));
    let cases = list_cases(&root).unwrap_or_default();
    assert!(
        !cases.is_empty(),
        "no ONNX node tests under {}: run `bash scripts/prepare-conformance.sh` (or set FLOE_ONNX_NODE_DIR)",
        root.display()
    );
    let expect_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_expected.txt");
    let expected: HashMap<String, String> =
        parse_expectations(&std::fs::read_to_string(&expect_path).unwrap_or_default()).into_iter().collect();
    let (mut passed, mut unsupported) = (0, 0);
    let mut failures = Vec::new();
    let mut regressions = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let o = run_case_guarded(dir);
        match &o {
            Outcome::Passed => passed += 1,
            Outcome::Unsupported(_) => unsupported += 1,
            Outcome::Failed(m) => failures.push(format!("{name}: {m}")),
        }
        if expected.get(&name).is_some_and(|s| s == "passed") && o != Outcome::Passed {
            regressions.push(name);
        }
    }
    println!(
        "conformance: {passed} passed, {} failed, {unsupported} unsupported ({} cases)",
        failures.len(),
        cases.len()
    );
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(regressions.is_empty(), "cases that passed before no longer pass: {regressions:?}");
    assert!(failures.is_empty(), "{} conformance failures (listed above)", failures.len());
}
