"""The companion deconv graph: reverse walk from a target tensor with one transpose rule per op."""

from __future__ import annotations

from onnxdeconv.deconv.builder import DeconvPlan, build_deconv, path_tensors
from onnxdeconv.deconv.rules import RULES, Mode

__all__ = ["RULES", "DeconvPlan", "Mode", "build_deconv", "path_tensors"]
