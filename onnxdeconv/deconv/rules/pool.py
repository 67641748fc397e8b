"""Pooling: max pooling routes through the switches, average pooling spreads evenly."""

from __future__ import annotations

import math

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.spatial import Window, read_window, transpose_window


@transpose_rule("MaxPool")
def max_pool(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Route the signal back to the recorded maxima, adding where windows share a maximum.

    ``MaxUnpool`` would assign instead of add, which loses signal when overlapping windows pick the
    same input position, so this scatters with ``reduction="add"``.
    """
    ctx.only_first_input_on_path()
    if int(ctx.attr("storage_order", 0)) != 0:
        raise ctx.unsupported("only storage_order=0 (row-major switches) is supported")
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    graph = ctx.graph
    in_size, out_size = math.prod(in_shape), math.prod(out_shape)
    # Forward switches count over the whole N*C*H*W tensor; keep the offset within one sample.
    local = graph.forward(ctx.switches[ctx.node.output[0]], as_float=False, modulo=in_size)
    flat_shape = graph.const([-1, out_size], "pooled_flat_shape")
    flat_switches = graph.op("Reshape", [local, flat_shape], hint="switches_flat")
    flat_signal = graph.op("Reshape", [signal, flat_shape], hint="signal_flat")
    unpooled = graph.op(
        "ScatterElements",
        [graph.zeros([in_size]), flat_switches, flat_signal],
        hint="unpooled",
        axis=1,
        reduction="add",
    )
    return {0: graph.op("Reshape", [unpooled, graph.const([-1, *in_shape], "unpooled_shape")])}


def _divisors(
    window: Window, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...], include_pad: bool
) -> np.ndarray:
    """Number of elements each output averages, as ONNX Runtime and PyTorch count them."""
    per_dim = []
    for size, out, k, s, b, e in zip(
        in_spatial,
        out_spatial,
        window.kernel,
        window.strides,
        window.pads_begin,
        window.pads_end,
        strict=True,
    ):
        starts = np.arange(out) * s - b
        ends = starts + k
        low, high = (-b, size + e) if include_pad else (0, size)
        per_dim.append(np.minimum(ends, high) - np.maximum(starts, low))
    counts = per_dim[0].astype(np.float64)
    for extra in per_dim[1:]:
        counts = np.multiply.outer(counts, extra)
    return np.asarray(counts, dtype=np.float64)


@transpose_rule("AveragePool")
def average_pool(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Spread each output's signal evenly over the input positions that it averaged."""
    ctx.only_first_input_on_path()
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    kernel = tuple(ctx.attr("kernel_shape"))
    if any(d != 1 for d in ctx.attr("dilations", [1] * len(kernel))):
        raise ctx.unsupported("only dilations=1 is supported for AveragePool")
    window = read_window(ctx, kernel, in_shape[1:])
    include_pad = bool(ctx.attr("count_include_pad", 0))
    divisors = _divisors(window, in_shape[1:], out_shape[1:], include_pad)
    graph = ctx.graph
    # A window with no element to average cannot come from ONNX Runtime; its output position can
    # only be a shape-inference artefact, so it sends nothing back (not 1/0 = inf).
    weights = np.where(divisors > 0, 1.0 / np.maximum(divisors, 1), 0.0)
    if np.all(weights == weights.flat[0]):
        scale = graph.const(np.array(weights.flat[0]), "avg_scale")
    else:
        scale = graph.const(weights, "avg_scale")
    scaled = graph.op("Mul", [signal, scale], hint="avg_scaled")
    channels = in_shape[0]
    ones = graph.const(np.ones((channels, 1, *kernel), np.float32), "avg_kernel")
    spread = transpose_window(graph, scaled, ones, window, in_shape, out_shape[1:], channels)
    return {0: spread}


@transpose_rule("GlobalAveragePool")
def global_average_pool(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Spread the signal evenly over the whole feature map."""
    ctx.only_first_input_on_path()
    in_shape = ctx.input_shape()
    graph = ctx.graph
    scaled = graph.op(
        "Mul", [signal, graph.const(np.array(1.0 / math.prod(in_shape[1:])), "gap_scale")]
    )
    target = graph.const([1, 1, *in_shape[1:]], "gap_shape")
    return {0: graph.op("Expand", [scaled, target], hint="gap_spread")}


@transpose_rule("ReduceMean")
def reduce_mean(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Spread the signal evenly over the reduced axes (which must not include the batch)."""
    in_shape = ctx.input_shape()
    rank = len(in_shape) + 1
    if len(ctx.node.input) > 1 and ctx.node.input[1]:
        axes = [int(a) for a in ctx.constant(1, "axes")]
    else:
        axes = [int(a) for a in ctx.attr("axes", [])]
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return {0: signal}
        raise ctx.unsupported("reducing over every axis mixes the batch; give explicit axes")
    axes = sorted(a + rank if a < 0 else a for a in axes)
    if 0 in axes:
        raise ctx.unsupported("reducing over the batch axis is not supported")
    graph = ctx.graph
    kept = [1 if axis + 1 in axes else size for axis, size in enumerate(in_shape)]
    restored = graph.op("Reshape", [signal, graph.const([-1, *kept], "mean_kept_shape")])
    count = math.prod(in_shape[a - 1] for a in axes)
    scaled = graph.op("Mul", [restored, graph.const(np.array(1.0 / count), "mean_scale")])
    target = graph.const([1, *in_shape], "mean_shape")
    return {0: graph.op("Expand", [scaled, target], hint="mean_spread")}
