"""Elementwise arithmetic: Add, Sub, Neg, Mul and Div, by constants and between path tensors.

Arithmetic with a constant is linear (or affine), and every mode uses its exact transpose,
summed over the axes the forward op broadcast. A product of two tensors that both depend on the
image is a multiplicative gate (squeeze-excitation, attention): see :func:`mul`; a quotient by a
broadcast path tensor is a normalisation by a forward statistic: see :func:`div`.

Sqrt, Pow by a constant and Reciprocal, which compute such statistics (a decomposed LayerNorm's
``sqrt(mean((x - mean x)^2) + eps)``), are linearised at the forward point in every mode: their
rule is the exact vector-Jacobian product, as for LRN.
"""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.fusion import GATE_ATTRIBUTE
from onnxdeconv.deconv.quantized import HELD_FACTOR_ATTRIBUTE
from onnxdeconv.deconv.rules import TransposeContext, transpose_rule


def unbroadcast(ctx: TransposeContext, signal: str, index: int) -> str:
    """Sum ``signal`` (shaped like the output) over the axes that input ``index`` was broadcast on.

    Both tensors are batch first, so they must have the same rank: a path tensor of lower rank
    would be aligned against the batch axis.
    """
    name = ctx.node.input[index]
    in_rank, out_rank = len(ctx.info[name].shape), len(ctx.info[ctx.node.output[0]].shape)
    if in_rank != out_rank:
        raise ctx.unsupported(
            f"input '{name}' has rank {in_rank} and the output rank {out_rank}; broadcasting a "
            "tensor computed from the image is supported only between tensors of equal rank"
        )
    in_shape, out_shape = ctx.input_shape(index), ctx.output_shape()
    if in_shape == out_shape:
        return signal
    axes = [a + 1 for a, (i, o) in enumerate(zip(in_shape, out_shape, strict=True)) if i != o]
    graph = ctx.graph
    return graph.op(
        "ReduceSum", [signal, graph.const(axes, "bcast_axes")], hint="unbroadcast", keepdims=1
    )


def _constant_operand(ctx: TransposeContext, index: int, what: str) -> str:
    """Input ``index`` (off the path) as a float32 constant of the deconv graph."""
    value = ctx.constant(index, what).astype(np.float32)
    out_rank = len(ctx.output_shape()) + 1
    if value.ndim == out_rank and value.shape[0] != 1:
        raise ctx.unsupported(f"the {what} must not vary along the batch axis")
    return ctx.graph.const(value, f"{ctx.node.input[index]}_f32")


def _path_inputs(ctx: TransposeContext) -> list[int]:
    return [index for index, on_path in enumerate(ctx.on_path[:2]) if on_path]


