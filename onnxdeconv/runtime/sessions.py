"""ONNX Runtime sessions: provider choice, and IO binding that keeps forward tensors on device."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnxruntime as ort

from onnxdeconv.errors import OnnxDeconvError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Sessions whose shared weights reach this many bytes run without prepacked weights: about a
#: quarter slower at large MatMuls (measured at 256 MB), without a packed copy per session.
NO_PREPACKING_BYTES = 256 << 20
DISABLE_PREPACKING = "session.disable_prepacking"
#: Session config entry: the folder where a model loaded from bytes finds its external data.
EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"
#: Session config entry that turns ONNX Runtime's QDQ graph rewrites off.
DISABLE_QDQ_REWRITES = "session.disable_quant_qdq"
#: Session config entry that makes a CUDA session fail where a node would fall back to the CPU.
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
#: Set to 1, CUDA sessions refuse CPU fallback (the GPU tests check that every node runs on CUDA).
STRICT_CUDA_ENV = "ONNXDECONV_STRICT_CUDA"
#: The graph that probes CUDA, serialized: ``y = Identity(x)``, x and y float [1], opset 13, IR 7
#: (what ``onnx.helper`` writes for it; a test rebuilds it), so that the probe needs no ONNX.
PROBE_GRAPH = (
    b'\x08\x07:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def _quiet_cuda_session(
    payload: bytes | str, options: ort.SessionOptions, strict: bool = False
) -> ort.InferenceSession:
    # A CUDA wheel on a machine without CUDA logs a multi-line error while it falls back to the CPU;
    # silence the attempt and let get_providers() tell what loaded.
    providers = [CUDA, CPU]
    if strict:
        # ONNX Runtime refuses the CPU provider in the list once CPU fallback is disabled.
        options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        providers = [CUDA]
    previous = options.log_severity_level
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(payload, options, providers=providers)
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
    options = ort.SessionOptions()
    return CUDA in _quiet_cuda_session(PROBE_GRAPH, options).get_providers()


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
    model: onnx.ModelProto | Path,
    device: Device = "auto",
    threads: int | None = None,
    name: str = "the model",
    *,
    quantized: bool | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> ort.InferenceSession:
    """Create an inference session on CUDA where it loads (for ``auto``), else on the CPU.

    ``weights`` holds the data of the initializers that :func:`~onnxdeconv.graph.passes.
    detach_weights` left empty. ONNX Runtime reads them where they are, so that sessions share
    the weights the process holds once; where a graph optimizer needs an initializer's data
    first, the session gets its own copy instead. Either way they are not serialized into the
    model's bytes and parsed back.

    Args:
        model: The graph, or the path of an ``.onnx`` file (a cached graph, which ONNX Runtime
            reads without ONNX in Python).
        device: Where to run it (``auto``: CUDA where it loads).
        threads: Intra-op threads (default: ONNX Runtime's).
        name: The model, for the message when ONNX Runtime refuses it.
        quantized: Whether the graph holds quantized ops (read from ``model`` when it is a graph;
            a file is taken as float unless told).
        weights: The data of the graph's detached initializers (those that name the model's
            data file are mapped from it where not given).

    Raises:
        OnnxDeconvError: ONNX Runtime refuses the model (an opset it does not support, a node it
            cannot run), or ``device="cuda"`` was asked for and the CUDA provider does not load.
    """
    try:
        return _create_session(model, device, threads, quantized, weights)
    except _REFUSALS as exc:
        raise OnnxDeconvError(
            f"ONNX Runtime {ort.__version__} cannot run {name}: {refusal(exc)} (export the model "
            "with an opset and ops this version supports)"
        ) from exc


def _create_session(
    model: onnx.ModelProto | Path,
    device: Device,
    threads: int | None,
    quantized: bool | None,
    weights: Mapping[str, np.ndarray] | None,
) -> ort.InferenceSession:
    if isinstance(model, Path):
        return _session(str(model), _options(model, threads, quantized), device)
    from onnxdeconv.graph.passes import is_detached, stored_data

    payload = model.SerializeToString()
    detached = [tensor for tensor in model.graph.initializer if is_detached(tensor)]
    if not detached:
        return _session(payload, _options(model, threads, quantized), device)
    weights = weights or {}
    shared, arrays = [], []
    for tensor in detached:
        # Given buffers first; else the model's own data file, mapped (graph.load keeps it).
        data = weights.get(tensor.name)
        data = stored_data(tensor) if data is None else data
        if data is None:
            raise ValueError(f"the data of detached initializer '{tensor.name}' is not given")
        shared.append(tensor.name)
        arrays.append(np.ascontiguousarray(data))
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
    large = sum(array.nbytes for array in arrays) >= NO_PREPACKING_BYTES
    try:
        # add_initializer reads the buffers in place. A placeholder must name a file (an empty
        # one of ours): a graph optimizer that reads an initializer's data before the buffer
        # replaces it fails on that file, loudly (its length is checked), and the session is
        # made again with copies.
        options = _options(model, threads, quantized, large)
        options.log_severity_level = 4  # that failure is expected, not the user's concern
        options.add_session_config_entry(EXTERNAL_FOLDER, _placeholder_folder())
        for name, value in zip(shared, values, strict=True):
            options.add_initializer(name, value)
        session = _session(payload, options, device)
    except ort.capi.onnxruntime_pybind11_state.Fail:
        logger.debug("the session cannot read the shared weights in place; it copies them")
        options = _options(model, threads, quantized, large)
        options.add_external_initializers(shared, values)
        session = _session(payload, options, device)
    # The buffers live as long as the session, whatever ONNX Runtime does with them.
    session.onnxdeconv_weights = values
    return session


def _options(
    model: onnx.ModelProto | Path,
    threads: int | None,
    quantized: bool | None,
    no_prepacking: bool = False,
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if quantized is None and not isinstance(model, Path):
        from onnxdeconv.graph.quantized import is_quantized

        quantized = is_quantized(model)
    if quantized:
        # Run the quantized graph as ONNX defines it (float ops between exact Q/DQ), not through
        # ONNX Runtime's QDQ rewrites: these re-quantize float weights with scales of their own
        # (WeightBiasQuantization) and fuse DQ -> op -> Q into integer kernels that round, and on
        # x86 without VNNI saturate, differently, so that the activations, masks and switches of
        # the forward pass would not be those of the map the deconv graph transposes.
        options.add_session_config_entry(DISABLE_QDQ_REWRITES, "1")
    if no_prepacking:
        # Prepacked kernels (MatMul, Gemm) make a packed copy of each weight per session.
        options.add_session_config_entry(DISABLE_PREPACKING, "1")
    return options


@functools.cache
def _placeholder_folder() -> str:
    """A folder holding the empty file that detached initializers name, made once per process."""
    from onnxdeconv.graph.passes import SHARED_LOCATION

    folder = tempfile.mkdtemp(prefix="onnxdeconv-")
    atexit.register(shutil.rmtree, folder, True)
    (Path(folder) / SHARED_LOCATION).touch()
    return folder


def _session(
    payload: bytes | str, options: ort.SessionOptions, device: Device
) -> ort.InferenceSession:
    if device != "cpu" and cuda_loads():
        strict = os.environ.get(STRICT_CUDA_ENV) == "1"
        session = _quiet_cuda_session(payload, options, strict)
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
