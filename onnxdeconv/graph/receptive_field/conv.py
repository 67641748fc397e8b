"""Windows: Conv, pools and ConvTranspose."""

from __future__ import annotations

from fractions import Fraction

import onnx

from onnxdeconv.graph.passes import node_attribute
from onnxdeconv.graph.receptive_field.field import (
    Dim,
    Field,
    Op,
    channels_hold_dim,
    field_rule,
    ints,
    resampled,
)


@field_rule("Conv", "ConvInteger", data_inputs=(0,))
def _conv(op: Op) -> Field:
    return _window(op, mixes_channels=True)


@field_rule("MaxPool", "AveragePool", "LpPool")
def _pool(op: Op) -> Field:
    return _window(op, mixes_channels=False)


def _same_pads(
    node: onnx.NodeProto, size: int | None, kernel: int, stride: int, dilation: int
) -> int | None:
    """Begin padding under ``auto_pad``; None for explicit pads, -1 when the size is unknown."""
    auto_pad = node_attribute(node, "auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return 0
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    if size is None:
        return -1
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    # SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning.
    return total // 2 if auto_pad == "SAME_UPPER" else total - total // 2


def _kernel(op: Op) -> list[int] | None:
    kernel = ints(op.node, "kernel_shape")
    if kernel is None and op.node.op_type in ("Conv", "ConvTranspose"):
        weight = op.ctx.value(op.node, 1)
        if weight is not None:
            kernel = list(weight.shape[2:])
        else:
            shape = op.ctx.shape(op.node.input[1]) if len(op.node.input) > 1 else None
            kernel = None if shape is None else list(shape[2:])
    return kernel


def _geometry(node: onnx.NodeProto, rank: int) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and pads of a Conv, pool or ConvTranspose, with ONNX's defaults."""
    strides = ints(node, "strides") or [1] * rank
    dilations = ints(node, "dilations") or [1] * rank
    return strides, dilations, ints(node, "pads") or [0] * 2 * rank


def _window(op: Op, mixes_channels: bool) -> Field:
    """Conv and pools: unit ``p`` sees input units ``p*s - pad .. p*s - pad + d*(k-1)``."""
    field, shape = op.fields[0], op.in_shape()
    kernel = _kernel(op)
    if field is None or kernel is None or (shape is not None and len(kernel) != len(shape) - 2):
        return None
    strides, dilations, pads = _geometry(op.node, len(kernel))
    if mixes_channels and channels_hold_dim(field, shape):
        return None
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            dims.append(dim)
            continue
        i = dim.axis - 2
        k, s, d = kernel[i], strides[i], dilations[i]
        begin = _same_pads(op.node, None if shape is None else shape[dim.axis], k, s, d)
        if begin is None:
            begin = pads[i]
        elif begin < 0:
            return None  # SAME padding of an input of unknown size
        dims.append(
            Dim(
                dim.axis,
                dim.offset - begin * dim.stride,
                dim.stride * s,
                dim.size + d * (k - 1) * dim.stride,
            )
        )
    return tuple(dims)


@field_rule("ConvTranspose", data_inputs=(0,))
def _conv_transpose(op: Op) -> Field:
    """Output ``q`` gets input unit ``j`` through tap ``t`` when ``q = j*s - pad + t*d``."""
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    kernel = _kernel(op)
    if field is None or shape is None or out is None or kernel is None:
        return None
    strides, dilations, pads = _geometry(op.node, len(kernel))
    output_padding = ints(op.node, "output_padding") or [0] * len(kernel)
    auto_pad = node_attribute(op.node, "auto_pad", "NOTSET")
    derived = auto_pad != "NOTSET" or node_attribute(op.node, "output_shape")
    if channels_hold_dim(field, shape):
        return None
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            dims.append(dim)
            continue
        i = dim.axis - 2
        k, s, d = kernel[i], strides[i], dilations[i]
        if derived:
            total = s * (shape[dim.axis] - 1) + output_padding[i] + (k - 1) * d + 1
            total -= out[dim.axis]
            # The spec and ONNX Runtime have disagreed on which end gets the odd pixel: both.
            begins = sorted({total // 2, total - total // 2})
        else:
            begins = [pads[i]]

        def seen(
            q: int, begins: list[int] = begins, k: int = k, s: int = s, d: int = d
        ) -> tuple[int, int] | None:
            taps = [
                (q + b - t * d) // s for b in begins for t in range(k) if (q + b - t * d) % s == 0
            ]
            return (min(taps), max(taps)) if taps else None

        dims.append(resampled(dim, out[dim.axis], seen, Fraction(s)))
    return tuple(dims)
