"""The rules, and the names of the deconv graphs' inputs and outputs.

What code that runs a built graph needs, without importing ONNX (see :mod:`onnxdeconv.cache`).
"""

from __future__ import annotations

from typing import Literal

Rule = Literal["deconvnet", "guided", "gradient"]
RULES: tuple[Rule, ...] = ("deconvnet", "guided", "gradient")
SIGNAL = "signal"
BATCH_INDEX = "batch_index"
PROJECTION = "projection"
#: Windowed graphs: the position of each row's one activation in the target layer, ``[K, rank]``.
WINDOW_ORIGIN = "window_origin"
