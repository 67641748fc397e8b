#!/usr/bin/env bash
# Regenerates docs/images/squeezenet_correspondence.png, the picture of the
# `onnxdeconv correspondence` section, and prints its table. Run from the repository root with
# onnxdeconv on PATH; it needs ../shared (SqueezeNet and the photos). About 15 s on two CPU cores.
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
squeezenet=$shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx
# Eyes and nose of five cat and dog faces, written by hand, with square crops around the faces.
onnxdeconv correspondence "$squeezenet" --images "$shared/images" \
  --boxes tests/data/correspondence_boxes.json --preset caffe --random 20 --seed 0 \
  -o "$out/squeezenet_correspondence.png"
# The shipped model: the top and bottom thirds of the three example digits.
onnxdeconv correspondence models/digitnet.onnx --images models/examples \
  --boxes docs/pictures/digit_boxes.json --random 20 --seed 0 -o "$out/digitnet_correspondence.png"
