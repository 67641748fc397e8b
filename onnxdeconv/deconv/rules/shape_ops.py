"""Ops that pick, repeat or reorder elements: Pad, Slice, Split, Transpose, Tile, Expand.

Each of them reads every output element from one input element (or from a constant), so along
one axis it is ``y[j] = x[index[j]]``. Its transpose adds each output's signal back onto the
element it was read from. :func:`scatter_back` writes that as the cheapest exact ONNX form:
``Pad``/``Slice`` for a contiguous window, ``ReduceSum`` for equal blocks or periodic copies, and
a ``ScatterElements`` add otherwise (so two outputs read from one element add, never overwrite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxdeconv.deconv.emitter import DeconvGraph
from onnxdeconv.deconv.rules import TransposeContext, transpose_rule


@dataclass(frozen=True)
class Tap:
    """One term of ``y[j] = sum over taps of weight[j] * x[index[j]]`` along one axis.

    ``index[j] < 0`` means the output reads no input element through this tap.
    """

    index: np.ndarray
    weight: np.ndarray | None = None


def _contiguous(index: np.ndarray) -> tuple[int, int, int] | None:
    """``(first output, last output + 1, first input)`` when the valid entries form a window."""
    valid = np.flatnonzero(index >= 0)
    if valid.size == 0:
        return None
    lo, hi = int(valid[0]), int(valid[-1]) + 1
    if hi - lo != valid.size:
        return None
    expected = np.arange(index[lo], index[lo] + (hi - lo))
    if not np.array_equal(index[lo:hi], expected):
        return None
    return lo, hi, int(index[lo])


def _blocks(index: np.ndarray, in_size: int) -> int | None:
    """``f`` when ``index == repeat(arange(in_size), f)`` (nearest upsampling by an integer)."""
    if in_size == 0 or index.size % in_size:
        return None
    factor = index.size // in_size
    return factor if np.array_equal(index, np.repeat(np.arange(in_size), factor)) else None


def _axis_slice(
    graph: DeconvGraph, signal: str, axis: int, begin: int, end: int, hint: str = "crop"
) -> str:
    return graph.op(
        "Slice",
        [
            signal,
            graph.const([begin], "slice_begin"),
            graph.const([end], "slice_end"),
            graph.const([axis], "slice_axis"),
        ],
        hint=hint,
    )


def _axis_pad(
    graph: DeconvGraph, signal: str, rank: int, axis: int, before: int, after: int
) -> str:
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    return graph.op("Pad", [signal, graph.const(pads, "zero_pads")], hint="placed", mode="constant")


def scatter_back(
    graph: DeconvGraph, signal: str, shape: Sequence[int], axis: int, taps: Sequence[Tap], size: int
) -> str:
    """Transpose ``y[j] = sum_t w_t[j] x[i_t[j]]`` along per-sample ``axis`` of the signal.

    Args:
        graph: The deconv graph.
        signal: ``[K, *shape]``.
        shape: Per-sample shape of ``signal``; ``shape[axis]`` is the number of outputs.
        axis: Per-sample axis (the signal's axis ``axis + 1``).
        taps: The index (and weight) of each term; indices are in ``[-1, size)``.
        size: The input's length along ``axis``.

    Returns:
        ``[K, *shape]`` with ``shape[axis]`` replaced by ``size``.
    """
    rank = len(shape) + 1
    out_shape = list(shape)
    out_shape[axis] = size
    if len(taps) == 1 and taps[0].weight is None:
        index = np.asarray(taps[0].index, np.int64)
        window = _contiguous(index)
        if window is not None:
            lo, hi, first = window
            cropped = signal
            if (lo, hi) != (0, len(index)):
                cropped = _axis_slice(graph, signal, axis + 1, lo, hi)
            before, after = first, size - first - (hi - lo)
            if before == 0 and after == 0:
                return cropped
            return _axis_pad(graph, cropped, rank, axis + 1, before, after)
        factor = _blocks(index, size)
        if factor is not None:
            split = [*shape[:axis], size, factor, *shape[axis + 1 :]]
            blocks = graph.op("Reshape", [signal, graph.const([-1, *split], "blocks_shape")])
            return graph.op(
                "ReduceSum",
                [blocks, graph.const([axis + 2], "block_axis")],
                hint="blocks_summed",
                keepdims=0,
            )
    result = graph.zeros(out_shape)
    broadcast = [1] * len(shape)
    broadcast[axis] = shape[axis]
    for tap in taps:
        index = np.asarray(tap.index, np.int64)
        weight = None if tap.weight is None else np.asarray(tap.weight, np.float64)
        if np.any(index < 0):
            # An output that reads nothing here sends nothing back: weight 0 at a valid index.
            weight = (np.ones(index.shape) if weight is None else weight) * (index >= 0)
            index = np.maximum(index, 0)
        updates = signal
        if weight is not None:
            scale = graph.const(weight.reshape(broadcast), "tap_weight")
            updates = graph.op("Mul", [signal, scale], hint="tap_weighted")
        indices = graph.op(
            "Expand",
            [graph.const(index.reshape([1, *broadcast]), "tap_index"), graph.batch_shape(shape)],
            hint="tap_indices",
        )
        result = graph.op(
            "ScatterElements",
            [result, indices, updates],
            hint="scattered",
            axis=axis + 1,
            reduction="add",
        )
    return result


def only_data_input_on_path(ctx: TransposeContext) -> None:
    """Raise unless the data input 0 depends on the image and no other input (shape, indices)."""
    ctx.only_first_input_on_path("only the data input may depend on the image input")


def _per_sample_axis(ctx: TransposeContext, axis: int, rank: int) -> int:
    """Per-sample axis of tensor axis ``axis`` (negative counts from the end)."""
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise ctx.unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis - 1


# --------------------------------------------------------------------------------------------
# Pad
# --------------------------------------------------------------------------------------------


def pad_index(mode: str, out_size: int, in_size: int, before: int) -> np.ndarray:
    """Input element each padded output reads (-1: the constant), as ONNX Runtime pads."""
    t = np.arange(out_size) - before
    if mode == "constant":
        return np.where((t >= 0) & (t < in_size), t, -1)
    if mode == "edge":
        return np.clip(t, 0, in_size - 1)
    if mode == "wrap":
        return np.mod(t, in_size)
    # reflect: mirror about the first and last element, which are not repeated
    period = 2 * (in_size - 1)
    if period == 0:
        return np.zeros_like(t)
    t = np.mod(t, period)
    return np.where(t < in_size, t, period - t)


#: Pad modes whose transpose is written here.
PAD_MODES = ("constant", "reflect", "edge", "wrap")


@transpose_rule("Pad")
def pad(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Add each output's signal back onto the element it copies; padding constants get nothing.

    Constant padding (negative pads crop) becomes a crop (and zero padding); ``reflect``,
    ``edge`` and ``wrap`` also add the border's signal onto the elements it mirrors or repeats.
    """
    ctx.only_first_input_on_path()
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    mode = str(ctx.attr("mode", "constant"))
    if mode not in PAD_MODES:
        raise ctx.unsupported(f"mode={mode!r}; supported modes are {', '.join(PAD_MODES)}")
    axes, begin, end = _pads_by_axis(ctx, len(in_shape) + 1)
    if begin.get(0, 0) or end.get(0, 0):
        raise ctx.unsupported("padding the batch axis is not supported")
    shape = list(out_shape)
    for axis in sorted(a for a in axes if a > 0 and (begin[a] or end[a])):
        local = axis - 1
        _check_pads(ctx, mode, begin[axis], end[axis], in_shape[local])
        index = pad_index(mode, shape[local], in_shape[local], begin[axis])
        signal = scatter_back(ctx.graph, signal, shape, local, [Tap(index)], in_shape[local])
        shape[local] = in_shape[local]
    return {0: signal}


def _pads_by_axis(
    ctx: TransposeContext, rank: int
) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """The padded tensor axes, and the pads before and after each of them.

    Pads are an input from opset 11 on (axes from 18 on), attributes before.
    """
    if len(ctx.node.input) > 1 and ctx.node.input[1]:
        pads = [int(p) for p in ctx.constant(1, "pads")]
    else:
        pads = [int(p) for p in ctx.attr("pads", ctx.attr("paddings", []))]
    if len(ctx.node.input) > 3 and ctx.node.input[3]:
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in ctx.constant(3, "axes")]
    else:
        axes = list(range(rank))
    if len(pads) != 2 * len(axes):
        raise ctx.unsupported(f"{len(pads)} pads for {len(axes)} axes")
    begin = dict(zip(axes, pads[: len(axes)], strict=True))
    end = dict(zip(axes, pads[len(axes) :], strict=True))
    return axes, begin, end


