#!/usr/bin/env bash
# Creates .venv with the pinned Python tools (scripts/requirements.txt) and links
# ONNX's backend node tests to conformance-data/node. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import onnx, onnxruntime, numpy' 2>/dev/null \
   || [ "$(.venv/bin/python -c 'import onnx; print(onnx.__version__)')" != "1.22.0" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
node_dir=$(.venv/bin/python -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node"))')
if [ ! -d "$node_dir" ]; then
  echo "error: $node_dir missing (the onnx wheel must ship its node tests)" >&2
  exit 1
fi
mkdir -p conformance-data
ln -sfn "$node_dir" conformance-data/node
echo "conformance data: conformance-data/node -> $node_dir ($(ls "$node_dir" | wc -l) cases)"
