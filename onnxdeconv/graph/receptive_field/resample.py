"""Resampling: Resize, Upsample, DepthToSpace and SpaceToDepth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx

from onnxdeconv.graph.passes import node_attribute
from onnxdeconv.graph.receptive_field.field import (
    Dim,
    Field,
    Op,
    channels_hold_dim,
    field_rule,
    ints,
    map_spatial,
    resampled,
)


def _scales(op: Op, rank: int) -> list[Fraction | None]:
    """Resize/Upsample scale per axis when the graph gives scales; None where only sizes."""
    node = op.node
    values: list[float] | None = None
    attribute = node_attribute(node, "scales")
    if attribute is not None:
        values = [float(v) for v in attribute]
    else:
        index = 1 if node.op_type == "Upsample" or len(node.input) == 2 else 2
        array = op.ctx.value(node, index)
        if array is not None and array.size:
            values = [float(v) for v in array.reshape(-1)]
    if values is None:
        return [None] * rank
    axes = ints(node, "axes") or list(range(rank))
    scales: list[Fraction | None] = [Fraction(1)] * rank
    for axis, value in zip(axes, values, strict=False):
        scales[axis % rank] = Fraction(value).limit_denominator(10_000)
    return scales


@dataclass(frozen=True)
class _Method:
    """How a Resize node interpolates, the same on every axis."""

    transforms: tuple[str, ...]
    mode: str
    nearest_modes: tuple[str, ...]
    #: Input units read around ``floor(x)`` (linear, cubic).
    window: tuple[int, ...]
    antialias: bool
    roi: np.ndarray | None
    rank: int

    def reach(self, scale: Fraction) -> Fraction:
        """How far past ``x`` the filter reads: a shrinking antialiased filter widens by 1/scale."""
        if self.antialias and scale < 1 and self.mode != "nearest":
            return Fraction(max(self.window) + 1) / scale
        return Fraction(0)


def _coordinate_transforms(node: onnx.NodeProto) -> tuple[str, ...]:
    if node.op_type == "Upsample":
        return ("asymmetric",)
    transform = node_attribute(node, "coordinate_transformation_mode")
    if transform is None:
        # Opset-10 Resize maps asymmetrically, later ones by half pixels: the graph alone does
        # not say which, so the field covers both.
        return ("asymmetric", "half_pixel")
    return (str(transform),)


def _method(op: Op, rank: int) -> _Method | None:
    """How ``op.node`` interpolates; None where a crop's region of interest is unknown."""
    node = op.node
    transforms = _coordinate_transforms(node)
    mode = str(node_attribute(node, "mode", "nearest"))
    nearest = node_attribute(node, "nearest_mode")
    roi = op.ctx.value(node, 1) if node.op_type == "Resize" and len(node.input) > 2 else None
    if "tf_crop_and_resize" in transforms and (roi is None or roi.size != 2 * rank):
        return None
    return _Method(
        transforms=transforms,
        mode=mode,
        nearest_modes=(str(nearest),) if nearest is not None else ("round_prefer_floor", "floor"),
        window=(0,) if mode == "nearest" else (-1, 0, 1, 2) if mode == "cubic" else (0, 1),
        antialias=bool(node_attribute(node, "antialias", 0)),
        roi=roi,
        rank=rank,
    )


@dataclass(frozen=True)
class _Interpolation:
    """How Resize reads one axis."""

    method: _Method
    axis: int
    size: int
    count: int
    scale: Fraction

    def seen(self, q: int) -> tuple[int, int]:
        """First and last input unit that output unit ``q`` reads."""
        method = self.method
        reach = method.reach(self.scale)
        units = []
        for transform in method.transforms:
            x = _source(transform, q, self)
            if method.mode == "nearest":
                picks = [_nearest(x, m) for m in method.nearest_modes]
            else:
                picks = [math.floor(x) + w for w in method.window]
                if reach:
                    picks += [math.floor(x - reach), math.ceil(x + reach)]
            units += [min(max(p, 0), self.size - 1) for p in picks]
        return min(units), max(units)


