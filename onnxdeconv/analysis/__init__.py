"""Analyses of a model beyond single projections (arrays in, arrays out).

One module per experiment of Zeiler & Fergus: ``features`` (each channel's top-k over a dataset,
Fig. 2), ``evolution`` (Fig. 4), ``invariance`` (Fig. 5), ``filters`` (Fig. 6), ``occlusion``
(Fig. 7), ``correspondence`` (Table 1), and ``sanity`` (the weight-randomisation test).
"""

from __future__ import annotations

from onnxdeconv.analysis.filters import (
    BAND_EDGES,
    BAND_NAMES,
    FilterReport,
    analyse_filters,
    band_fractions,
)

__all__ = ["BAND_EDGES", "BAND_NAMES", "FilterReport", "analyse_filters", "band_fractions"]
