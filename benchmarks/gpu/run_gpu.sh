#!/usr/bin/env bash
# On the GPU machine, from the repository root: join the onnxruntime-gpu wheel's parts (made by
# prepare_wheel.sh), install it, then run `pytest -m gpu` and benchmarks/bench_gpu.py.
#
# Usage:
#   benchmarks/gpu/run_gpu.sh [PARTS_DIR]        join, install, test, benchmark
#   benchmarks/gpu/run_gpu.sh stage [PARTS_DIR]  only copy the parts present to the staging folder
#                                                (for parts that travel over several calls)
# PARTS_DIR defaults to shared/onnxruntime-gpu; parts staged earlier in $STAGE
# (default /tmp/onnxdeconv-wheel-parts) count too. Results go to $OUT (default
# /tmp/onnxdeconv-gpu-out): pytest_gpu.txt and bench_gpu.txt.
# The machine needs the NVIDIA driver, CUDA 12 and cuDNN 9 libraries (onnxruntime-gpu's), and
# Python with this project's dependencies (numpy, onnx, onnxruntime's, pytest; torch with CUDA and
# captum for the captum rows).
set -euo pipefail
PY=${PYTHON:-python3}
STAGE=${STAGE:-/tmp/onnxdeconv-wheel-parts}
mode=run
if [ "${1:-}" = stage ]; then mode=stage; shift; fi
PARTS_DIR=${1:-shared/onnxruntime-gpu}
OUT=${OUT:-/tmp/onnxdeconv-gpu-out}
mkdir -p "$STAGE" "$OUT"
if [ -d "$PARTS_DIR" ]; then cp -n "$PARTS_DIR"/* "$STAGE"/ 2>/dev/null || true; fi
echo "staged: $(ls "$STAGE" | tr '\n' ' ')"
[ "$mode" = stage ] && exit 0

sums=("$STAGE"/*.sha256)
[ -e "${sums[0]}" ] || { echo "no <wheel>.sha256 in $STAGE or $PARTS_DIR: run prepare_wheel.sh" >&2; exit 2; }
name=$(basename "${sums[0]}" .sha256)
work=$(mktemp -d)
cat "$STAGE/$name".part-* > "$work/$name"
if ! (cd "$work" && sha256sum -c --quiet "${sums[0]}"); then
    echo "the joined wheel does not match its checksum: a part is missing or damaged" >&2
    exit 2
fi
"$PY" -m pip install --no-deps --force-reinstall --no-index "$work/$name"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
PYTHONPATH=$PWD "$PY" -m pytest -m gpu -q -ra tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt"
PYTHONPATH=$PWD "$PY" benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.txt"
