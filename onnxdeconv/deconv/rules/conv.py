"""Conv and ConvTranspose: each one's transpose is the other, with the same (tied) weights."""

from __future__ import annotations

from typing import Any

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.spatial import read_window, transpose_as_conv, transpose_window


@transpose_rule("Conv")
def conv(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Transpose a convolution of any stride, padding, dilation and group."""
    ctx.only_first_input_on_path()
    weight = ctx.constant(1, "weight")
    in_shape = ctx.input_shape()
    window = read_window(ctx, weight.shape[2:], in_shape[1:])
    group = int(ctx.attr("group", 1))
    out_spatial = ctx.output_shape()[1:]
    tied = ctx.tied_weight(weight)
    as_conv = transpose_as_conv(
        ctx.graph, signal, tied, weight.shape, window, in_shape, out_spatial, group
    )
    if as_conv is not None:
        return {0: as_conv}
    projected = transpose_window(
        ctx.graph,
        signal,
        tied,
        window,
        in_shape,
        out_spatial,
        group,
    )
    return {0: projected}


def _transpose_pads_begin(
    ctx: TransposeContext, in_spatial: tuple[int, ...], kernel: Any
) -> list[int]:
    """Padding at the start of each axis of a ConvTranspose, as ONNX Runtime resolves it."""
    rank = len(in_spatial)
    strides = [int(s) for s in ctx.attr("strides", [1] * rank)]
    dilations = [int(d) for d in ctx.attr("dilations", [1] * rank)]
    extra = [int(p) for p in ctx.attr("output_padding", [0] * rank)]
    auto_pad = str(ctx.attr("auto_pad", "NOTSET")) or "NOTSET"
    requested = [int(s) for s in ctx.attr("output_shape", [])][-rank:] if rank else []
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise ctx.unsupported(f"auto_pad={auto_pad!r} is not one of NOTSET, VALID, SAME_*")
    if auto_pad == "VALID" and not requested:
        return [0] * rank
    if auto_pad == "NOTSET" and not requested:
        pads = [int(p) for p in ctx.attr("pads", [0] * 2 * rank)]
        return pads[:rank]
    # output_shape or SAME_*: the pads are whatever makes the output that long; SAME_UPPER puts
    # the odd one at the end, anything else at the start (ONNX spec, and ONNX Runtime 1.31).
    begins = []
    for axis, size in enumerate(in_spatial):
        target = requested[axis] if requested else size * strides[axis]
        full = strides[axis] * (size - 1) + extra[axis] + dilations[axis] * (kernel[axis] - 1) + 1
        total = max(0, full - target)
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return begins


@transpose_rule("ConvTranspose")
def conv_transpose(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Transpose a transposed convolution: a Conv with the same weights, strides and group.

    Input element ``i`` of a ConvTranspose spreads onto outputs ``i * s + k * d - pad_begin``;
    the Conv that gathers exactly those outputs back is the transpose. Output padding and an
    ``output_shape`` longer than the kernels reach add outputs that no input wrote, so their
    signal is cropped away; a shorter signal is zero-padded at the end.
    """
    ctx.only_first_input_on_path()
    weight = ctx.constant(1, "weight")
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    in_spatial, out_spatial = in_shape[1:], out_shape[1:]
    kernel = weight.shape[2:]
    rank = len(kernel)
    strides = [int(s) for s in ctx.attr("strides", [1] * rank)]
    dilations = [int(d) for d in ctx.attr("dilations", [1] * rank)]
    group = int(ctx.attr("group", 1))
    begins = _transpose_pads_begin(ctx, in_spatial, kernel)
    graph = ctx.graph
    ends = []
    crop_to = []
    for axis in range(rank):
        needed = (in_spatial[axis] - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1
        available = out_spatial[axis] + begins[axis]
        crop_to.append(min(out_spatial[axis], needed - begins[axis]))
        ends.append(max(0, needed - available))
    if any(c < o for c, o in zip(crop_to, out_spatial, strict=True)):
        signal = graph.op(
            "Slice",
            [
                signal,
                graph.const([0] * rank, "zero_starts"),
                graph.const(crop_to, "written_ends"),
                graph.const(list(range(2, 2 + rank)), "spatial_axes"),
            ],
            hint="written",
        )
    if begins != ends:
        # Asymmetric pads as an explicit Pad: not every execution provider pads Conv unevenly.
        pads = [0, 0, *begins, 0, 0, *ends]
        signal = graph.op("Pad", [signal, graph.const(pads, "convt_pads")], mode="constant")
        begins = ends = [0] * rank
    tied = ctx.tied_weight(weight)
    projected = graph.op(
        "Conv",
        [signal, tied],
        hint="convt_t",
        strides=strides,
        dilations=dilations,
        group=group,
        pads=[*begins, *ends],
    )
    return {0: projected}
