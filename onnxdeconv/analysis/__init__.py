"""Analyses of a model beyond single projections: first-layer filter diagnostics."""

from __future__ import annotations

from onnxdeconv.analysis.filters import (
    BAND_EDGES,
    BAND_NAMES,
    FilterReport,
    analyse_filters,
    band_fractions,
)

__all__ = ["BAND_EDGES", "BAND_NAMES", "FilterReport", "analyse_filters", "band_fractions"]
