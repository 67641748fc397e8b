"""Quantized ops on the projection path: what each quantizer stands for, marked before the walk.

Two facts about a quantized graph are not visible to a single node's rule:

* **A quantizer that absorbed a ReLU.** ONNX Runtime's QDQ quantizer removes a Relu (or Clip)
  whose output range starts at 0: the following QuantizeLinear, whose zero point is the integer
  type's minimum, clamps negative values to zero itself. Such a QuantizeLinear reading the output
  of a linear op is marked as a rectifier (:data:`RECTIFIER_ATTRIBUTE`), so that its rule treats
  it as the ReLU it replaced.
* **Held scales.** ``quantize_dynamic`` writes
  ``DynamicQuantizeLinear(x) -> ConvInteger (or MatMulInteger) -> Cast -> Mul(x_scale * w_scale)``.
  The input scale ``x_scale`` is a statistic of the whole tensor, held at its forward value like
  a normalisation's: the quantizer's rule divides by it, the integer product is linear in the
  integer levels, and a Mul by a factor computed from held statistics and constants
  (:func:`held_tensors`) multiplies by the factor's forward value (:data:`HELD_FACTOR_ATTRIBUTE`).
  The scales cancel: from ``x`` to the Mul's output the projection is the transpose of the float
  convolution with the dequantized weight ``w_scale * (w - w_zp)``, rounding straight through.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.graph.quantized import HELD_OUTPUTS, TYPE_MINIMUM

#: Set (to 1) on a QuantizeLinear that clamps at 0 right after a linear op: the ReLU it absorbed.
RECTIFIER_ATTRIBUTE = "onnxdeconv_rectifier"
#: Set on a Mul whose factor off the path is a held statistic (the scale of a dynamic integer
#: product): the index of that factor.
HELD_FACTOR_ATTRIBUTE = "onnxdeconv_held_factor"

#: Ops whose output can be negative wherever a ReLU would follow them in a float model.
_LINEAR_PRODUCERS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "BatchNormalization"}
)


def _with_attribute(node: onnx.NodeProto, name: str, value: object) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.attribute.append(helper.make_attribute(name, value))
    return copy


def _is_rectifier(
    node: onnx.NodeProto,
    producers: Mapping[str, onnx.NodeProto],
    constants: Mapping[str, np.ndarray],
) -> bool:
    """Whether a QuantizeLinear clamps at 0 the output of a linear op (an absorbed ReLU)."""
    if len(node.input) < 3 or node.input[2] not in constants:
        return False  # no zero point: uint8 with zero point 0, which ORT never writes so
    producer = producers.get(node.input[0])
    if producer is None or producer.op_type not in _LINEAR_PRODUCERS:
        return False
    zero_point = np.asarray(constants[node.input[2]])
    minimum = TYPE_MINIMUM.get(helper.np_dtype_to_tensor_dtype(zero_point.dtype))
    return minimum is not None and bool(np.all(zero_point == minimum))


def mark_rectifiers(
    graph: onnx.GraphProto, constants: Mapping[str, np.ndarray]
) -> list[onnx.NodeProto]:
    """The nodes of ``graph``, each QuantizeLinear that absorbed a ReLU marked as a rectifier.

    Returns a new list; the graph and its nodes are not mutated.
    """
    producers = {output: node for node in graph.node for output in node.output if output}
    return [
        _with_attribute(node, RECTIFIER_ATTRIBUTE, 1)
        if node.op_type == "QuantizeLinear" and _is_rectifier(node, producers, constants)
        else node
        for node in graph.node
    ]


def held_tensors(graph: onnx.GraphProto, constants: Mapping[str, np.ndarray]) -> set[str]:
    """Tensors computed from a dynamic quantizer's scale or zero point and constants only."""
    held: set[str] = set()
    for node in graph.node:
        held.update(
            node.output[i]
            for i in HELD_OUTPUTS.get(node.op_type, ())
            if i < len(node.output) and node.output[i]
        )
        inputs = [name for name in node.input if name]
        if any(name in held for name in inputs) and all(
            name in held or name in constants for name in inputs
        ):
            held.update(name for name in node.output if name)
    return held


def mark_quantized(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    reached: set[str],
    constants: Mapping[str, np.ndarray],
) -> list[onnx.NodeProto]:
    """Mark rectifying quantizers and products with a held scale on the path ``nodes``.

    Returns a new list; the graph and its nodes are not mutated.
    """
    if not any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in graph.node):
        return nodes
    producers = {output: node for node in graph.node for output in node.output if output}
    held = held_tensors(graph, constants)
    marked: dict[int, onnx.NodeProto] = {}
    for node in nodes:
        if node.op_type == "QuantizeLinear" and _is_rectifier(node, producers, constants):
            marked[id(node)] = _with_attribute(node, RECTIFIER_ATTRIBUTE, 1)
        elif node.op_type == "Mul" and len(node.input) == 2:
            on_path = [name in reached for name in node.input]
            is_held = [name in held for name in node.input]
            if sum(on_path) == 1 and any(is_held):
                marked[id(node)] = _with_attribute(node, HELD_FACTOR_ATTRIBUTE, is_held.index(True))
    return [marked.get(id(node), node) for node in nodes]
