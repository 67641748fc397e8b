"""Activation functions: where deconvnet, guided backpropagation and the gradient differ.

Every elementwise activation ``y = f(x)`` follows one scheme:

* ``gradient`` passes ``signal * f'(x)``, with the exact derivative written as ONNX ops on the
  forward input (no op newer than opset 17);
* ``deconvnet`` passes ``relu(signal)``, whatever ``f`` is;
* ``guided`` passes ``relu(signal) * [f'(x) > 0]``.

At a kink the derivative is PyTorch autograd's: ``Relu``, ``LeakyRelu``, ``PRelu``, ``Elu`` and
``Selu`` take the left slope at 0; ``Clip`` and ``HardSigmoid`` pass only strictly inside their
bounds (``hardtanh``, which ``nn.ReLU6`` and ``nn.Hardsigmoid`` use); ``HardSwish`` has slope 0
below -3 and ``x / 3 + 1 / 2`` on [-3, 3]. Where ``f`` is increasing everywhere (``Sigmoid``,
``Tanh``, ``Softplus``, ``Softsign``, ``Erf``, ``Celu``, ``Elu`` and ``Selu`` with positive
alpha, and ``LeakyRelu`` with a positive slope) the guided mask is 1 by definition, so a
derivative that underflows in float32 does not close it.

``Swish`` (``x * sigmoid(alpha * x)``, the ONNX op of opset 24), ``HardSwish``, ``Gelu``,
``Mish``, ``HardSigmoid``, ``Softplus`` and ``Softsign`` also stand for the subgraphs that
exporters write for them, which :mod:`onnxdeconv.deconv.fusion` merges into one node; such a node
may carry the composite's own attributes (``Softplus``: ``beta`` and ``threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from onnxdeconv.deconv.emitter import DeconvGraph
from onnxdeconv.deconv.rules import TransposeContext, transpose_rule


class _Ops:
    """Terse elementwise arithmetic on a deconv graph, for writing derivatives."""

    def __init__(self, graph: DeconvGraph) -> None:
        self.graph = graph

    def c(self, value: float | np.ndarray) -> str:
        return self.graph.const(np.asarray(value, np.float32), "act_const")

    def _binary(self, op: str, a: str | float, b: str | float) -> str:
        left = a if isinstance(a, str) else self.c(a)
        right = b if isinstance(b, str) else self.c(b)
        return self.graph.op(op, [left, right], hint="act")

    def add(self, a: str | float, b: str | float) -> str:
        return self._binary("Add", a, b)

    def sub(self, a: str | float, b: str | float) -> str:
        return self._binary("Sub", a, b)

    def mul(self, a: str | float, b: str | float) -> str:
        return self._binary("Mul", a, b)

    def div(self, a: str | float, b: str | float) -> str:
        return self._binary("Div", a, b)

    def greater(self, a: str | float, b: str | float) -> str:
        return self._binary("Greater", a, b)

    def less(self, a: str | float, b: str | float) -> str:
        return self._binary("Less", a, b)

    def both(self, a: str, b: str) -> str:
        return self.graph.op("And", [a, b], hint="act_and")

    def where(self, condition: str, a: str | float, b: str | float) -> str:
        left = a if isinstance(a, str) else self.c(a)
        right = b if isinstance(b, str) else self.c(b)
        return self.graph.op("Where", [condition, left, right], hint="act_where")

    def unary(self, op: str, a: str) -> str:
        return self.graph.op(op, [a], hint=f"act_{op.lower()}")

    def as_float(self, mask: str) -> str:
        return self.graph.op("Cast", [mask], hint="act_mask", to=onnx.TensorProto.FLOAT)


#: ``(ops on the deconv graph, forward input as float32) -> f'(x)``.
Derivative = Callable[[_Ops, str], str]
#: ``(ops, forward input) -> boolean mask [f'(x) > 0]``, or None where that holds everywhere.
Positive = Callable[[_Ops, str], str | None]


def apply_activation(
    ctx: TransposeContext,
    signal: str,
    derivative: Derivative,
    positive: Positive | None = None,
) -> dict[int, str]:
    """Pass ``signal`` back through ``y = f(x)`` under the context's mode.

    Args:
        ctx: The rule context; input 0 of the node is ``x``.
        signal: The signal at ``y``.
        derivative: Writes ``f'(x)``.
        positive: Writes the guided mask ``[f'(x) > 0]`` (None from it: ``f`` is increasing
            everywhere); by default the mask is computed from the derivative.
    """
    graph = ctx.graph
    if ctx.rule == "deconvnet":
        return {0: graph.op("Relu", [signal], hint="rectified")}
    if ctx.rule == "guided" and positive is _everywhere:
        # No mask, so the forward input is not needed either.
        return {0: graph.op("Relu", [signal], hint="rectified")}
    ops = _Ops(graph)
    x = graph.forward(ctx.node.input[0])
    if ctx.rule == "gradient":
        return {0: graph.op("Mul", [signal, derivative(ops, x)], hint="gated")}
    rectified = graph.op("Relu", [signal], hint="rectified")
    mask = ops.greater(derivative(ops, x), 0.0) if positive is None else positive(ops, x)
    if mask is None:
        return {0: rectified}
    return {0: graph.op("Mul", [rectified, ops.as_float(mask)], hint="gated")}


def _everywhere(_ops: _Ops, _x: str) -> str | None:
    return None


def _derivative_rule(
    op_type: str, *, increasing: bool = False
) -> Callable[[Derivative], Derivative]:
    """Decorator: register the rule of ``op_type``, an op with no attributes, from ``f'(x)``.

    ``increasing``: ``f`` is increasing everywhere, so the guided mask is 1 (see the module).
    """

    def register(derivative: Derivative) -> Derivative:
        def rule(ctx: TransposeContext, signal: str) -> dict[int, str]:
            ctx.only_first_input_on_path()
            return apply_activation(ctx, signal, derivative, _everywhere if increasing else None)

        rule.__doc__ = derivative.__doc__
        transpose_rule(op_type)(rule)
        return derivative

    return register


def _float_attr(ctx: TransposeContext, name: str, default: float) -> float:
    return float(ctx.attr(name, default))


@transpose_rule("Relu")
def relu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Rectify the signal (deconvnet), gate it by the forward input (gradient), or both (guided)."""
    ctx.only_first_input_on_path()
    graph = ctx.graph
    if ctx.rule == "deconvnet":
        return {0: graph.op("Relu", [signal], hint="rectified")}
    forward_input = graph.forward(ctx.node.input[0])
    positive = graph.op("Greater", [forward_input, graph.const(0.0, "zero_f")], hint="active")
    gate = graph.op("Cast", [positive], hint="active_f32", to=onnx.TensorProto.FLOAT)
    passed = graph.op("Relu", [signal], hint="rectified") if ctx.rule == "guided" else signal
    return {0: graph.op("Mul", [passed, gate], hint="gated")}


