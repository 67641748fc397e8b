"""``onnxdeconv check``: a linter for exported convnets, for CI jobs."""

from __future__ import annotations

from onnxdeconv.check.config import CheckConfig, load_baseline, load_config
from onnxdeconv.check.run import CHECK_STAGES, CheckReport, Finding, run_checks

__all__ = [
    "CHECK_STAGES",
    "CheckConfig",
    "CheckReport",
    "Finding",
    "load_baseline",
    "load_config",
    "run_checks",
]
