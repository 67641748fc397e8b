"""Layout: Transpose, reshapes, Slice, Pad, Split, Concat, Gather, Tile, and the shape ops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from onnxdeconv.graph.passes import node_attribute
from onnxdeconv.graph.receptive_field.field import (
    Dim,
    Field,
    Op,
    Piece,
    cover,
    field_rule,
    ints,
    merge,
    no_field,
    renumber,
    spread,
)

# Their outputs describe the tensor rather than hold its values.
no_field("Shape", "Size", "NonZero", "ConstantOfShape", "EyeLike")


@field_rule("Transpose")
def _transpose(op: Op) -> Field:
    field = op.fields[0]
    shape = op.in_shape()
    perm = ints(op.node, "perm")
    if perm is None:
        if shape is None:
            return None
        perm = list(reversed(range(len(shape))))
    return renumber(field, perm.index)


@field_rule("Reshape", "Squeeze", "Unsqueeze", data_inputs=(0,))
@field_rule("Flatten")
def _regroup(op: Op) -> Field:
    """Reshape, Flatten, Squeeze, Unsqueeze: an axis survives when it keeps its place in memory.

    In row-major order an input axis is an output axis exactly when both have the same size and
    the same product of sizes after them.
    """
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    if field is None or shape is None or out is None:
        return None
    after_in = [math.prod(shape[a + 1 :]) for a in range(len(shape))]
    after_out = [math.prod(out[b + 1 :]) for b in range(len(out))]
    dims = []
    for dim in field:
        if dim.axis is None or shape[dim.axis] == 1:
            dims.append(replace(dim, axis=None))
            continue
        match = [
            b
            for b in range(len(out))
            if out[b] == shape[dim.axis] and after_out[b] == after_in[dim.axis]
        ]
        if not match:
            return None  # merged with or split into other axes
        dims.append(replace(dim, axis=match[0]))
    return tuple(dims)


@field_rule("Crop")
def _crop(op: Op) -> Field:
    """A window of axes 2 and 3 from its top-left corner, like a Slice with step 1."""
    field = op.fields[0]
    border = ints(op.node, "border")
    if field is None or border is None or len(border) != 4:
        return None
    corner = {2: border[1], 3: border[0]}  # border is [left, top, right, bottom]
    return tuple(
        dim
        if dim.axis not in corner
        else Dim(dim.axis, dim.offset + corner[dim.axis] * dim.stride, dim.stride, dim.size)
        for dim in field
    )


@field_rule("Slice", data_inputs=(0,))
def _slice(op: Op) -> Field:
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    if field is None or shape is None:
        return None
    starts = op.ctx.ints(op.node, "starts", 1)
    axes = op.ctx.ints(op.node, "axes", 3)
    steps = None if ints(op.node, "starts") is not None else op.ctx.input_ints(op.node, 4)
    if starts is None:
        # Unknown bounds: exact only where the spatial axes are not cut.
        if out is not None and all(d.axis is None or shape[d.axis] == out[d.axis] for d in field):
            return field
        return None
    axes = [a % len(shape) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    cut = {a: (s, t) for a, s, t in zip(axes, starts, steps, strict=True)}
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis not in cut:
            dims.append(dim)
            continue
        start, step = cut[dim.axis]
        size = shape[dim.axis]
        if step < 0:
            return None  # a flipped map: its field would run backwards
        start = min(max(start + size if start < 0 else start, 0), size)
        dims.append(Dim(dim.axis, dim.offset + start * dim.stride, dim.stride * step, dim.size))
    return tuple(dims)


@field_rule("Pad", data_inputs=(0,))
def _pad(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    pads = ints(op.node, "pads") or ints(op.node, "paddings")
    if pads is None:
        array = op.ctx.value(op.node, 1)
        if array is None:
            return None
        pads = [int(v) for v in array.reshape(-1)]
    axes = op.ctx.input_ints(op.node, 3) or list(range(len(shape)))
    begins = {a % len(shape): pads[i] for i, a in enumerate(axes)}
    return tuple(
        d if d.axis is None else replace(d, offset=d.offset - begins.get(d.axis, 0) * d.stride)
        for d in field
    )


@field_rule("Split", data_inputs=(0,))
def _split(op: Op) -> list[Field]:
    field = op.fields[0]
    shape = op.in_shape()
    axis = int(node_attribute(op.node, "axis", 0))
    shapes = [op.ctx.shape(o) if o else None for o in op.node.output]
    if field is None or shape is None:
        return [None] * len(op.node.output)
    axis %= len(shape)
    results: list[Field] = []
    start = 0
    for out in shapes:
        if out is None:
            results.append(None)
            continue
        results.append(
            tuple(
                replace(d, offset=d.offset + start * d.stride) if d.axis == axis else d
                for d in field
            )
        )
        start += out[axis]
    return results


@field_rule("Concat")
def _concat(op: Op) -> Field:
    out = op.out_shape()
    if out is None:
        return None
    axis = int(node_attribute(op.node, "axis", 0)) % len(out)
    parts: list[tuple[Field, tuple[int, ...]]] = []
    starts = []
    start = 0
    for index, name in enumerate(op.node.input):
        shape = op.ctx.shape(name)
        if shape is None:
            return None
        if index in op.fields:
            if op.fields[index] is None:
                return None
            parts.append((op.fields[index], shape))
            starts.append(start)
        start += shape[axis]
    if not any(d.axis == axis for f, _ in parts for d in f or ()):
        return merge([(f, _widened(shape, axis, out)) for f, shape in parts], out)
    return _concat_spatial(parts, starts, axis, out)


def _widened(shape: Sequence[int], axis: int, out: Sequence[int]) -> tuple[int, ...]:
    """The shape of a Concat input as if it filled the output along ``axis``."""
    return tuple(out[a] if a == axis else s for a, s in enumerate(shape))


def _concat_spatial(
    parts: list[tuple[Field, tuple[int, ...]]], starts: list[int], axis: int, out: Sequence[int]
) -> Field:
    """Concat along an axis that holds a spatial dim: each input covers its own range of units.

    Inputs that are not on the path still take their range; what other axes hold merges as for
    elementwise ops.
    """
    merged = []
    first = parts[0][0]
    assert first is not None
    for index in range(len(first)):
        dims = [f[index] for f, _ in parts]  # type: ignore[index]
        on_axis = [d.axis == axis for d in dims]
        if any(on_axis) and not all(on_axis):
            return None
        if not any(on_axis):
            one = merge(
                [
                    ((d,), _widened(shape, axis, out))
                    for d, (_, shape) in zip(dims, parts, strict=True)
                ],
                out,
            )
            if one is None:
                return None
            merged.append(one[0])
            continue
        pieces: list[Piece] = [
            (begin, shape[axis], d.offset, d.stride, d.size)
            for d, begin, (_, shape) in zip(dims, starts, parts, strict=True)
        ]
        stride = max(d.stride for d in dims)
        offset, size = cover(pieces, stride)
        merged.append(Dim(axis, offset, stride, size))
    return tuple(merged)


@field_rule("Gather", data_inputs=(0,))
def _gather(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None or 0 not in op.fields:
        return None
    axis = int(node_attribute(op.node, "axis", 0)) % len(shape)
    indices = op.ctx.value(op.node, 1)
    index_shape = op.ctx.shape(op.node.input[1])
    rank = (
        indices.ndim if indices is not None else (None if index_shape is None else len(index_shape))
    )
    if rank is None:
        return None
    dims = []
    for dim in field:
        if dim.axis == axis and shape[axis] > 1:
            if indices is None or indices.ndim != 0:
                return None
            picked = int(indices) % shape[axis]
            dims.append(Dim(None, dim.offset + picked * dim.stride, dim.stride, dim.size))
        elif dim.axis is None or dim.axis < axis:
            dims.append(dim)
        elif dim.axis == axis:
            dims.append(replace(dim, axis=None))
        else:
            dims.append(replace(dim, axis=dim.axis + rank - 1))
    return tuple(dims)


@field_rule("Tile", data_inputs=(0,))
def _tile(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    repeats = op.ctx.input_ints(op.node, 1)
    if field is None or shape is None or repeats is None:
        return None
    tiled = [a for a, r in enumerate(repeats) if r != 1]
    if any(d.axis in tiled and spread(d, shape) for d in field):
        return None  # repeated copies of the map: a unit's region depends on its copy
    return tuple(replace(d, axis=None) if d.axis in tiled else d for d in field)
