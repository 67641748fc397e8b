"""ONNX Runtime sessions: provider choice, and IO binding that keeps forward tensors on device."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.quantized import is_quantized

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Session config entry that turns ONNX Runtime's QDQ graph rewrites off.
DISABLE_QDQ_REWRITES = "session.disable_quant_qdq"


def _quiet_cuda_session(payload: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    # A CUDA wheel on a machine without CUDA logs a multi-line error while it falls back to the CPU;
    # silence the attempt and let get_providers() tell what loaded.
    previous = options.log_severity_level
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(payload, options, providers=[CUDA, CPU])
    finally:
        ort.set_default_logger_severity(2)
        options.log_severity_level = previous


@functools.cache
def cuda_loads() -> bool:
    """Whether the CUDA provider loads here, tried once per process on a one-node graph.

    Asking a large model for CUDA on a machine without it would build that session twice.
    """
    if CUDA not in ort.get_available_providers():
        return False
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    options = ort.SessionOptions()
    return CUDA in _quiet_cuda_session(model.SerializeToString(), options).get_providers()


#: What ONNX Runtime raises when it refuses a model (each a direct subclass of Exception).
_REFUSALS: tuple[type[Exception], ...] = (
    RuntimeError,
    *(
        error
        for name in (
            "Fail",
            "InvalidArgument",
            "InvalidGraph",
            "InvalidProtobuf",
            "NotImplemented",
            "RuntimeException",
            "NoSuchFile",
            "EPFail",
        )
        if isinstance(error := getattr(ort.capi.onnxruntime_pybind11_state, name, None), type)
    ),
)
#: ORT's prefix (``[ONNXRuntimeError] : 1 : FAIL :``) and the C++ place and function it names.
_ORT_PREFIX = re.compile(
    r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:/\S+:\d+ [^(]*(?:\([^()]*\))?\s)?"
)


def refusal(exc: BaseException) -> str:
    """The first line of an ONNX Runtime error, without its code and C++ source location."""
    lines = str(exc).strip().splitlines()
    first = _ORT_PREFIX.sub("", lines[0] if lines else "").strip()
    return first or type(exc).__name__


def create_session(
    model: onnx.ModelProto,
    device: Device = "auto",
    threads: int | None = None,
    name: str = "the model",
) -> ort.InferenceSession:
    """Create an inference session on CUDA where it loads (for ``auto``), else on the CPU.

    Args:
        model: The graph to run.
        device: Where to run it (``auto``: CUDA where it loads).
        threads: Intra-op threads (default: ONNX Runtime's).
        name: The model, for the message when ONNX Runtime refuses it.

    Raises:
        OnnxDeconvError: ONNX Runtime refuses the model (an opset it does not support, a node it
            cannot run), or ``device="cuda"`` was asked for and the CUDA provider does not load.
    """
    try:
        return _create_session(model, device, threads)
    except _REFUSALS as exc:
        raise OnnxDeconvError(
            f"ONNX Runtime {ort.__version__} cannot run {name}: {refusal(exc)} (export the model "
            "with an opset and ops this version supports)"
        ) from exc


def _create_session(
    model: onnx.ModelProto, device: Device, threads: int | None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if is_quantized(model):
        # Run the quantized graph as ONNX defines it (float ops between exact Q/DQ), not through
        # ONNX Runtime's QDQ rewrites: these re-quantize float weights with scales of their own
        # (WeightBiasQuantization) and fuse DQ -> op -> Q into integer kernels that round, and on
        # x86 without VNNI saturate, differently, so that the activations, masks and switches of
        # the forward pass would not be those of the map the deconv graph transposes.
        options.add_session_config_entry(DISABLE_QDQ_REWRITES, "1")
    payload = model.SerializeToString()
    if device != "cpu" and cuda_loads():
        session = _quiet_cuda_session(payload, options)
        if CUDA in session.get_providers():
            return session
    if device == "cuda":
        raise OnnxDeconvError(
            "the CUDA execution provider does not load here: install onnxruntime-gpu with a "
            "matching CUDA and cuDNN, or run on the CPU",
            parameter="device",
        )
    return ort.InferenceSession(payload, options, providers=[CPU])


def provider_of(session: ort.InferenceSession) -> str:
    """The execution provider that runs the session's nodes first."""
    return str(session.get_providers()[0])


def _device_type(session: ort.InferenceSession) -> str:
    return "cuda" if provider_of(session) == CUDA else "cpu"


def run_bound(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray | ort.OrtValue],
    outputs: Sequence[str],
    to_host: Sequence[str] = (),
) -> dict[str, ort.OrtValue]:
    """Run ``session`` with IO binding.

    Outputs stay on the session's device except those named in ``to_host``, which are bound to the
    CPU. On CUDA this keeps switches and rectifier inputs on the GPU between the two sessions.
    """
    binding = session.io_binding()
    for name, value in feeds.items():
        if isinstance(value, ort.OrtValue):
            binding.bind_ortvalue_input(name, value)
        else:
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
    device = _device_type(session)
    for name in outputs:
        binding.bind_output(name, "cpu" if name in to_host else device)
    session.run_with_iobinding(binding)
    return dict(zip(outputs, binding.get_outputs(), strict=True))
