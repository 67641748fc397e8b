"""onnxdeconv: Zeiler & Fergus deconvnet projections for any ONNX convnet.

The model classes load on first use, so that ``onnxdeconv --help`` (and any import of a light
module such as :mod:`onnxdeconv.errors`) does not load ONNX and ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onnxdeconv.errors import (
    InputError,
    ModelLoadError,
    OnnxDeconvError,
    SelectionError,
    UnknownLayerError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    from onnxdeconv.graph.load import LoadedModel, load_model
    from onnxdeconv.prepared import Layer, PreparedModel, prepare
    from onnxdeconv.projector import ForwardPass, Projector, Selection

__version__ = "0.1.0"

#: Where each lazily loaded name lives.
_LAZY = {
    "LoadedModel": "onnxdeconv.graph.load",
    "load_model": "onnxdeconv.graph.load",
    "Layer": "onnxdeconv.prepared",
    "PreparedModel": "onnxdeconv.prepared",
    "prepare": "onnxdeconv.prepared",
    "ForwardPass": "onnxdeconv.projector",
    "Projector": "onnxdeconv.projector",
    "Selection": "onnxdeconv.projector",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxdeconv' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
