"""Linearisers for activation functions, products, quotients and the ops inside composites.

Each slope is the derivative at the recorded input, computed here in float64 numpy: an
implementation independent of the ONNX derivatives the transpose rules write, with the same
conventions at the kinks (see :mod:`onnxdeconv.deconv.rules.activation`). A composite activation
(SiLU as ``x * sigmoid(x)``, GELU with ``Erf``) is linearised op by op: the first-order expansion
of a composition is the composition of the expansions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.check.linearise import (
    Linearised,
    elementwise_affine,
    float_attribute,
    lineariser,
)
from onnxdeconv.graph.passes import node_attribute


def _x(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(values[node.input[0]], np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(-np.logaddexp(0.0, -x)), np.float64)


def _is_float(values: Mapping[str, np.ndarray], *names: str) -> bool:
    return all(np.asarray(values[name]).dtype.kind == "f" for name in names if name)


def _unchanged(node: onnx.NodeProto) -> Linearised:
    return Linearised(nodes=[node])


@lineariser("Clip")
def _clip(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    low: float | None
    high: float | None
    if len(node.input) == 1:
        low = float_attribute(node, "min", -math.inf)
        high = float_attribute(node, "max", math.inf)
    else:
        present = [i < len(node.input) and bool(node.input[i]) for i in (1, 2)]
        low = float(np.asarray(values[node.input[1]]).ravel()[0]) if present[0] else -math.inf
        high = float(np.asarray(values[node.input[2]]).ravel()[0]) if present[1] else math.inf
    if not _is_float(values, node.input[0]):
        return _unchanged(node)
    linearised = elementwise_affine(node, (x > low) & (x < high), values)
    return linearised


@lineariser("LeakyRelu")
def _leaky_relu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    alpha = float_attribute(node, "alpha", 0.01)
    return elementwise_affine(node, np.where(x > 0, 1.0, alpha), values)


@lineariser("PRelu")
def _prelu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    slope = np.asarray(values[node.input[1]], np.float64)
    return elementwise_affine(node, np.where(x > 0, 1.0, slope), values)


@lineariser("Elu")
def _elu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    alpha = float_attribute(node, "alpha", 1.0)
    return elementwise_affine(node, np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0))), values)


@lineariser("Selu")
def _selu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    alpha = float_attribute(node, "alpha", 1.67326319217681884765625)
    gamma = float_attribute(node, "gamma", 1.05070102214813232421875)
    slope = gamma * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))
    return elementwise_affine(node, slope, values)


@lineariser("Celu")
def _celu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    alpha = float_attribute(node, "alpha", 1.0)
    return elementwise_affine(node, np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / alpha)), values)


@lineariser("HardSigmoid")
def _hard_sigmoid(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values).astype(np.float32)
    alpha, beta = float_attribute(node, "alpha", 0.2), float_attribute(node, "beta", 0.5)
    # The bounds are tested on the float32 value the op computes, as the rule does.
    value = x * np.float32(alpha) + np.float32(beta)
    return elementwise_affine(node, alpha * ((value > 0) & (value < 1)), values)


@lineariser("HardSwish")
def _hard_swish(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    slope = np.where(x < -3, 0.0, np.where(x <= 3, x / 3 + 0.5, 1.0))
    return elementwise_affine(node, slope, values)


@lineariser("Sigmoid")
def _sigmoid_lineariser(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    s = _sigmoid(_x(node, values))
    return elementwise_affine(node, s * (1 - s), values)


@lineariser("Tanh")
def _tanh(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, 1 - np.tanh(_x(node, values)) ** 2, values)


@lineariser("Softplus")
def _softplus(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, _sigmoid(_x(node, values)), values)


@lineariser("Softsign")
def _softsign(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, 1 / (1 + np.abs(_x(node, values))) ** 2, values)


@lineariser("Gelu")
def _gelu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    if node_attribute(node, "approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x**3))
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)
    else:
        erf = np.vectorize(math.erf)
        slope = 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    return elementwise_affine(node, slope, values)


@lineariser("Mish")
def _mish(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    t = np.tanh(np.logaddexp(0.0, x))
    return elementwise_affine(node, t + x * _sigmoid(x) * (1 - t**2), values)


@lineariser("Swish")
def _swish(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    alpha = float_attribute(node, "alpha", 1.0)
    s = _sigmoid(alpha * x)
    return elementwise_affine(node, s + alpha * x * s * (1 - s), values)


@lineariser("Erf")
def _erf(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    x = _x(node, values)
    return elementwise_affine(node, 2 / math.sqrt(math.pi) * np.exp(-(x**2)), values)


@lineariser("Sqrt")
def _sqrt(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, 0.5 / np.sqrt(_x(node, values)), values)


@lineariser("Reciprocal")
def _reciprocal(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, -1.0 / _x(node, values) ** 2, values)


@lineariser("Abs")
def _abs(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    if not _is_float(values, node.input[0]):
        return _unchanged(node)
    return elementwise_affine(node, np.sign(_x(node, values)), values)


@lineariser("Pow")
def _pow(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    # The exponent is a constant inside the composites that reach a projectable layer.
    if not _is_float(values, node.input[0], node.input[1]):
        return _unchanged(node)
    x = _x(node, values)
    exponent = np.asarray(values[node.input[1]], np.float64)
    return elementwise_affine(node, exponent * x ** (exponent - 1), values)


def _bilinear(
    node: onnx.NodeProto,
    values: Mapping[str, np.ndarray],
    slopes_at: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Linearised:
    """``y = y0 + slope_a * (a - a0) + slope_b * (b - b0)``, with broadcasting as the op has it.

    ``slopes_at(a0, b0)`` gives both slopes. A node on integer tensors stays as it is.
    """
    if not _is_float(values, *node.input, *node.output):
        return _unchanged(node)
    a, b = node.input[0], node.input[1]
    a0, b0 = np.asarray(values[a], np.float64), np.asarray(values[b], np.float64)
    y0 = np.asarray(values[node.output[0]], np.float64)
    slopes = slopes_at(a0, b0)
    offset = y0 - slopes[0] * a0 - slopes[1] * b0
    linearised = Linearised()
    stem = f"{node.output[0]}__frozen"
    linearised.nodes = [
        helper.make_node("Mul", [a, linearised.constant(slopes[0], f"{stem}_da")], [f"{stem}_a"]),
        helper.make_node("Mul", [b, linearised.constant(slopes[1], f"{stem}_db")], [f"{stem}_b"]),
        helper.make_node("Add", [f"{stem}_a", f"{stem}_b"], [f"{stem}_ab"]),
        linearised.output_sum(node, f"{stem}_ab", offset, f"{stem}_offset"),
    ]
    return linearised


@lineariser("Mul")
def _mul(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    """A product linearised at the pass: ``a b ~ a0 b0 + b0 (a - a0) + a0 (b - b0)``."""
    return _bilinear(node, values, lambda a0, b0: (b0, a0))


@lineariser("Div")
def _div(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    """A quotient linearised at the pass: slopes ``1 / b0`` and ``-a0 / b0^2``."""
    return _bilinear(node, values, lambda a0, b0: (1 / b0, -a0 / b0**2))


@lineariser("Where")
def _where(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    """The selection fixed at the recorded condition."""
    condition = np.asarray(values[node.input[0]])
    linearised = Linearised()
    name = f"{node.output[0]}__frozen_condition"
    linearised.initializers.append(onnx.numpy_helper.from_array(condition.astype(np.bool_), name))
    kept = onnx.NodeProto()
    kept.CopyFrom(node)
    kept.input[0] = name
    linearised.nodes = [kept]
    return linearised
