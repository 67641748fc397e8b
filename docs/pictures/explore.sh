#!/usr/bin/env bash
# Regenerates the screenshots of the `onnxdeconv explore` page (docs/commands/explore.md) and
# prints its timings: DigitNet over models/examples and SqueezeNet over the shared photos, each
# with a features run, in headless Chromium. Run from the repository root with onnxdeconv's
# Python on PATH; needs ../shared, web/fetch-ort.sh done, chromium and chromium-driver.
set -euo pipefail
python=${PYTHON:-$(dirname "$(command -v onnxdeconv)")/python}
"$python" benchmarks/explore_page.py --clicks 20 --screenshots docs/images
