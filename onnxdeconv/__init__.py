"""onnxdeconv: Zeiler & Fergus deconvnet projections for any ONNX convnet."""

from __future__ import annotations

from onnxdeconv.errors import (
    InputError,
    ModelLoadError,
    OnnxDeconvError,
    SelectionError,
    UnknownLayerError,
    UnsupportedOpError,
)
from onnxdeconv.graph.load import LoadedModel, load_model
from onnxdeconv.prepared import Layer, PreparedModel, prepare
from onnxdeconv.projector import ForwardPass, Projector, Selection

__version__ = "0.1.0"

__all__ = [
    "ForwardPass",
    "InputError",
    "Layer",
    "LoadedModel",
    "ModelLoadError",
    "OnnxDeconvError",
    "PreparedModel",
    "Projector",
    "Selection",
    "SelectionError",
    "UnknownLayerError",
    "UnsupportedOpError",
    "load_model",
    "prepare",
]
