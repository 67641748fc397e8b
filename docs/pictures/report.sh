#!/usr/bin/env bash
# Regenerates the docs picture of `onnxdeconv report`: a cropped screenshot of the DigitNet page
# in headless Chromium. Run from the repository root with onnxdeconv and chromium on PATH.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
onnxdeconv report models/digitnet.onnx --images models/examples -o "$work/report"
# Also time the SqueezeNet run quoted in docs/commands/report.md, when the shared model is here.
if [ -f ../shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx ]; then
  onnxdeconv report ../shared/models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx --images ../shared/images \
    --preset caffe --labels ../shared/models/squeezenet1.1-fp16/Labels.txt -o "$work/squeezenet"
fi
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1400,4600 \
  --screenshot="$work/page.png" "file://$work/report/index.html" 2>/dev/null
# Keep the top of the page (summary, layers, predictions) and the start of the projections.
python - "$work/page.png" docs/images/report_digitnet.png <<'PY'
import sys

import cv2

page = cv2.imread(sys.argv[1])
top = page[:1180]
projections = page[3885:4580]
cv2.imwrite(sys.argv[2], cv2.vconcat([top, projections]))
PY
echo docs/images/report_digitnet.png