def _clip_bounds(ctx: TransposeContext) -> tuple[float | None, float | None]:
    """The Clip bounds: attributes before opset 11, optional constant inputs from then on."""
    if len(ctx.node.input) == 1:
        low, high = ctx.attr("min"), ctx.attr("max")
        return (None if low is None else float(low)), (None if high is None else float(high))
    bounds: list[float | None] = []
    for index, what in ((1, "minimum"), (2, "maximum")):
        if index < len(ctx.node.input) and ctx.node.input[index]:
            value = ctx.constant(index, what)
            if value.size != 1:
                raise ctx.unsupported(f"the {what} must be a scalar")
            bounds.append(float(value.ravel()[0]))
        else:
            bounds.append(None)
    return bounds[0], bounds[1]


@transpose_rule("Clip")
def clip(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Slope 1 strictly between the bounds, 0 elsewhere (PyTorch's ``hardtanh``, ``ReLU6``)."""
    ctx.only_first_input_on_path()
    low, high = _clip_bounds(ctx)
    if low is None and high is None:
        return {0: signal}  # no bounds: the identity

    def inside(ops: _Ops, x: str) -> str:
        masks = []
        if low is not None:
            masks.append(ops.greater(x, low))
        if high is not None:
            masks.append(ops.less(x, high))
        return masks[0] if len(masks) == 1 else ops.both(masks[0], masks[1])

    def derivative(ops: _Ops, x: str) -> str:
        return ops.as_float(inside(ops, x))

    return apply_activation(ctx, signal, derivative, inside)


@transpose_rule("LeakyRelu")
def leaky_relu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Slope 1 for x > 0 and alpha for x <= 0."""
    ctx.only_first_input_on_path()
    alpha = _float_attr(ctx, "alpha", 0.01)

    def derivative(ops: _Ops, x: str) -> str:
        return ops.where(ops.greater(x, 0.0), 1.0, alpha)

    def positive(ops: _Ops, x: str) -> str | None:
        return None if alpha > 0 else ops.greater(x, 0.0)

    return apply_activation(ctx, signal, derivative, positive)


@transpose_rule("PRelu")
def prelu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Slope 1 for x > 0 and the (broadcast) constant slope for x <= 0."""
    ctx.only_first_input_on_path()
    slope = ctx.constant(1, "slope").astype(np.float32)
    rank = len(ctx.input_shape()) + 1
    if slope.ndim == rank and slope.shape[0] != 1:
        raise ctx.unsupported("the slope must not vary along the batch axis")

    def derivative(ops: _Ops, x: str) -> str:
        return ops.where(ops.greater(x, 0.0), 1.0, ops.c(slope))

    return apply_activation(ctx, signal, derivative)


def _exponential_linear(
    ctx: TransposeContext,
    signal: str,
    positive_slope: float,
    negative: Derivative,
    increasing: bool,
) -> dict[int, str]:
    """``positive_slope`` for x > 0, ``negative(x)`` for x <= 0 (Elu, Selu, Celu)."""
    ctx.only_first_input_on_path()

    def derivative(ops: _Ops, x: str) -> str:
        return ops.where(ops.greater(x, 0.0), positive_slope, negative(ops, x))

    return apply_activation(ctx, signal, derivative, _everywhere if increasing else None)


@transpose_rule("Elu")
def elu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """1 for x > 0, ``alpha * exp(x)`` for x <= 0."""
    alpha = _float_attr(ctx, "alpha", 1.0)
    return _exponential_linear(
        ctx, signal, 1.0, lambda o, x: o.mul(o.unary("Exp", x), alpha), alpha > 0
    )


@transpose_rule("Selu")
def selu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``gamma`` for x > 0, ``gamma * alpha * exp(x)`` for x <= 0."""
    alpha = _float_attr(ctx, "alpha", 1.67326319217681884765625)
    gamma = _float_attr(ctx, "gamma", 1.05070102214813232421875)
    return _exponential_linear(
        ctx,
        signal,
        gamma,
        lambda o, x: o.mul(o.unary("Exp", x), gamma * alpha),
        gamma > 0 and alpha > 0,
    )


@transpose_rule("Celu")
def celu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """1 for x > 0, ``exp(x / alpha)`` for x <= 0: increasing everywhere."""
    alpha = _float_attr(ctx, "alpha", 1.0)
    if alpha == 0:
        raise ctx.unsupported("alpha must not be 0")
    return _exponential_linear(ctx, signal, 1.0, lambda o, x: o.unary("Exp", o.div(x, alpha)), True)


@transpose_rule("HardSigmoid")
def hard_sigmoid(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``alpha`` where ``0 < alpha * x + beta < 1``, 0 elsewhere."""
    ctx.only_first_input_on_path()
    alpha = _float_attr(ctx, "alpha", 0.2)
    beta = _float_attr(ctx, "beta", 0.5)

    def inside(ops: _Ops, x: str) -> str:
        value = ops.add(ops.mul(x, alpha), beta)
        return ops.both(ops.greater(value, 0.0), ops.less(value, 1.0))

    def derivative(ops: _Ops, x: str) -> str:
        return ops.mul(ops.as_float(inside(ops, x)), alpha)

    return apply_activation(ctx, signal, derivative, inside if alpha > 0 else None)


@_derivative_rule("HardSwish")
def hard_swish_derivative(ops: _Ops, x: str) -> str:
    """0 below -3, ``x / 3 + 1 / 2`` on [-3, 3], 1 above (PyTorch's ``hardswish_backward``)."""
    middle = ops.add(ops.div(x, 3.0), 0.5)
    return ops.where(ops.less(x, -3.0), 0.0, ops.where(ops.greater(x, 3.0), 1.0, middle))


@_derivative_rule("Sigmoid", increasing=True)
def sigmoid_derivative(ops: _Ops, x: str) -> str:
    """Slope ``s (1 - s)`` with ``s = sigmoid(x)``."""
    s = ops.unary("Sigmoid", x)
    return ops.mul(s, ops.sub(1.0, s))


@_derivative_rule("Tanh", increasing=True)
def tanh_derivative(ops: _Ops, x: str) -> str:
    """Slope ``1 - tanh(x)^2``."""
    t = ops.unary("Tanh", x)
    return ops.sub(1.0, ops.mul(t, t))


@transpose_rule("Softplus")
def softplus(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``sigmoid(beta x)``, and 1 where ``beta x > threshold`` (PyTorch's linear region).

    ``beta`` and ``threshold`` come from a fused PyTorch export (see the fusion module); the ONNX
    op itself is ``log(1 + exp(x))``.
    """
    ctx.only_first_input_on_path()
    beta = _float_attr(ctx, "beta", 1.0)
    threshold = ctx.attr("threshold")
    if beta <= 0:
        raise ctx.unsupported("beta must be positive")

    def derivative(ops: _Ops, x: str) -> str:
        scaled = x if beta == 1.0 else ops.mul(x, beta)
        slope = ops.unary("Sigmoid", scaled)
        if threshold is None:
            return slope
        return ops.where(ops.greater(scaled, float(threshold)), 1.0, slope)

    return apply_activation(ctx, signal, derivative, _everywhere)


@_derivative_rule("Erf", increasing=True)
def erf_derivative(ops: _Ops, x: str) -> str:
    """Slope ``2 / sqrt(pi) exp(-x^2)``: increasing, like a sigmoid (GELU's inner tensors)."""
    return ops.mul(ops.unary("Exp", ops.mul(ops.mul(x, x), -1.0)), 2.0 / math.sqrt(math.pi))


@_derivative_rule("Softsign", increasing=True)
def softsign_derivative(ops: _Ops, x: str) -> str:
    """``1 / (1 + |x|)^2``."""
    denominator = ops.add(ops.unary("Abs", x), 1.0)
    return ops.div(1.0, ops.mul(denominator, denominator))


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_KAPPA = 0.044715


@transpose_rule("Gelu")
def gelu(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``Phi(x) + x phi(x)``, or the derivative of the tanh approximation (``approximate``)."""
    ctx.only_first_input_on_path()
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported("approximate must be 'none' or 'tanh'")

    def exact(ops: _Ops, x: str) -> str:
        cdf = ops.mul(ops.add(ops.unary("Erf", ops.mul(x, _SQRT_HALF)), 1.0), 0.5)
        pdf = ops.mul(ops.unary("Exp", ops.mul(ops.mul(x, x), -0.5)), _INV_SQRT_2PI)
        return ops.add(cdf, ops.mul(x, pdf))

    def tanh_form(ops: _Ops, x: str) -> str:
        # PyTorch's GeluBackward for approximate="tanh", term by term.
        square = ops.mul(x, x)
        inner = ops.mul(ops.add(x, ops.mul(ops.mul(square, x), _GELU_KAPPA)), _SQRT_2_OVER_PI)
        t = ops.unary("Tanh", inner)
        left = ops.mul(ops.add(t, 1.0), 0.5)
        slope = ops.mul(ops.add(ops.mul(square, 3.0 * _GELU_KAPPA), 1.0), _SQRT_2_OVER_PI)
        right = ops.mul(ops.mul(ops.mul(x, 0.5), ops.sub(1.0, ops.mul(t, t))), slope)
        return ops.add(left, right)

    return apply_activation(ctx, signal, exact if approximate == "none" else tanh_form)


@_derivative_rule("Mish")
def mish_derivative(ops: _Ops, x: str) -> str:
    """``tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)`` with ``sp = softplus(x)``."""
    t = ops.unary("Tanh", ops.unary("Softplus", x))
    return ops.add(t, ops.mul(ops.mul(x, ops.unary("Sigmoid", x)), ops.sub(1.0, ops.mul(t, t))))


@transpose_rule("Swish")
def swish(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``s + alpha x s (1 - s)`` with ``s = sigmoid(alpha x)`` (SiLU for alpha = 1)."""
    ctx.only_first_input_on_path()
    alpha = _float_attr(ctx, "alpha", 1.0)

    def derivative(ops: _Ops, x: str) -> str:
        s = ops.unary("Sigmoid", x if alpha == 1.0 else ops.mul(x, alpha))
        slope = ops.mul(ops.mul(x, s), ops.sub(1.0, s))
        return ops.add(s, slope if alpha == 1.0 else ops.mul(slope, alpha))

    return apply_activation(ctx, signal, derivative)
