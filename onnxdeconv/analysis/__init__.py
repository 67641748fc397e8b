"""The paper's analyses as a library: prepared model and data in, a result dataclass out.

Every analysis has one call shape, ``analysis(prepared, images, *, options..., device="auto",
progress=None) -> Result``, where ``prepared`` is a :class:`~onnxdeconv.prepared.PreparedModel`
(or, where the analysis projects from one layer, a :class:`~onnxdeconv.projector.Projector`),
and every result has its arrays as fields and ``to_json()``:

- top-k per channel over a dataset (Fig. 2): :class:`FeaturesState`, a mergeable state that the
  engines (:func:`onnxdeconv.engines.mine_features`) drive over image files;
- evolution over checkpoints (Fig. 4): :func:`trace_evolution` -> :class:`EvolutionReport` (it
  takes ``checkpoints``, several prepared models);
- invariance (Fig. 5): :func:`invariance_curves` -> :class:`InvarianceCurves`;
- first-layer filters (Fig. 6): :func:`analyse_filters` -> :class:`FilterReport`;
- occlusion (Fig. 7): :func:`occlusion_maps` -> :class:`OcclusionResult`;
- correspondence (Table 1): :func:`correspondence_scores` -> :class:`CorrespondenceResult`;
- weight randomisation (Adebayo et al. 2018): :func:`sanity_check` -> :class:`SanityReport`;
- the preprocessing a classifier expects: :func:`rank_preprocessing` ->
  :class:`PreprocessingReport`;
- all of them on one page: :func:`build_report` -> :class:`Report`.

The layers each analysis picks when none are given live in :mod:`onnxdeconv.analysis.layers`.
Names load on first use, so that importing one analysis does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxdeconv.lazy import lazy_attributes

if TYPE_CHECKING:
    from onnxdeconv.analysis.correspondence import CorrespondenceResult, correspondence_scores
    from onnxdeconv.analysis.evolution import EvolutionReport, trace_evolution
    from onnxdeconv.analysis.features import FeaturesState, MaximaRunner
    from onnxdeconv.analysis.filters import FilterReport, analyse_filters
    from onnxdeconv.analysis.invariance import InvarianceCurves, invariance_curves
    from onnxdeconv.analysis.layers import (
        check_layers,
        correspondence_layers,
        evolution_layers,
        feature_layers,
        invariance_layers,
        occlusion_layer,
        sanity_layer,
    )
    from onnxdeconv.analysis.occlusion import OcclusionResult, occlusion_maps
    from onnxdeconv.analysis.preprocess import PreprocessingReport, rank_preprocessing
    from onnxdeconv.analysis.report import Report, build_report
    from onnxdeconv.analysis.sanity import SanityReport, sanity_check

#: Where each name lives, within this package.
_MODULES = {
    "CorrespondenceResult": "correspondence",
    "correspondence_scores": "correspondence",
    "EvolutionReport": "evolution",
    "trace_evolution": "evolution",
    "FeaturesState": "features",
    "MaximaRunner": "features",
    "FilterReport": "filters",
    "analyse_filters": "filters",
    "InvarianceCurves": "invariance",
    "invariance_curves": "invariance",
    "check_layers": "layers",
    "correspondence_layers": "layers",
    "evolution_layers": "layers",
    "feature_layers": "layers",
    "invariance_layers": "layers",
    "occlusion_layer": "layers",
    "sanity_layer": "layers",
    "OcclusionResult": "occlusion",
    "occlusion_maps": "occlusion",
    "PreprocessingReport": "preprocess",
    "rank_preprocessing": "preprocess",
    "Report": "report",
    "build_report": "report",
    "SanityReport": "sanity",
    "sanity_check": "sanity",
}


__getattr__ = lazy_attributes(__name__, _MODULES)


__all__ = [
    "CorrespondenceResult",
    "EvolutionReport",
    "FeaturesState",
    "FilterReport",
    "InvarianceCurves",
    "MaximaRunner",
    "OcclusionResult",
    "PreprocessingReport",
    "Report",
    "SanityReport",
    "analyse_filters",
    "build_report",
    "check_layers",
    "correspondence_layers",
    "correspondence_scores",
    "evolution_layers",
    "feature_layers",
    "invariance_curves",
    "invariance_layers",
    "occlusion_layer",
    "occlusion_maps",
    "rank_preprocessing",
    "sanity_check",
    "sanity_layer",
    "trace_evolution",
]
