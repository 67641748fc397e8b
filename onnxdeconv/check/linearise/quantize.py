"""Linearisers for quantized ops, consistent with the straight-through transpose rules.

The transpose rules (:mod:`onnxdeconv.deconv.rules.quantize`) read the signal on an integer
tensor as the derivative with respect to the real value it stands for, and take rounding
straight through within the integer range. The linearised model therefore carries real values
in float32 where the forward graph carries integers:

* ``QuantizeLinear`` becomes ``x * mask + offset``: the mask is where the rule passes the
  signal (inside the integer range; for a quantizer that absorbed a ReLU, where ``x > 0`` and
  the top did not saturate), the offset makes the output the recorded real value
  ``scale * (q - zero_point)`` at the recorded input.
* ``DequantizeLinear`` becomes the identity from that (now real-valued) input.
* ``DynamicQuantizeLinear`` is held at its forward scale ``s``: its quantized output becomes
  ``x / s + offset`` (in integer units, as ConvInteger and MatMulInteger read it), its scale and
  zero point the recorded constants.
* ``ConvInteger`` and ``MatMulInteger`` become ``Conv`` and ``MatMul`` of ``a - a_zero_point``
  with the constant float weight ``w - w_zero_point``.

Every replacement uses only ops that exist at opset 8 (Mul, Add, Sub, Identity, Conv, MatMul).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.check.linearise import Linearised, elementwise_affine, lineariser
from onnxdeconv.deconv.quantized import RECTIFIER_ATTRIBUTE
from onnxdeconv.graph.quantized import along_axis


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(helper.get_attribute_value(attribute))
    return default


def _optional(node: onnx.NodeProto, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


@lineariser("QuantizeLinear")
def _quantize_linear(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x0 = np.asarray(values[node.input[0]], np.float32)
    q0 = np.asarray(values[node.output[0]])
    rank = max(x0.ndim, 1)
    axis = _attribute(node, "axis", 1)
    scale = along_axis(np.asarray(values[node.input[1]], np.float32), axis, rank)
    zero_name = _optional(node, 2)
    zero = np.zeros(()) if zero_name is None else np.asarray(values[zero_name])
    zero = along_axis(zero.astype(np.float64), axis, rank)
    info = np.iinfo(q0.dtype)
    # The level as the rule computes it: float32 division, round half to even, plus the zero
    # point.
    level = np.rint(x0 / scale).astype(np.float64) + zero
    inside = level <= info.max
    if _attribute(node, RECTIFIER_ATTRIBUTE, 0):
        inside &= x0 > 0
    else:
        inside &= level >= info.min
    real0 = (q0.astype(np.float64) - zero) * scale.astype(np.float64)
    # elementwise_affine reads the output's recorded value: give it the real one.
    return elementwise_affine(node, inside, {**values, node.output[0]: real0})


@lineariser("DequantizeLinear")
def _dequantize_linear(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    # The input is the linearised quantizer's real value already.
    del values
    return Linearised(
        nodes=[helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]
    )


@lineariser("DynamicQuantizeLinear")
def _dynamic_quantize_linear(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    scale = np.asarray(values[node.output[1]], np.float64)
    # The range covers the whole tensor (and 0), so nothing saturates: slope 1 / scale.
    slope = np.broadcast_to(1.0 / scale, np.shape(values[node.input[0]]))
    levels = {**values, node.output[0]: np.asarray(values[node.output[0]], np.float64)}
    linearised = elementwise_affine(node, slope, levels)
    linearised.constant(scale, node.output[1])
    linearised.constant(np.asarray(values[node.output[2]], np.float32), node.output[2])
    return linearised


def _integer_operands(
    node: onnx.NodeProto, values: Mapping[str, np.ndarray], weight_axis: int
) -> tuple[Linearised, str, str]:
    """``a - a_zero_point`` (a node) and ``w - w_zero_point`` (a float constant)."""
    linearised = Linearised()
    stem = f"{node.output[0]}__frozen"
    shifted = node.input[0]
    a_zero = _optional(node, 2)
    if a_zero is not None:
        shifted = f"{stem}_shifted"
        zero = linearised.constant(np.asarray(values[a_zero], np.float32), f"{stem}_a_zero")
        linearised.nodes.append(helper.make_node("Sub", [node.input[0], zero], [shifted]))
    weight = np.asarray(values[node.input[1]], np.float64)
    w_zero = _optional(node, 3)
    if w_zero is not None:
        offset = along_axis(np.asarray(values[w_zero], np.float64), weight_axis, weight.ndim)
        weight = weight - offset
    return linearised, shifted, linearised.constant(weight, f"{stem}_weight")


@lineariser("ConvInteger")
def _conv_integer(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    linearised, shifted, weight = _integer_operands(node, values, 0)
    conv = helper.make_node("Conv", [shifted, weight], [node.output[0]], name=node.name)
    # ConvInteger's attributes are Conv's (auto_pad, dilations, group, kernel_shape, pads,
    # strides).
    conv.attribute.extend(node.attribute)
    linearised.nodes.append(conv)
    return linearised


@lineariser("MatMulInteger")
def _matmul_integer(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    linearised, shifted, weight = _integer_operands(node, values, -1)
    linearised.nodes.append(
        helper.make_node("MatMul", [shifted, weight], [node.output[0]], name=node.name)
    )
    return linearised
