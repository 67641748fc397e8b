#!/usr/bin/env bash
# Regenerates the occlusion pictures in docs/images/ that the docs show. Run from the repository
# root with onnxdeconv installed; the SqueezeNet picture needs ../shared (model, labels, photos).
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
onnxdeconv occlusion models/digitnet.onnx models/examples/digit_7.png --label 7 --occluder 8 \
  --stride 2 -o "$out/digit_7_occlusion.png"
squeezenet=$shared/models/squeezenet1.1-fp16
onnxdeconv occlusion "$squeezenet/SqueezeNet_fp16.onnx" "$shared/images/dogs.jpg" --preset caffe \
  --labels "$squeezenet/Labels.txt" -o "$out/squeezenet_dogs_occlusion.png"
