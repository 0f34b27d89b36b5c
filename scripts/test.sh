#!/usr/bin/env bash
# The test suite: prepares the pinned Python tools and ONNX conformance data, then
# runs every Rust test (unit, differential vs onnxruntime, error classes, docs,
# and the ONNX node conformance suite, whose counts are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare-conformance.sh
cargo test --workspace --all-targets
# Print the conformance counts (the same test, with its output shown; --workspace
# keeps the feature set of the build above, so nothing is rebuilt).
cargo test --workspace --test conformance -- --nocapture 2>&1 | grep -E "^(conformance:|FAILED|test result)"
