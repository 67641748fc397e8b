#!/usr/bin/env bash
# Download the onnxruntime-gpu wheel for the GPU machine and split it into parts of at most 60 MiB,
# so that it can travel to a machine that reaches no package index (see docs/performance.md, "GPU").
#
# Usage: benchmarks/gpu/prepare_wheel.sh [OUT_DIR]     (default: shared/onnxruntime-gpu)
# Environment:
#   ORT_VERSION  the onnxruntime-gpu version (default: the one installed here, else 1.31.1)
#   PY_VERSION   the GPU machine's Python, as 311 for 3.11 (default: this Python's)
#   PLATFORM     the wheel platform tag (default: manylinux_2_27_x86_64)
# Writes OUT_DIR/<wheel>.part-00, -01, ... and OUT_DIR/<wheel>.sha256; run_gpu.sh joins them.
set -euo pipefail
PY=${PYTHON:-python3}
OUT_DIR=${1:-shared/onnxruntime-gpu}
VERSION=${ORT_VERSION:-$($PY -c "import importlib.metadata as m; print(m.version('onnxruntime-gpu'))" 2>/dev/null || echo 1.31.1)}
PY_VERSION=${PY_VERSION:-$($PY -c "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')")}
PLATFORM=${PLATFORM:-manylinux_2_27_x86_64}
PART_SIZE=60M

mkdir -p "$OUT_DIR"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform "$PLATFORM" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    "onnxruntime-gpu==$VERSION" -d "$download"
wheel=$(ls "$download"/*.whl)
name=$(basename "$wheel")
rm -f "$OUT_DIR/$name".part-* "$OUT_DIR/$name.sha256"
(cd "$download" && sha256sum "$name") > "$OUT_DIR/$name.sha256"
split -b "$PART_SIZE" -d -a 2 "$wheel" "$OUT_DIR/$name.part-"
echo "onnxruntime-gpu $VERSION (cp$PY_VERSION) in $(ls "$OUT_DIR/$name".part-* | wc -l) parts:"
ls -l "$OUT_DIR"
