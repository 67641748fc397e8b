"""The companion deconv graph: reverse walk from a target tensor with one transpose rule per op.

The builder loads on first use, so that :mod:`onnxdeconv.deconv.names` (all that running a
cached graph needs) does not import ONNX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxdeconv.lazy import lazy_attributes

if TYPE_CHECKING:
    from onnxdeconv.deconv.builder import DeconvPlan, build_deconv
    from onnxdeconv.deconv.rules import TRANSPOSE_RULES, Rule

__getattr__ = lazy_attributes(
    __name__,
    {
        "DeconvPlan": "builder",
        "build_deconv": "builder",
        "TRANSPOSE_RULES": "rules",
        "Rule": "names",
    },
)

__all__ = ["TRANSPOSE_RULES", "DeconvPlan", "Rule", "build_deconv"]
