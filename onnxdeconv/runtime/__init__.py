"""ONNX Runtime: sessions and providers, IO binding, and the one forward runner.

Every analysis and ``check`` reach ONNX Runtime through :class:`ForwardRunner` or the
:class:`~onnxdeconv.projector.Projector`, never by creating sessions of their own.
The runner loads on first use: running cached graphs (:mod:`onnxdeconv.cache`) needs only
:mod:`~onnxdeconv.runtime.sessions`, which does not import ONNX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxdeconv.lazy import lazy_attributes
from onnxdeconv.runtime.sessions import (
    CPU,
    CUDA,
    Device,
    create_session,
    cuda_loads,
    provider_of,
    run_bound,
)

if TYPE_CHECKING:
    from onnxdeconv.runtime.runner import ForwardRunner

__getattr__ = lazy_attributes(__name__, {"ForwardRunner": "runner"})

__all__ = [
    "CPU",
    "CUDA",
    "Device",
    "ForwardRunner",
    "create_session",
    "cuda_loads",
    "provider_of",
    "run_bound",
]