@transpose_rule("Add")
def add(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Send the signal to every input that depends on the image, summing over broadcast axes."""
    return {index: unbroadcast(ctx, signal, index) for index in _path_inputs(ctx)}


@transpose_rule("Sub")
def sub(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """The signal to the minuend, its negative to the subtrahend (whichever depend on the image)."""
    signals = {}
    for index in _path_inputs(ctx):
        passed = signal if index == 0 else ctx.graph.op("Neg", [signal], hint="negated")
        signals[index] = unbroadcast(ctx, passed, index)
    return signals


@transpose_rule("Neg")
def neg(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """The negated signal."""
    ctx.only_first_input_on_path()
    return {0: ctx.graph.op("Neg", [signal], hint="negated")}


@transpose_rule("Div")
def div(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Divide the signal by the divisor: a constant, or a forward statistic.

    A divisor computed from the image is taken at its forward value ``b``: the dividend receives
    ``signal / b``. Under ``gradient`` the divisor receives the exact ``-signal * a / b^2``
    (summed over its broadcast axes); under ``deconvnet`` and ``guided`` it receives nothing,
    provided it is broadcast (a statistic such as a LayerNorm's ``[T, 1]`` deviation), as a
    normalisation with its forward statistics would.
    """
    graph = ctx.graph
    if not ctx.on_path[1]:
        divisor = _constant_operand(ctx, 1, "divisor")
        return {0: unbroadcast(ctx, graph.op("Div", [signal, divisor], hint="div_t"), 0)}
    if not ctx.on_path[0]:
        raise ctx.unsupported(
            "a constant divided by a tensor computed from the image is not supported: only the "
            "dividend may depend on the image, or both with a broadcast divisor"
        )
    statistic = ctx.input_shape(1) != ctx.output_shape()
    if ctx.rule != "gradient" and not statistic:
        raise ctx.unsupported(
            f"under the {ctx.rule} rule only a constant or broadcast divisor (a statistic such "
            "as a normalisation's deviation) is supported; here the divisor is computed from the "
            "image at full size. The gradient rule uses the quotient rule",
            parameter="rule",
        )
    divisor = graph.forward(ctx.node.input[1])
    signals = {0: unbroadcast(ctx, graph.op("Div", [signal, divisor], hint="div_t"), 0)}
    if ctx.rule == "gradient":
        quotient = graph.op("Div", [graph.forward(ctx.node.input[0]), divisor], hint="quotient")
        scaled = graph.op("Div", [graph.op("Mul", [signal, quotient]), divisor], hint="div_b")
        signals[1] = unbroadcast(ctx, graph.op("Neg", [scaled], hint="div_b_neg"), 1)
    return signals


def _only_base_on_path(ctx: TransposeContext) -> None:
    ctx.only_first_input_on_path(
        "only the base may depend on the image; the exponent is a constant"
    )


@transpose_rule("Sqrt")
def sqrt_rule(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``signal / (2 sqrt(x))``, linearised at the forward point in every mode."""
    ctx.only_first_input_on_path()
    graph = ctx.graph
    root = graph.op("Sqrt", [graph.forward(ctx.node.input[0])], hint="sqrt_x")
    twice = graph.op("Mul", [root, graph.const(2.0, "two_f")], hint="sqrt_slope")
    return {0: graph.op("Div", [signal, twice], hint="sqrt_t")}


@transpose_rule("Reciprocal")
def reciprocal(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``-signal / x^2``, linearised at the forward point in every mode."""
    ctx.only_first_input_on_path()
    graph = ctx.graph
    x = graph.forward(ctx.node.input[0])
    square = graph.op("Mul", [x, x], hint="reciprocal_x2")
    return {0: graph.op("Neg", [graph.op("Div", [signal, square])], hint="reciprocal_t")}


@transpose_rule("Pow")
def pow_(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """``signal * p x^(p - 1)`` for a constant exponent ``p``, linearised in every mode."""
    _only_base_on_path(ctx)
    exponent = ctx.constant(1, "exponent").astype(np.float64)
    if exponent.size != 1:
        raise ctx.unsupported("the exponent must be a scalar constant")
    p = float(exponent.ravel()[0])
    graph = ctx.graph
    x = graph.forward(ctx.node.input[0])
    if p == 2.0:
        slope = graph.op("Mul", [x, graph.const(2.0, "two_f")], hint="pow_slope")
    else:
        power = graph.op("Pow", [x, graph.const(np.float32(p - 1.0), "pow_exponent")])
        slope = graph.op("Mul", [power, graph.const(np.float32(p), "pow_p")], hint="pow_slope")
    return {0: graph.op("Mul", [signal, slope], hint="pow_t")}


def _held_factor(ctx: TransposeContext, index: int) -> str:
    """The factor off the path: a constant, or a held statistic of the forward batch.

    A held factor is computed from a dynamic quantizer's scale and constants (the scale of an
    integer product, see :mod:`onnxdeconv.deconv.quantized`): its forward value.
    """
    if ctx.attr(HELD_FACTOR_ATTRIBUTE) == index:
        return ctx.graph.held(ctx.node.input[index])
    return _constant_operand(ctx, index, "constant factor")


@transpose_rule("Mul")
def mul(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by a constant factor, or pass a product of two path tensors back as a gate.

    A product ``x * g`` of two tensors computed from the image is a multiplicative gate when one
    factor, ``g``, is marked as the gate by :func:`onnxdeconv.deconv.fusion.mark_gates` (produced
    by Sigmoid, HardSigmoid or Clip, or else the only broadcast factor). The other factor receives
    ``signal * g`` with ``g`` the forward value in every mode. The gate branch receives the exact
    gradient ``signal * x`` under ``gradient`` (the product rule) and nothing under ``deconvnet``
    and ``guided``, which explain the features, not what scaled them.
    """
    graph = ctx.graph
    path = _path_inputs(ctx)
    if len(path) == 1:
        index = path[0]
        factor = _held_factor(ctx, 1 - index)
        return {index: unbroadcast(ctx, graph.op("Mul", [signal, factor], hint="mul_t"), index)}
    gate = ctx.attr(GATE_ATTRIBUTE)
    receivers = [0, 1] if ctx.rule == "gradient" else ([] if gate is None else [1 - int(gate)])
    if not receivers:
        raise ctx.unsupported(
            f"under the {ctx.rule} rule a product of two tensors computed from the image needs a "
            "gate: a factor made by Sigmoid, HardSigmoid or Clip, or the only broadcast one (as "
            "in squeeze-excitation); neither factor is one here. The gradient rule uses the "
            "product rule instead",
            parameter="rule",
        )
    signals = {}
    for index in receivers:
        other = graph.forward(ctx.node.input[1 - index])
        signals[index] = unbroadcast(ctx, graph.op("Mul", [signal, other], hint="gated"), index)
    return signals
