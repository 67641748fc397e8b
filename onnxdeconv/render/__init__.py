"""Pictures: projection grids, heatmaps and plots, written atomically."""

from __future__ import annotations

from onnxdeconv.render.picture import Panel, display_projection, projection_figure, save_figure

__all__ = ["Panel", "display_projection", "projection_figure", "save_figure"]