@field_rule("Resize", "Upsample", data_inputs=(0,))
def _resize(op: Op) -> Field:
    """Resize and Upsample: output ``q`` sees the input units its interpolation reads."""
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    if field is None or shape is None or out is None:
        return None
    method = _method(op, len(shape))
    if method is None:
        return None
    scales = _scales(op, len(shape))
    dims = []
    for dim in field:
        if dim.axis is None or shape[dim.axis] == out[dim.axis] == 1:
            dims.append(dim)
            continue
        axis, size, count = dim.axis, shape[dim.axis], out[dim.axis]
        reading = _Interpolation(method, axis, size, count, scales[axis] or Fraction(count, size))
        dims.append(_resized(dim, reading))
    return tuple(dims)


def _resized(dim: Dim, reading: _Interpolation) -> Dim:
    size, count, scale = reading.size, reading.count, reading.scale
    if reading.method.transforms == ("align_corners",) and count > 1 and size > 1:
        scale = Fraction(count - 1, size - 1)  # the corners meet: this is the true slope
    return resampled(dim, count, reading.seen, scale)


def _source(transform: str, q: int, how: _Interpolation) -> Fraction:
    """The input coordinate that output unit ``q`` reads (ONNX Resize's coordinate transform)."""
    size, count, scale, roi = how.size, how.count, how.scale, how.method.roi
    if transform == "align_corners":
        return Fraction(q * (size - 1), count - 1) if count > 1 else Fraction(0)
    if transform == "asymmetric":
        return q / scale
    if transform == "tf_half_pixel_for_nn":
        return (q + Fraction(1, 2)) / scale
    if transform == "pytorch_half_pixel":
        return (q + Fraction(1, 2)) / scale - Fraction(1, 2) if count > 1 else Fraction(0)
    if transform == "half_pixel_symmetric":
        adjustment = count / (scale * size)
        centre = Fraction(size, 2) * (1 - adjustment)
        return centre + (q + Fraction(1, 2)) / scale - Fraction(1, 2)
    if transform == "tf_crop_and_resize":
        assert roi is not None
        start = Fraction(float(roi[how.axis])).limit_denominator(10_000)
        end = Fraction(float(roi[how.method.rank + how.axis])).limit_denominator(10_000)
        if count == 1:
            return (end - start) * (size - 1) / 2
        return start * (size - 1) + q * (end - start) * (size - 1) / (count - 1)
    return (q + Fraction(1, 2)) / scale - Fraction(1, 2)  # half_pixel


def _nearest(x: Fraction, mode: str) -> int:
    if mode == "floor":
        return math.floor(x)
    if mode == "ceil":
        return math.ceil(x)
    if mode == "round_prefer_ceil":
        return math.floor(x + Fraction(1, 2))
    return math.ceil(x - Fraction(1, 2))  # round_prefer_floor


@field_rule("DepthToSpace")
def _depth_to_space(op: Op) -> Field:
    block = int(node_attribute(op.node, "blocksize", 1))
    field, out = op.fields[0], op.out_shape()
    if field is None or out is None or channels_hold_dim(field, op.in_shape()):
        return None

    def spread(dim: Dim, axis: int) -> Dim:
        return resampled(dim, out[axis], lambda q: (q // block, q // block), Fraction(block))

    return map_spatial(field, spread)


@field_rule("SpaceToDepth")
def _space_to_depth(op: Op) -> Field:
    block = int(node_attribute(op.node, "blocksize", 1))
    field = op.fields[0]
    if field is None or channels_hold_dim(field, op.in_shape()):
        return None

    def gathered(dim: Dim, axis: int) -> Dim:
        return Dim(axis, dim.offset, dim.stride * block, dim.size + (block - 1) * dim.stride)

    return map_spatial(field, gathered)
