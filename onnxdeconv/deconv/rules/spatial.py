"""Window geometry shared by the Conv and pooling rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdeconv.deconv.emitter import DeconvGraph
from onnxdeconv.deconv.rules import TransposeContext


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial dims: kernel, strides, dilations and explicit pads."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of the dilated kernel in input pixels."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilations, strict=True))


def read_window(ctx: TransposeContext, kernel: Sequence[int], in_spatial: Sequence[int]) -> Window:
    """Read strides, dilations and pads (resolving ``auto_pad``) for a node with ``kernel``."""
    rank = len(kernel)
    strides = tuple(ctx.attr("strides", [1] * rank))
    dilations = tuple(ctx.attr("dilations", [1] * rank))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * 2 * rank))
        begin, end = tuple(pads[:rank]), tuple(pads[rank:])
    elif auto_pad == "VALID":
        begin = end = (0,) * rank
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [
            max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            for size, s, d, k in zip(in_spatial, strides, dilations, kernel, strict=True)
        ]
        small = tuple(t // 2 for t in totals)
        large = tuple(t - t // 2 for t in totals)
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    else:
        raise ctx.unsupported(f"auto_pad={auto_pad!r} is not one of NOTSET, VALID, SAME_*")
    return Window(tuple(kernel), strides, dilations, begin, end)


def transpose_window(
    graph: DeconvGraph,
    signal: str,
    weight: str,
    window: Window,
    in_shape: Sequence[int],
    out_spatial: Sequence[int],
    group: int,
) -> str:
    """Apply ConvTranspose so that the result has exactly the forward input's size.

    Symmetric pads go on the ConvTranspose itself; otherwise it runs unpadded and the padded border
    is sliced off, because ``output_shape`` would discard pads and the CUDA EP moves asymmetric
    ConvTranspose to the CPU.
    """
    in_spatial = in_shape[1:]
    full = [
        (o - 1) * s + e for o, s, e in zip(out_spatial, window.strides, window.extent, strict=True)
    ]
    symmetric = window.pads_begin == window.pads_end
    extra = [i - f + 2 * p for i, f, p in zip(in_spatial, full, window.pads_begin, strict=True)]
    common: dict[str, Any] = {
        "strides": list(window.strides),
        "dilations": list(window.dilations),
        "group": group,
    }
    if symmetric and all(0 <= x < s for x, s in zip(extra, window.strides, strict=True)):
        return graph.op(
            "ConvTranspose",
            [signal, weight],
            pads=list(window.pads_begin) * 2,
            output_padding=extra,
            **common,
        )
    output_padding = [
        max(0, b + i - f) for b, i, f in zip(window.pads_begin, in_spatial, full, strict=True)
    ]
    spread = graph.op(
        "ConvTranspose",
        [signal, weight],
        pads=[0] * 2 * len(full),
        output_padding=output_padding,
        **common,
    )
    rank = len(in_spatial)
    starts = np.array(window.pads_begin)
    return graph.op(
        "Slice",
        [
            spread,
            graph.const(starts, "crop_starts"),
            graph.const(starts + np.array(in_spatial), "crop_ends"),
            graph.const(np.arange(2, 2 + rank), "crop_axes"),
        ],
        hint="crop",
    )


def _flipped(graph: DeconvGraph, weight: str, shape: Sequence[int], group: int) -> str:
    """The Conv weight ``[C, M/group, *k]`` whose Conv is the ConvTranspose of ``weight``.

    ``weight`` is ``[M, C/group, *k]`` (a forward Conv's layout, which ConvTranspose shares);
    within each group the two channel axes swap and the kernel is reversed along every axis.
    These are nodes on the tied weight, not a flipped copy, so that an exported graph stores the
    weight once; ONNX Runtime folds them into a constant when it loads the graph.
    """
    out_channels, per_group, *kernel = (int(d) for d in shape)
    rank = len(kernel)
    grouped = graph.op(
        "Reshape",
        [weight, graph.const([group, out_channels // group, per_group, *kernel], "w_groups")],
        hint="w_grouped",
    )
    swapped = graph.op(
        "Transpose", [grouped], hint="w_swapped", perm=[0, 2, 1, *range(3, 3 + rank)]
    )
    regrouped = graph.op(
        "Reshape",
        [swapped, graph.const([group * per_group, out_channels // group, *kernel], "w_shape")],
        hint="w_regrouped",
    )
    big = np.iinfo(np.int64).max
    return graph.op(
        "Slice",
        [
            regrouped,
            graph.const([-1] * rank, "w_flip_starts"),
            graph.const([-big] * rank, "w_flip_ends"),
            graph.const(list(range(2, 2 + rank)), "w_flip_axes"),
            graph.const([-1] * rank, "w_flip_steps"),
        ],
        hint="w_flipped",
    )


def transpose_as_conv(
    graph: DeconvGraph,
    signal: str,
    weight: str,
    weight_shape: Sequence[int],
    window: Window,
    in_shape: Sequence[int],
    out_spatial: Sequence[int],
    group: int,
) -> str | None:
    """The transpose of a stride-1 convolution as a Conv, or None where this form does not apply.

    It gives what :func:`transpose_window` gives for the same tied ``weight``: a stride-1
    ConvTranspose is the Conv with the flipped kernel (:func:`_flipped`), padded by
    ``extent - 1 - pad``; the sums are the same products in another order. ONNX Runtime runs
    a Conv in its blocked layout, which on wide layers (ZFNet's conv3-5) takes about a quarter
    less CPU than its ConvTranspose. A strided transpose stays a ConvTranspose: as Conv nodes
    (one per output phase, interleaved by DepthToSpace) it took more, not less (see
    ``benchmarks/bench_deconv_graph.py`` and the performance page).
    """
    if any(s != 1 for s in window.strides):
        return None
    in_spatial = list(in_shape[1:])
    rank = len(in_spatial)
    begin = [e - 1 - b for e, b in zip(window.extent, window.pads_begin, strict=True)]
    end = [i - o + b for i, o, b in zip(in_spatial, out_spatial, window.pads_begin, strict=True)]
    if min(begin + end) < 0:
        return None
    if begin != end:
        # Explicit padding: not every execution provider pads a Conv unevenly.
        pads = [0, 0, *begin, 0, 0, *end]
        signal = graph.op("Pad", [signal, graph.const(pads, "convt_pads")], hint="padded")
        begin = end = [0] * rank
    return graph.op(
        "Conv",
        [signal, _flipped(graph, weight, weight_shape, group)],
        hint="convt_as_conv",
        dilations=list(window.dilations),
        group=group,
        pads=[*begin, *end],
    )
