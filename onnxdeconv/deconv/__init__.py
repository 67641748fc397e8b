"""The companion deconv graph: reverse walk from a target tensor with one transpose rule per op."""

from __future__ import annotations

from onnxdeconv.deconv.builder import DeconvPlan, build_deconv
from onnxdeconv.deconv.rules import TRANSPOSE_RULES, Rule

__all__ = ["TRANSPOSE_RULES", "DeconvPlan", "Rule", "build_deconv"]
