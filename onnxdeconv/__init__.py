"""onnxdeconv: Zeiler & Fergus deconvnet projections for any ONNX convnet.

The model classes load on first use, so that ``onnxdeconv --help`` (and any import of a light
module such as :mod:`onnxdeconv.errors`) does not load ONNX and ONNX Runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxdeconv.errors import (
    InputError,
    ModelLoadError,
    OnnxDeconvError,
    SelectionError,
    UnknownLayerError,
    UnsupportedOpError,
)
from onnxdeconv.lazy import lazy_attributes

if TYPE_CHECKING:
    from onnxdeconv.graph.load import LoadedModel, load_model
    from onnxdeconv.prepared import Layer, PreparedModel, prepare
    from onnxdeconv.projector import ForwardPass, ProjectionCrops, Projector, Selection

__version__ = "0.1.0"

#: Where each lazily loaded name lives, within this package.
_LAZY = {
    "LoadedModel": "graph.load",
    "load_model": "graph.load",
    "Layer": "prepared",
    "PreparedModel": "prepared",
    "prepare": "prepared",
    "ForwardPass": "projector",
    "ProjectionCrops": "projector",
    "Projector": "projector",
    "Selection": "projector",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "ForwardPass",
    "InputError",
    "Layer",
    "LoadedModel",
    "ModelLoadError",
    "OnnxDeconvError",
    "PreparedModel",
    "ProjectionCrops",
    "Projector",
    "Selection",
    "SelectionError",
    "UnknownLayerError",
    "UnsupportedOpError",
    "load_model",
    "prepare",
]
