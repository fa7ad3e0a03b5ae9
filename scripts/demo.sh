#!/usr/bin/env bash
# The main job end to end on ONNX Runtime (CPU): export two zoo models that share a backbone,
# fuse them, verify the fused outputs against the separate models, and benchmark both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "cpu,zoo"
work="${DEMO_DIR:-demo}"
mkdir -p "$work"

echo "== export two zoo models (a classifier and a segmenter on one backbone)"
python -m model_zoo export head0 head1 -o "$work/models"

echo "== fuse"
fusedinf-cc fuse cls="$work/models/head0.onnx" seg="$work/models/head1.onnx" \
  --share-inputs auto -o "$work/fused.onnx" --explain

echo "== verify"
fusedinf-cc verify "$work/fused.onnx"

echo "== fuse ahead of time for this CPU (loads with no graph work, weights memory-mapped)"
fusedinf-cc fuse cls="$work/models/head0.onnx" seg="$work/models/head1.onnx" \
  --share-inputs auto --aot -o "$work/fused-aot.onnx"
fusedinf-cc verify "$work/fused-aot.onnx"

echo "== inspect"
fusedinf-cc inspect "$work/fused.onnx"

echo "== bench"
fusedinf-cc bench --fused "$work/fused.onnx" --runs "${DEMO_RUNS:-50}" --json "$work/bench.json"
