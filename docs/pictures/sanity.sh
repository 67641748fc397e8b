#!/usr/bin/env bash
# Regenerates the pictures of the `onnxdeconv sanity` section in docs/images/. Run from the
# repository root with onnxdeconv installed; the SqueezeNet picture needs ../shared.
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
squeezenet=$shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx
onnxdeconv sanity "$squeezenet" "$shared/images/cat.jpg" --preset caffe \
  --rule deconvnet --rule guided --rule gradient -o "$out/squeezenet_cat_sanity.png"
onnxdeconv sanity models/digitnet.onnx models/examples/digit_7.png -o "$out/digit_7_sanity.png"
