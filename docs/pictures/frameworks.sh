#!/usr/bin/env bash
# Regenerates the pictures of the "Models from other frameworks" section in docs/images/. Run from
# the repository root with onnxdeconv (and its test extras) installed. The PaddleOCR models are
# read out of the rapidocr-onnxruntime wheel, which tests/frameworks_fixtures.py downloads once
# (pip download --no-deps) into ~/.cache/onnxdeconv-tests; the photo comes from ../shared.
set -euo pipefail
out=${OUT:-docs/images}
shared=${ONNXDECONV_SHARED:-../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Keras (tf2onnx): NHWC input, Rescaling folded into the graph (so raw 0-255 pixels, as the
# model's onnxdeconv.preprocess metadata says), random weights.
onnxdeconv project tests/data/keras_nhwc.onnx "$shared/images/grace_hopper.jpg" --layer relu2 \
  --top 6 -o "$out/frameworks_keras_nhwc_relu2.png"

# PaddleOCR (PaddlePaddle, paddle2onnx): the models and two text pictures drawn with OpenCV.
models=$(python - "$work" <<'PY'
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, "tests")
from frameworks_fixtures import cache_dir, fetch_rapidocr_models

work = Path(sys.argv[1])
paths = fetch_rapidocr_models(cache_dir())
# A text line for the direction classifier: 48x192, dark text on light paper.
line = np.full((96, 384, 3), 235, np.uint8)
cv2.putText(line, "Deconvnet", (12, 68), cv2.FONT_HERSHEY_DUPLEX, 2.0, (30, 30, 30), 3, cv2.LINE_AA)
cv2.imwrite(str(work / "line.png"), line)
# A page for the detector: words of several sizes and angles.
page = np.full((640, 640, 3), 240, np.uint8)
for text, origin, scale in [("Zeiler", (40, 120), 3.0), ("& Fergus", (60, 260), 2.2),
                            ("visualizing", (30, 400), 1.6), ("2014", (380, 560), 2.6)]:
    cv2.putText(page, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 5, cv2.LINE_AA)
cv2.imwrite(str(work / "page.png"), page)
print(paths["cls"], paths["det"])
PY
)
read -r cls det <<<"$models"
# PaddleOCR feeds BGR images from OpenCV: the classifier scales to [-1, 1], the detector uses the
# ImageNet mean and std.
# The classifier's logits (add44): channel 0 says "upright", channel 1 "rotated 180 degrees".
onnxdeconv project "$cls" "$work/line.png" --size 48,192 --scale 0.00784313725 --mean 1 --std 1 \
  --bgr --layer add44 --top 2 --rule guided -o "$out/frameworks_paddle_cls.png"
onnxdeconv project "$det" "$work/page.png" --size 320,320 --scale 0.00392156863 \
  --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --bgr --layer relu11 --top 6 \
  --rule guided -o "$out/frameworks_paddle_det.png"
