"""Quantized models: weights dequantized to float constants; which integer tensors carry signals.

A QDQ model (the format of ONNX Runtime's quantizer, TensorRT and OpenVINO) stores each weight as
``DequantizeLinear(int8 initializer, scale, zero_point)``. :func:`dequantize_constants` folds
every DequantizeLinear (and QuantizeLinear) whose inputs are all constants into a float
initializer, so that the transpose rules read the dequantized weight of a Conv or Gemm as the
constant they need: ``(q - zero_point) * scale`` with per-tensor or per-axis scales, computed
in float32 as ONNX Runtime computes it.

Activations stay quantized in the forward graph: a signal crosses the integer tensors that a
quantizer writes (:data:`QUANTIZED_OUTPUTS`). On each of them the signal is the derivative with
respect to the real value the integers stand for (their dequantized value), so that a
QuantizeLinear/DequantizeLinear pair passes it straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from onnxdeconv.graph.passes import constant_tensors, copy_model, node_attribute

logger = logging.getLogger(__name__)

#: Integer outputs (by index) of quantizing ops that carry the signal. DynamicQuantizeLinear's
#: scale and zero point (outputs 1 and 2) are statistics of the whole tensor, held at their
#: forward values like a normalisation's, so they carry none.
QUANTIZED_OUTPUTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (0,),
    "DynamicQuantizeLinear": (0,),
    "ConvInteger": (0,),
    "MatMulInteger": (0,),
    "QLinearConv": (0,),
    "QLinearMatMul": (0,),
    "QGemm": (0,),
    "QLinearAdd": (0,),
    "QLinearMul": (0,),
}

#: Outputs of ops that never carry a signal although they may be float and computed from the image.
HELD_OUTPUTS: dict[str, tuple[int, ...]] = {"DynamicQuantizeLinear": (1, 2)}

#: Smallest value of each integer type a quantizer writes: a zero point there means the range
#: starts at 0.
TYPE_MINIMUM: dict[int, int] = {
    onnx.TensorProto.UINT8: 0,
    onnx.TensorProto.INT8: -128,
    onnx.TensorProto.UINT16: 0,
    onnx.TensorProto.INT16: -32768,
}
#: Largest value of each integer type a quantizer writes.
TYPE_MAXIMUM: dict[int, int] = {
    onnx.TensorProto.UINT8: 255,
    onnx.TensorProto.INT8: 127,
    onnx.TensorProto.UINT16: 65535,
    onnx.TensorProto.INT16: 32767,
}


#: Ops that mark a model as quantized (whose ONNX Runtime session must keep Q/DQ as they are).
QUANTIZING_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the main graph of ``model`` quantizes or dequantizes anything."""
    return any(node.op_type in QUANTIZING_OPS for node in model.graph.node)


def carries_signal(node: onnx.NodeProto, index: int) -> bool | None:
    """Whether output ``index`` of ``node`` carries the signal: True, False, or None (by type)."""
    if index in HELD_OUTPUTS.get(node.op_type, ()):
        return False
    if index in QUANTIZED_OUTPUTS.get(node.op_type, ()):
        return True
    return None


def along_axis(value: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A per-tensor (scalar) or per-axis (1-D) quantization parameter shaped to broadcast.

    Args:
        value: The scale or zero point.
        axis: The quantization axis (negative counts from the end).
        rank: Rank of the quantized tensor.
    """
    value = np.asarray(value)
    if value.ndim == 0 or (value.size == 1 and value.ndim <= 1):
        return value.reshape(())
    if value.ndim != 1:
        raise ValueError("blocked quantization (a scale with more than one axis) is not supported")
    shape = [1] * rank
    shape[axis % rank] = value.size
    return value.reshape(shape)


def dequantize(
    quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1
) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32 (ONNX DequantizeLinear), per tensor or per axis."""
    rank = max(np.ndim(quantized), 1)
    offset = np.zeros(()) if zero_point is None else along_axis(zero_point, axis, rank)
    difference = (quantized.astype(np.int64) - offset.astype(np.int64)).astype(np.float32)
    real = difference * along_axis(scale, axis, rank).astype(np.float32)
    # The output has the scale's type (float16 scales from opset 19 on).
    return np.asarray(real, scale.dtype if np.asarray(scale).dtype.kind == "f" else np.float32)


def _quantize(node: onnx.NodeProto, inputs: list[np.ndarray], axis: int) -> np.ndarray:
    """ONNX QuantizeLinear of constants: round half to even, add the zero point, saturate."""
    x, scale = inputs[0].astype(np.float32), inputs[1].astype(np.float32)
    zero_point = inputs[2] if len(inputs) > 2 else np.array(0, np.uint8)
    rank = max(x.ndim, 1)
    rounded = np.rint(x / along_axis(scale, axis, rank)).astype(np.int64)
    shifted = rounded + along_axis(zero_point, axis, rank).astype(np.int64)
    info = np.iinfo(zero_point.dtype)
    return np.asarray(np.clip(shifted, info.min, info.max), zero_point.dtype)


def dequantize_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold DequantizeLinear and QuantizeLinear nodes whose inputs are all constants.

    Returns ``model`` itself when there are none, else a new model in which each such node's
    output is a float (or, for a folded QuantizeLinear, integer) initializer. Blocked
    quantization and non-default domains are left alone.
    """
    foldable = ("DequantizeLinear", "QuantizeLinear")
    if not any(n.op_type in foldable and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    constants: dict[str, np.ndarray] = {}
    known = constant_tensors(model.graph)
    folded: dict[str, np.ndarray] = {}
    kept: list[onnx.NodeProto] = []
    for node in model.graph.node:
        value = _fold(node, known, constants)
        if value is None:
            kept.append(node)
            continue
        constants[node.output[0]] = folded[node.output[0]] = value
    if not folded:
        return model
    out = copy_model(model)
    graph = out.graph
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())
    read = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    logger.debug("dequantized %d constants", len(folded))
    return out


def _fold(
    node: onnx.NodeProto, known: Mapping[str, np.ndarray], folded: Mapping[str, np.ndarray]
) -> np.ndarray | None:
    """The value of a Q or DQ node whose inputs are constants, else None."""
    if node.op_type not in ("DequantizeLinear", "QuantizeLinear") or node.domain not in (
        "",
        "ai.onnx",
    ):
        return None
    names = [name for name in node.input if name]
    if not all(name in known or name in folded for name in names):
        return None
    if node_attribute(node, "block_size", 0):
        return None
    inputs = [np.asarray(folded[n] if n in folded else known[n]) for n in names]
    axis = int(node_attribute(node, "axis", 1))
    try:
        if node.op_type == "DequantizeLinear":
            return dequantize(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, axis)
        return _quantize(node, inputs, axis)
    except ValueError as exc:
        logger.debug("cannot fold %s: %s", node.name, exc)
        return None


#: Quantized ops that have no transpose, with the reason (for the error that names them).
REFUSED_QUANTIZED_OPS: dict[str, str] = {
    op: (
        "its output is requantized inside the op: a ReLU fused into its output range (a zero "
        "point at the type's minimum) rectifies an accumulator the graph never exposes, so no "
        "exact transpose can be built; quantize the model in the QDQ format (QuantizeLinear/"
        "DequantizeLinear around float ops) instead"
    )
    for op in ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul")
}
