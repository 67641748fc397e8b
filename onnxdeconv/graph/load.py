"""Load and validate a user's ONNX model.

Loading makes any convnet file usable by the later passes: it refuses external data outside the
model's folder, drops IR-3 style weight inputs, upgrades opsets whose MaxPool has no ``Indices``
output, and reads the one image input the projections start from. The experimental ops of the
first opsets (ImageScaler, Crop, Affine, ...) pass through their stand-ins
(:mod:`~onnxdeconv.graph.experimental`); those ONNX Runtime cannot run are refused here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from onnx import external_data_helper, helper

from onnxdeconv.errors import ModelLoadError, first_line
from onnxdeconv.graph import experimental, passes
from onnxdeconv.labels import METADATA_KEY as LABELS_KEY

logger = logging.getLogger(__name__)

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


@dataclass
class LoadedModel:
    """A validated forward model and the facts about its image input."""

    model: onnx.ModelProto
    input_name: str
    input_shape: list[int | str]
    input_dtype: np.dtype
    path: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's input declares, or None where the batch is free."""
        batch = self.input_shape[0] if self.input_shape else None
        return batch if isinstance(batch, int) and batch > 0 else None

    @property
    def opset(self) -> int:
        """The model's default-domain opset."""
        return passes.default_opset(self.model)

    @property
    def labels(self) -> list[str] | None:
        """Class names from the ``onnxdeconv.labels`` metadata entry, if the model carries one."""
        raw = self.metadata.get(LABELS_KEY)
        return list(json.loads(raw)) if raw else None

    def constants(self) -> Mapping[str, np.ndarray]:
        """Initializers and outputs of ``Constant`` nodes, by tensor name."""
        return passes.constant_tensors(self.model.graph)


def _check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external data that is outside the model's folder, missing, or out of its file."""
    root = base_dir.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        try:
            info = external_data_helper.ExternalDataInfo(tensor)
            offset, length = int(info.offset or 0), info.length
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(
                f"tensor '{tensor.name}' has a malformed external data entry ({exc}): export the "
                "model again"
            ) from None
        if not info.location or any(ord(c) < 32 for c in info.location):
            raise ModelLoadError(
                f"tensor '{tensor.name}' points to external data {info.location!r}, which is no "
                "file name: export the model again"
            )
        location = Path(info.location)
        target = (root / location).resolve()
        if location.is_absolute() or not target.is_relative_to(root):
            raise ModelLoadError(
                f"tensor '{tensor.name}' points to external data '{info.location}' outside the "
                f"model's folder {root}: move the data file next to the model"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"tensor '{tensor.name}' needs external data file '{info.location}', which is "
                f"missing from {root}: copy it next to the model"
            )
        _check_extent(tensor, info.location, offset, length, target.stat().st_size)


def _check_extent(
    tensor: onnx.TensorProto, location: str, offset: int, length: int | None, size: int
) -> None:
    """Refuse an external data extent that runs past its file or disagrees with the tensor."""
    held = size - offset if length is None else length
    if offset < 0 or held < 0 or offset > size or held > size - offset:
        raise ModelLoadError(
            f"tensor '{tensor.name}' reads {held} bytes at offset {offset} of '{location}', which "
            f"holds {size}: the data file is truncated or not this model's; export it again"
        )
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return
    bits = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize * 8
    if tensor.data_type in _SUB_BYTE_TYPES:
        bits = 4
    needed = (math.prod(tensor.dims) * bits + 7) // 8
    if held != needed:
        raise ModelLoadError(
            f"tensor '{tensor.name}' of shape {list(tensor.dims)} needs {needed} bytes but its "
            f"external data in '{location}' holds {held}: export the model again"
        )


#: Element types stored two to a byte.
_SUB_BYTE_TYPES = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist: check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a folder: give the path of the .onnx file inside it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__}): export the model to "
            "ONNX again"
        ) from exc
    if not model.graph.node:
        raise ModelLoadError(f"'{path}' holds no graph nodes: is it really an ONNX model?")
    _check_external_data(model, path.parent)
    try:
        _keep_external_data(model, path.parent)
    except (ValueError, OSError) as exc:
        first = first_line(exc)
        raise ModelLoadError(
            f"the external data of '{path}' cannot be read ({first}): export the model again"
        ) from exc
    return model


def _keep_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Leave the graph's external initializers in their files; read the other external tensors.

    Each initializer of the main graph whose data is in an external file becomes a detached one
    that names the file (:func:`~onnxdeconv.graph.passes.stored_data` maps it), so that only the
    weights a projection uses are read, when it uses them. Tensors in ``Constant`` nodes and
    subgraphs, small ones and integer ones are read now. Mutates ``model``.
    """
    root = base_dir.resolve()
    for index, tensor in enumerate(model.graph.initializer):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        # The weights the skeleton leaves out (passes.skeleton): the checker and shape inference
        # never need their values, while small and integer tensors (shapes, axes) stay read.
        if tensor.data_type in FLOAT_TYPES and math.prod(tensor.dims) > passes.SKELETON_LIMIT:
            stored = (str(root / info.location), int(info.offset or 0))
            model.graph.initializer[index].CopyFrom(
                passes.detached_tensor(tensor.name, tensor.data_type, tensor.dims, stored)
            )
    # What is left (no initializer of the main graph, or not mappable) is read now.
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor) and not passes.is_detached(tensor):
            external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))


#: Integer inputs carry pixels (a uint8 image cast to float inside the graph); the projection
#: comes back as float32 in the input's shape.
INTEGER_TYPES = {
    onnx.TensorProto.UINT8,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.INT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.INT32,
    onnx.TensorProto.UINT64,
    onnx.TensorProto.INT64,
}


def _image_input(model: onnx.ModelProto, where: str) -> onnx.ValueInfoProto:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelLoadError(
            f"{where} has {len(inputs)} graph inputs ({names}); onnxdeconv needs exactly one "
            "image input: export the model with a single input"
        )
    value: onnx.ValueInfoProto = inputs[0]
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in FLOAT_TYPES and elem_type not in INTEGER_TYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type)
        raise ModelLoadError(
            f"input '{value.name}' of {where} is {type_name}; onnxdeconv needs a float or "
            "integer (pixel) image input: export the model with one"
        )
    return value


def load_model(source: str | Path | onnx.ModelProto) -> LoadedModel:
    """Load, validate and normalise a model for instrumentation.

    Args:
        source: Path to an ``.onnx`` file, or a model already in memory.

    Returns:
        The normalised model with its image input described.

    Raises:
        ModelLoadError: The file is missing, invalid, unsafe, or has no single float input.
    """
    path: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        where = "the model"
    else:
        path = Path(source)
        model = _read(path)
        where = f"'{path}'"
    model = passes.strip_initializer_inputs(model)
    experimental.refuse_unreadable(model, where)
    try:
        passes.check_model(passes.skeleton(model))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = first_line(exc)
        raise ModelLoadError(f"{where} is not a valid ONNX model: {first}") from exc
    model = passes.upgrade_opset(model)
    value = _image_input(model, where)
    shape: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]
    if len(shape) < 3:
        raise ModelLoadError(
            f"input '{value.name}' of {where} has rank {len(shape)}; onnxdeconv needs a batched "
            "image input such as [N, C, H, W]"
        )
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    metadata = {p.key: p.value for p in model.metadata_props}
    logger.debug("loaded %s: input %s %s %s", where, value.name, shape, dtype)
    return LoadedModel(model, value.name, shape, dtype, path, metadata)
