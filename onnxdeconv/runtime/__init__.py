"""ONNX Runtime: sessions and providers, IO binding, and the one forward runner.

Every analysis and ``check`` reach ONNX Runtime through :class:`ForwardRunner` or the
:class:`~onnxdeconv.projector.Projector`, never by creating sessions of their own.
"""

from __future__ import annotations

from onnxdeconv.runtime.runner import ForwardRunner
from onnxdeconv.runtime.sessions import (
    CPU,
    CUDA,
    Device,
    create_session,
    cuda_loads,
    provider_of,
    run_bound,
)

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
