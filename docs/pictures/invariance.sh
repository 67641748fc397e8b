#!/usr/bin/env bash
# Regenerates the docs pictures of `onnxdeconv invariance`. Run from the repository root with
# onnxdeconv on PATH; the SqueezeNet picture needs ../shared (model, labels and photos).
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
squeezenet=$shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx
# The digits lie on black: repeating the black edge keeps the background clean.
onnxdeconv invariance models/digitnet.onnx models/examples --border replicate \
  -o "$out/invariance_digitnet.png"
# Five photos SqueezeNet classifies confidently; all three transforms, default sweeps (under 1 min).
photos=(kitten_224.png dogs.jpg grace_hopper.jpg burger.jpg fish.png)
onnxdeconv invariance "$squeezenet" "${photos[@]/#/$shared/images/}" --preset caffe \
  --labels "$shared/models/squeezenet1.1-fp16/Labels.txt" -o "$out/invariance_squeezenet.png"
