"""Quantized ops on the projection path: what each quantizer stands for, marked before the walk.

Two facts about a quantized graph are not visible to a single node's rule:

* **A quantizer that absorbed a ReLU.** ONNX Runtime's QDQ quantizer removes a Relu (or Clip)
  whose output range starts at 0: the following QuantizeLinear, whose zero point is the integer
  type's minimum, clamps negative values to zero itself. Such a QuantizeLinear reading the output
  of a linear op is marked as a rectifier (:data:`RECTIFIER_ATTRIBUTE`), so that its rule treats
  it as the ReLU it replaced.
* **Dynamic quantization's scale bookkeeping.** ``quantize_dynamic`` writes
  ``DynamicQuantizeLinear(x) -> ConvInteger (or MatMulInteger) -> Cast -> Mul(x_scale * w_scale)``.
  The input scale ``x_scale`` is computed from the image, but it cancels: the map from ``x`` to
  the Mul's output is the float convolution with the dequantized weight ``w_scale * (w - w_zp)``,
  activation rounding taken straight through. The Mul is marked with the constant weight scale
  (:data:`WEIGHT_SCALE_ATTRIBUTE`) and the integer op as dynamic (:data:`DYNAMIC_ATTRIBUTE`): the
  signal on the integer tensors is then in units of ``x_scale``, and the Mul passes ``s * w_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdeconv.graph.quantized import TYPE_MINIMUM

#: Set (to 1) on a QuantizeLinear that clamps at 0 right after a linear op: the ReLU it absorbed.
RECTIFIER_ATTRIBUTE = "onnxdeconv_rectifier"
#: Set on a Mul after ConvInteger/MatMulInteger: the constant weight scale it multiplies by.
WEIGHT_SCALE_ATTRIBUTE = "onnxdeconv_weight_scale"
#: Set (to 1) on a ConvInteger/MatMulInteger fed by DynamicQuantizeLinear and scaled after.
DYNAMIC_ATTRIBUTE = "onnxdeconv_dynamic"

#: Ops whose output can be negative wherever a ReLU would follow them in a float model.
_LINEAR_PRODUCERS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "BatchNormalization"}
)
_INTEGER_PRODUCTS = ("ConvInteger", "MatMulInteger")


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


def _weight_scale(
    mul: onnx.NodeProto,
    producers: Mapping[str, onnx.NodeProto],
    reached: set[str],
    constants: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, onnx.NodeProto] | None:
    """For ``Mul(Cast(ConvInteger(DynamicQuantizeLinear(x))), x_scale * w_scale)``: w_scale."""
    path = [name for name in mul.input if name in reached]
    if len(path) != 1 or len(mul.input) != 2:
        return None
    factor = mul.input[1] if mul.input[0] == path[0] else mul.input[0]
    cast, scales = producers.get(path[0]), producers.get(factor)
    if cast is None or cast.op_type != "Cast" or scales is None or scales.op_type != "Mul":
        return None
    product = producers.get(cast.input[0])
    if product is None or product.op_type not in _INTEGER_PRODUCTS:
        return None
    quantizer = producers.get(product.input[0])
    if quantizer is None or quantizer.op_type != "DynamicQuantizeLinear":
        return None
    if quantizer.output[1] not in scales.input:
        return None
    other = scales.input[1] if scales.input[0] == quantizer.output[1] else scales.input[0]
    if other not in constants:
        return None
    return np.asarray(constants[other], np.float32), product


def mark_quantized(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    reached: set[str],
    constants: Mapping[str, np.ndarray],
) -> list[onnx.NodeProto]:
    """Mark rectifying quantizers and dynamic integer products on the path ``nodes``.

    Returns a new list; the graph and its nodes are not mutated.
    """
    if not any(n.op_type in ("QuantizeLinear", "Mul") for n in nodes):
        return nodes
    producers = {output: node for node in graph.node for output in node.output if output}
    marked: dict[int, onnx.NodeProto] = {}
    for node in nodes:
        if node.op_type == "QuantizeLinear" and _is_rectifier(node, producers, constants):
            marked[id(node)] = _with_attribute(node, RECTIFIER_ATTRIBUTE, 1)
        elif node.op_type == "Mul":
            found = _weight_scale(node, producers, reached, constants)
            if found is not None:
                scale, product = found
                tensor = numpy_helper.from_array(scale, "weight_scale")
                marked[id(node)] = _with_attribute(node, WEIGHT_SCALE_ATTRIBUTE, tensor)
                marked[id(product)] = _with_attribute(product, DYNAMIC_ATTRIBUTE, 1)
    return [marked.get(id(node), node) for node in nodes]
