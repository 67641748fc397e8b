#!/usr/bin/env bash
# Regenerates the pictures in docs/images/ that the docs show. Run from the repository root
# with onnxdeconv installed; the SqueezeNet pictures need ../shared (models and photos).
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
onnxdeconv project models/digitnet.onnx models/examples/digit_7.png --layer relu2 --top 8 \
  -o "$out/digit_7_relu2.png"
onnxdeconv project models/digitnet.onnx models/examples/digit_3.png --layer relu3 --top 8 \
  --rule guided -o "$out/digit_3_relu3_guided.png"
squeezenet=$shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx
onnxdeconv project "$squeezenet" "$shared/images/cat.jpg" --preset caffe --layer relu18 --top 8 \
  -o "$out/squeezenet_cat_relu18.png"
onnxdeconv project "$squeezenet" "$shared/images/dogs.jpg" --preset caffe --layer relu10 --top 8 \
  -o "$out/squeezenet_dogs_relu10.png"
onnxdeconv filters "$squeezenet" --images "$shared/images" --preset caffe \
  -o "$out/squeezenet_filters.png"
# The analyses' pictures, one script per command.
for script in docs/pictures/*.sh; do
  bash "$script"
done
