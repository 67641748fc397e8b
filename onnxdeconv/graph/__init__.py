"""Loading, validating and rewriting the user's forward graph."""

from __future__ import annotations

from onnxdeconv.graph.load import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
