"""Pictures: projection grids, heatmaps and plots, written atomically."""

from __future__ import annotations

from onnxdeconv.render.picture import Panel, display_projection, projection_figure, save_figure
from onnxdeconv.render.projection import projection_label, projection_picture

__all__ = [
    "Panel",
    "display_projection",
    "projection_figure",
    "projection_label",
    "projection_picture",
    "save_figure",
]