def _check_pads(ctx: TransposeContext, mode: str, before: int, after: int, size: int) -> None:
    """Raise for the pads of one axis that ``mode`` cannot pad with."""
    if mode != "constant" and (before < 0 or after < 0):
        raise ctx.unsupported(f"negative pads with mode={mode!r}")
    if mode == "reflect" and max(before, after) >= size:
        raise ctx.unsupported("reflect pads must be smaller than the padded axis")


# --------------------------------------------------------------------------------------------
# Slice, Split, Transpose
# --------------------------------------------------------------------------------------------


def slice_index(start: int, end: int, step: int, size: int) -> np.ndarray:
    """Input elements a Slice reads along one axis, with the ONNX clamping rules."""
    if step == 0:
        raise ValueError("step 0")
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return np.arange(start, end, step, dtype=np.int64)


@transpose_rule("Slice")
def slice_(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Put the signal back where the slice read it (with zeros elsewhere), any step."""
    only_data_input_on_path(ctx)
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    rank = len(in_shape) + 1
    starts, ends, axes, steps = _slice_inputs(ctx) if len(ctx.node.input) > 1 else _slice_attrs(ctx)
    batch_rank = len(ctx.info[ctx.node.input[0]].shape)
    shape = list(out_shape)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = axis + batch_rank if axis < 0 else axis
        if step == 0:
            raise ctx.unsupported("step 0 is not a valid slice")
        if axis == 0:
            # Exporters slice the batch axis whole ("x[:, ...]"): that reads every element.
            if (start, step) == (0, 1) and end >= 2**31 - 1:
                continue
            raise ctx.unsupported("slicing the batch axis is not supported")
        local = _per_sample_axis(ctx, axis, rank)
        read = slice_index(start, end, step, in_shape[local])
        if len(read) != shape[local]:
            raise ctx.unsupported(
                f"the slice takes {len(read)} elements along axis {axis}, but its output "
                f"has {shape[local]}"
            )
        signal = scatter_back(ctx.graph, signal, shape, local, [Tap(read)], in_shape[local])
        shape[local] = in_shape[local]
    return {0: signal}


_SliceArguments = tuple[list[int], list[int], list[int], list[int]]


def _slice_inputs(ctx: TransposeContext) -> _SliceArguments:
    """Starts, ends, axes and steps of a Slice that takes them as inputs (opset 10 on)."""
    starts = [int(v) for v in ctx.constant(1, "starts")]
    ends = [int(v) for v in ctx.constant(2, "ends")]
    axes_value = ctx.optional_constant(3)
    steps_value = ctx.optional_constant(4)
    for index, what in ((3, "axes"), (4, "steps")):
        if len(ctx.node.input) > index and ctx.node.input[index]:
            ctx.constant(index, what)  # raises if computed at run time
    axes = list(range(len(starts))) if axes_value is None else [int(a) for a in axes_value]
    steps = [1] * len(starts) if steps_value is None else [int(s) for s in steps_value]
    return starts, ends, axes, steps


def _slice_attrs(ctx: TransposeContext) -> _SliceArguments:
    """Starts, ends and axes of a Slice that has them as attributes (before opset 10), step 1."""
    starts = [int(v) for v in ctx.attr("starts")]
    ends = [int(v) for v in ctx.attr("ends")]
    axes = [int(a) for a in ctx.attr("axes", list(range(len(starts))))]
    return starts, ends, axes, [1] * len(starts)


@transpose_rule("Split")
def split(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Concatenate the signals of the parts, with zeros for parts that no signal reached."""
    ctx.only_first_input_on_path()
    rank = len(ctx.input_shape()) + 1
    axis = _per_sample_axis(ctx, int(ctx.attr("axis", 0)), rank)
    if axis < 0:
        raise ctx.unsupported("splitting the batch axis is not supported")
    outputs = [o for o in ctx.node.output]
    parts = []
    for index, name in enumerate(outputs):
        arrived = ctx.output_signals[index] if index < len(ctx.output_signals) else None
        parts.append(arrived or ctx.graph.zeros(ctx.shape(name)))
    if sum(ctx.shape(name)[axis] for name in outputs) != ctx.input_shape()[axis]:
        raise ctx.unsupported("the parts do not cover the input")
    if len(parts) == 1:
        return {0: parts[0]}
    return {0: ctx.graph.op("Concat", parts, hint="unsplit", axis=axis + 1)}


@transpose_rule("Transpose")
def transpose(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Apply the inverse permutation; the batch axis must stay first."""
    ctx.only_first_input_on_path()
    rank = len(ctx.input_shape()) + 1
    perm = [int(p) for p in ctx.attr("perm", list(reversed(range(rank))))]
    if perm[0] != 0:
        raise ctx.unsupported(f"perm={perm} moves the batch axis; it must stay first")
    inverse = [int(i) for i in np.argsort(perm)]
    return {0: ctx.graph.op("Transpose", [signal], hint="untransposed", perm=inverse)}


# --------------------------------------------------------------------------------------------
# Tile, Expand
# --------------------------------------------------------------------------------------------


@transpose_rule("Tile")
def tile(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Sum the signal over the copies: each copy read the whole input once."""
    only_data_input_on_path(ctx)
    repeats = [int(r) for r in ctx.constant(1, "repeats")]
    in_shape = ctx.input_shape()
    if repeats[0] != 1:
        raise ctx.unsupported("repeating along the batch axis is not supported")
    split = [n for r, size in zip(repeats[1:], in_shape, strict=True) for n in (r, size)]
    graph = ctx.graph
    copies = graph.op("Reshape", [signal, graph.const([-1, *split], "tiled_shape")])
    summed = graph.op(
        "ReduceSum",
        [copies, graph.const([1 + 2 * i for i in range(len(in_shape))], "copy_axes")],
        hint="copies_summed",
        keepdims=0,
    )
    return {0: summed}


@transpose_rule("Expand")
def expand(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Sum the signal over the broadcast axes; the batch axis must not be broadcast."""
    only_data_input_on_path(ctx)
    in_info, out_info = ctx.info[ctx.node.input[0]], ctx.info[ctx.node.output[0]]
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    if len(in_info.shape) != len(out_info.shape) or in_info.shape[0] != out_info.shape[0]:
        raise ctx.unsupported(
            f"it maps {list(in_info.shape)} to {list(out_info.shape)}; only expansions that keep "
            "the rank and the batch axis are supported"
        )
    axes = [a + 1 for a, (i, o) in enumerate(zip(in_shape, out_shape, strict=True)) if i != o]
    if not axes:
        return {0: signal}
    graph = ctx.graph
    summed = graph.op(
        "ReduceSum", [signal, graph.const(axes, "expanded_axes")], hint="unexpanded", keepdims=1
    )
    return {0: summed}
