#!/usr/bin/env bash
# Regenerates the pictures of the "PyTorch model zoo" section in docs/images/. Run from the
# repository root with onnxdeconv and its test extras (torch) installed; the photos come from
# ../shared/images. The nets are the tiny ones of tests/zoo_nets.py, with RANDOM weights: the
# pictures show what each architecture's projection path does to an image, not learned features.
set -euo pipefail
out=${OUT:-docs/images}
shared=${ONNXDECONV_SHARED:-../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# U-Net-like decoder (dynamo export, dynamic axes): ConvTranspose upsampling and a skip Concat.
onnxdeconv project tests/data/zoo/unet-dynamo-dynamic.onnx "$shared/images/cat.jpg" \
  --size 160,160 --layer relu4 --top 4 --position all --rule guided -o "$out/zoo_unet_relu4.png"

# EfficientNet-style (dynamo export, dynamic axes): SiLU exported as x * Sigmoid(x).
onnxdeconv project tests/data/zoo/efficientnet-dynamo-dynamic.onnx \
  "$shared/images/grace_hopper.jpg" --size 160,160 --layer mul3 --top 4 --position all \
  --rule guided -o "$out/zoo_efficientnet_mul3.png"

# ShuffleNetV2 through the old TorchScript exporter at opset 11 with dynamic axes: its channel
# shuffle and chunk are Shape/Gather/Div chains that constant folding resolves at --size.
python - "$work/shufflenet.onnx" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
import zoo_nets

zoo_nets.export(zoo_nets.build("shufflenet"), "shufflenet", "legacy-dynamic", Path(sys.argv[1]))
PY
onnxdeconv project "$work/shufflenet.onnx" "$shared/images/cat.jpg" --size 160,160 \
  --layer relu1 --top 4 --position all --rule guided -o "$out/zoo_shufflenet_relu1.png"
