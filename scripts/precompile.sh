#!/usr/bin/env bash
# Precompile every bundle of a spec into dist/, verify it, and pack it for shipping.
# Usage: scripts/precompile.sh [SPEC] [TARGETS]   e.g. scripts/precompile.sh fusedinf.toml onnx,ort
# An unchanged bundle (same sources, options and tool versions) is skipped; keep dist/ between
# runs (a CI cache) to profit from that. Exit codes: 0 ok, 1 a bundle failed verification,
# 2 a bad spec or input.
set -euo pipefail
spec="${1:-fusedinf.toml}"
targets="${2:-onnx,ort}"
out="${DIST_DIR:-dist}"
cli="${FUSEDINF_CC:-fusedinf-cc}"

"$cli" bundle build "$spec" --out "$out" --targets "$targets" --json "$out/report.json"
"$cli" bundle verify "$out"
"$cli" bundle pack "$out" -o "$out/bundles-${targets//,/-}.tar.gz"
