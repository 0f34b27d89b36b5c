//! docs/ops.md is generated from the importer's registry; this fails when stale.

#[test]
fn ops_doc_matches_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ops.md");
    let want = floe_convert::onnx::registry::ops_markdown();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(have == want, "docs/ops.md is stale: regenerate with `cargo run -p floe -- ops --markdown > docs/ops.md`");
}
