"""Quantized ops: QDQ pairs straight through, and dynamic quantization's integer products.

The signal on an integer tensor is the derivative with respect to the real value it stands for
(its dequantized value), and rounding is taken straight through within the integer range, as
``torch.fake_quantize_per_tensor_affine`` does: a QuantizeLinear passes the signal where its
forward input did not saturate, a DequantizeLinear passes it unchanged, so a pair is the
identity. A QuantizeLinear that absorbed a ReLU (see :mod:`onnxdeconv.deconv.quantized`) is
that ReLU. Constant weights were dequantized to float before (see
:func:`onnxdeconv.graph.quantized.dequantize_constants`).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxdeconv.deconv.quantized import RECTIFIER_ATTRIBUTE
from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.spatial import read_window, transpose_window
from onnxdeconv.graph.quantized import TYPE_MAXIMUM, TYPE_MINIMUM, along_axis


def _parameters(ctx: TransposeContext) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point, shaped to broadcast against the batch-first input."""
    if ctx.attr("block_size", 0):
        raise ctx.unsupported("blocked quantization (block_size) is not supported")
    rank = len(ctx.input_shape()) + 1
    axis = int(ctx.attr("axis", 1))
    scale = ctx.constant(1, "scale").astype(np.float32)
    zero_point = ctx.optional_constant(2)
    if zero_point is None and len(ctx.node.input) > 2 and ctx.node.input[2]:
        raise ctx.unsupported("the zero point must be a constant")
    zero = np.zeros((), np.float32) if zero_point is None else zero_point.astype(np.float32)
    return along_axis(scale, axis, rank), along_axis(zero, axis, rank)


def _integer_range(ctx: TransposeContext) -> tuple[int, int]:
    elem_type = ctx.info[ctx.node.output[0]].elem_type
    if elem_type not in TYPE_MINIMUM:
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise ctx.unsupported(f"quantizing to {name} is not supported; only 8- and 16-bit integers")
    return TYPE_MINIMUM[elem_type], TYPE_MAXIMUM[elem_type]


@transpose_rule("QuantizeLinear")
def quantize_linear(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Pass the signal where the forward input lies within the integer range (straight through).

    The mask is ``qmin <= round(x / scale) + zero_point <= qmax`` at the forward input ``x``, in
    every rule. A quantizer marked as an absorbed ReLU is ``Clip(x, 0, max)`` and takes the Clip
    rule: deconvnet passes relu(s), guided relu(s) where ``x > 0`` and the top did not saturate,
    gradient s there.
    """
    ctx.only_first_input_on_path()
    scale, zero_point = _parameters(ctx)
    low, high = _integer_range(ctx)
    graph = ctx.graph
    rectifier = bool(ctx.attr(RECTIFIER_ATTRIBUTE, 0))
    if rectifier and ctx.rule == "deconvnet":
        # A ReLU clamped at the top of the range is Clip(x, 0, max): deconvnet rectifies the
        # signal and reads no forward state, as for Clip (ReLU6).
        return {0: graph.op("Relu", [signal], hint="rectified")}
    x = graph.forward(ctx.node.input[0])
    rounded = graph.op("Round", [graph.op("Div", [x, graph.const(scale, "q_scale")])])
    level = graph.op("Add", [rounded, graph.const(zero_point, "q_zero_point")], hint="q_level")
    below = graph.op("LessOrEqual", [level, graph.const(np.float32(high), "q_max")])
    if rectifier:
        # The ReLU's own mask: x > 0 (a negative x that rounds to the zero point is still cut).
        inside = graph.op("Greater", [x, graph.const(0.0, "zero_f")])
    else:
        inside = graph.op("GreaterOrEqual", [level, graph.const(np.float32(low), "q_min")])
    below = graph.op("And", [below, inside], hint="q_inside")
    mask = graph.op("Cast", [below], hint="q_mask", to=onnx.TensorProto.FLOAT)
    if rectifier and ctx.rule == "guided":
        signal = graph.op("Relu", [signal], hint="rectified")
    return {0: graph.op("Mul", [signal, mask], hint="quantize_t")}


@transpose_rule("DequantizeLinear")
def dequantize_linear(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """The identity: the signal is already with respect to the dequantized value."""
    ctx.only_first_input_on_path()
    _parameters(ctx)
    return {0: signal}


@transpose_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Divide by the forward scale: the quantized output is ``x / scale`` (plus the zero point).

    The scale and zero point are statistics of the whole tensor, held at their forward values
    like a normalisation's; the range covers the tensor, so nothing saturates. The signal on the
    integer output is the derivative with respect to the integer level.
    """
    ctx.only_first_input_on_path()
    scale = ctx.graph.held(ctx.node.output[1])
    return {0: ctx.graph.op("Div", [signal, scale], hint="dynamic_quantize_t")}


def _integer_weight(ctx: TransposeContext, axis: int) -> np.ndarray:
    """``w - w_zero_point`` as float32 (zero point per tensor or along ``axis``)."""
    weight = ctx.constant(1, "weight").astype(np.float32)
    zero_point = ctx.optional_constant(3)
    if zero_point is None and len(ctx.node.input) > 3 and ctx.node.input[3]:
        raise ctx.unsupported("the weight zero point must be a constant")
    if zero_point is None:
        return weight
    return np.asarray(weight - along_axis(zero_point.astype(np.float32), axis, weight.ndim))


@transpose_rule("ConvInteger")
def conv_integer(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """ConvTranspose with the integer weight minus its zero point (per output channel or not)."""
    ctx.only_first_input_on_path()
    weight = _integer_weight(ctx, 0)
    in_shape = ctx.input_shape()
    window = read_window(ctx, weight.shape[2:], in_shape[1:])
    tied = ctx.graph.const(weight, f"{ctx.node.input[1]}_f32")
    group = int(ctx.attr("group", 1))
    out_spatial = ctx.output_shape()[1:]
    return {0: transpose_window(ctx.graph, signal, tied, window, in_shape, out_spatial, group)}


@transpose_rule("MatMulInteger")
def matmul_integer(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by the transposed integer weight minus its zero point (per column or not)."""
    ctx.only_first_input_on_path()
    weight = _integer_weight(ctx, -1)
    if weight.ndim != 2:
        raise ctx.unsupported("only a 2-D constant weight is supported")
    transposed = ctx.graph.const(weight.T, f"{ctx.node.input[1]}_T")
    return {0: ctx.graph.op("MatMul", [signal, transposed], hint="matmul_integer_t")}
