#!/usr/bin/env bash
# Regenerates the first-layer diagnostics of the shipped model (the SqueezeNet one is made by
# docs/make_pictures.sh). Run from the repository root with onnxdeconv installed.
set -euo pipefail
onnxdeconv filters models/digitnet.onnx --images models/examples -o docs/images/digitnet_filters.png
