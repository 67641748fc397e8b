"""ONNX Runtime sessions: provider choice, and IO binding that keeps forward tensors on device."""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.passes import SHARED_LOCATION, is_detached
from onnxdeconv.graph.quantized import is_quantized

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


def create_session(
    model: onnx.ModelProto,
    device: Device = "auto",
    threads: int | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> ort.InferenceSession:
    """Create an inference session on CUDA where it loads (for ``auto``), else on the CPU.

    ``weights`` holds the data of the initializers that :func:`~onnxdeconv.graph.passes.
    detach_weights` left empty. ONNX Runtime reads them where they are, so that sessions share
    the weights the process holds once; where a graph optimizer needs an initializer's data
    first, the session gets its own copy instead. Either way they are not serialized into the
    model's bytes and parsed back.

    Raises:
        OnnxDeconvError: ``device="cuda"`` was asked for and the CUDA provider does not load.
    """
    payload = model.SerializeToString()
    shared = [tensor.name for tensor in model.graph.initializer if is_detached(tensor)]
    if not shared:
        return _session(payload, _options(model, threads), device)
    if weights is None or any(name not in weights for name in shared):
        raise ValueError(f"the data of detached initializers {shared} is not given")
    arrays = [np.ascontiguousarray(weights[name]) for name in shared]
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
    large = sum(array.nbytes for array in arrays) >= NO_PREPACKING_BYTES
    try:
        # add_initializer reads the buffers in place. A placeholder must name a file (an empty
        # one of ours): a graph optimizer that reads an initializer's data before the buffer
        # replaces it fails on that file, loudly (its length is checked), and the session is
        # made again with copies.
        options = _options(model, threads, large)
        options.log_severity_level = 4  # that failure is expected, not the user's concern
        options.add_session_config_entry(EXTERNAL_FOLDER, _placeholder_folder())
        for name, value in zip(shared, values, strict=True):
            options.add_initializer(name, value)
        session = _session(payload, options, device)
    except ort.capi.onnxruntime_pybind11_state.Fail:
        logger.debug("the session cannot read the shared weights in place; it copies them")
        options = _options(model, threads, large)
        options.add_external_initializers(shared, values)
        session = _session(payload, options, device)
    # The buffers live as long as the session, whatever ONNX Runtime does with them.
    session.onnxdeconv_weights = values
    return session


def _options(
    model: onnx.ModelProto, threads: int | None, no_prepacking: bool = False
) -> ort.SessionOptions:
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
    if no_prepacking:
        # Prepacked kernels (MatMul, Gemm) make a packed copy of each weight per session.
        options.add_session_config_entry(DISABLE_PREPACKING, "1")
    return options


@functools.cache
def _placeholder_folder() -> str:
    """A folder holding the empty file that detached initializers name, made once per process."""
    folder = tempfile.mkdtemp(prefix="onnxdeconv-")
    atexit.register(shutil.rmtree, folder, True)
    (Path(folder) / SHARED_LOCATION).touch()
    return folder


def _session(payload: bytes, options: ort.SessionOptions, device: Device) -> ort.InferenceSession:
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
