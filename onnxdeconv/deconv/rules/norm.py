"""Normalizations that depend on the data: LRN and InstanceNormalization, linearised at the pass.

Neither is linear, and neither is a rectifier, so the three rules treat them alike:

* LRN passes the exact vector-Jacobian product ``J(x0)^T signal`` at the forward input ``x0``.
* InstanceNormalization is the affine map ``gamma * (x - mean) / sqrt(var + eps) + beta`` with
  the mean and variance held at their forward values (per sample and channel), so its transpose
  multiplies by ``gamma / sqrt(var + eps)``, as for BatchNormalization. The signal does not flow
  back through the statistics.
"""

from __future__ import annotations

import math

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule


def lrn_window(channels: int, size: int) -> np.ndarray:
    """``W[c, k] = 1`` when channel ``k`` is in the LRN window of channel ``c``.

    The window of ``c`` is ``[c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]`` (ONNX spec).
    """
    c = np.arange(channels)[:, None]
    k = np.arange(channels)[None, :]
    return ((k >= c - (size - 1) // 2) & (k <= c + math.ceil((size - 1) / 2))).astype(np.float32)


@transpose_rule("LRN")
def lrn(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Pass ``J(x0)^T signal`` of ``y = x / (bias + alpha / size * window_sum(x^2))^beta``.

    With ``D = bias + alpha / size * W x0^2`` (``W`` sums each channel's window):
    ``J^T s = D^-beta * s - 2 alpha beta / size * x0 * W^T (x0 * D^(-beta-1) * s)``.
    """
    ctx.only_first_input_on_path()
    in_shape = ctx.input_shape()
    size = int(ctx.attr("size"))
    alpha = float(ctx.attr("alpha", 1e-4))
    beta = float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    channels = in_shape[0]
    graph = ctx.graph
    flat = graph.const([-1, channels, math.prod(in_shape[1:])], "lrn_flat")
    x0 = graph.op("Reshape", [graph.forward(ctx.node.input[0]), flat], hint="lrn_x0")
    s = graph.op("Reshape", [signal, flat], hint="lrn_signal")
    window = lrn_window(channels, size)
    squares = graph.op("Mul", [x0, x0], hint="lrn_squares")
    summed = graph.op("MatMul", [graph.const(window, "lrn_window"), squares], hint="lrn_sum")
    scaled = graph.op("Mul", [summed, graph.const(np.array(alpha / size), "lrn_alpha")])
    denominator = graph.op("Add", [scaled, graph.const(np.array(bias), "lrn_bias")], hint="lrn_d")
    direct = graph.op("Pow", [denominator, graph.const(np.array(-beta), "lrn_beta")], hint="lrn_dp")
    cross = graph.op("Div", [graph.op("Mul", [x0, direct]), denominator], hint="lrn_cross")
    gathered = graph.op(
        "MatMul",
        [graph.const(window.T.copy(), "lrn_window_t"), graph.op("Mul", [cross, s])],
        hint="lrn_gathered",
    )
    coupling = graph.op(
        "Mul",
        [graph.op("Mul", [x0, gathered]), graph.const(np.array(2 * alpha * beta / size), "lrn_k")],
        hint="lrn_coupling",
    )
    back = graph.op("Sub", [graph.op("Mul", [s, direct]), coupling], hint="lrn_t")
    return {0: graph.op("Reshape", [back, graph.const([-1, *in_shape], "lrn_shape")])}


@transpose_rule("InstanceNormalization")
def instance_normalization(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Scale by ``gamma / sqrt(var + eps)``, ``var`` the forward variance of sample and channel."""
    ctx.only_first_input_on_path()
    in_shape = ctx.input_shape()
    if len(in_shape) < 2:
        raise ctx.unsupported("the input needs spatial axes ([N, C, D1, ...])")
    gamma = ctx.constant(1, "scale").astype(np.float32)
    epsilon = float(ctx.attr("epsilon", 1e-5))
    graph = ctx.graph
    x0 = graph.forward(ctx.node.input[0])
    axes = graph.const(list(range(2, 1 + len(in_shape))), "instance_axes")
    inverse_count = graph.const(np.array(1.0 / math.prod(in_shape[1:])), "instance_count")
    mean = graph.op(
        "Mul",
        [graph.op("ReduceSum", [x0, axes], hint="instance_sum", keepdims=1), inverse_count],
        hint="instance_mean",
    )
    centred = graph.op("Sub", [x0, mean], hint="instance_centred")
    squares = graph.op("Mul", [centred, centred], hint="instance_squares")
    summed = graph.op("ReduceSum", [squares, axes], hint="instance_ss", keepdims=1)
    variance = graph.op("Mul", [summed, inverse_count], hint="instance_var")
    deviation = graph.op(
        "Sqrt", [graph.op("Add", [variance, graph.const(np.array(epsilon), "instance_eps")])]
    )
    gamma_shaped = graph.const(gamma.reshape(-1, *([1] * (len(in_shape) - 1))), "instance_gamma")
    slope = graph.op("Div", [gamma_shaped, deviation], hint="instance_slope")
    return {0: graph.op("Mul", [signal, slope], hint="instance_t")}
