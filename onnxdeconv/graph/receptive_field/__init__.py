"""Receptive fields computed from the graph: the input pixels that each unit of a tensor sees.

Every tensor computed from the image carries, per spatial dim of the input (H, W, ...), the axis
of the tensor that holds that dim and an affine field along it: unit ``p`` of that axis sees the
input interval ``[offset + p * stride, offset + p * stride + size)``. The axes follow the tensor
through Transpose, reshapes and layout changes (a Keras NHWC map, ShuffleNet's channel shuffle).

Offsets, strides and sizes stay exact fractions while they propagate: upsampling divides the
stride, and a later strided Conv may make it whole again. Each op maps the field exactly where it
can (Conv, pools, Pad, Slice, Transpose, reshapes) and otherwise replaces it by the tightest affine
field with that stride that *contains* the true one (a cover): merging maps of different strides,
Concat along a spatial axis, Resize and ConvTranspose, whose units do not see evenly spaced
regions. At the end every field becomes integers, rounded outward; a stride that is still
fractional there (upsampling past the input's own grid) becomes the whole stride just below or
above it (at least 1), whichever needs the smaller field, and the offset and size grow until the
field holds every unit's true region over the whole map; such fields grow with the map.

A field is global (``size`` None) once units at different positions of a spatial dim are mixed:
a Gemm, a global pool, a reduction, a MatMul or a softmax over a spatial axis, a Conv whose
channel axis holds a spatial dim, a Flatten or Reshape that merges a spatial axis with others. An
axis of extent 1 mixes nothing, so a unit of a 1x1 map keeps its field through all of these.

Conventions, chosen for what the fields are used for (cropping a unit's projection):

- Like Conv padding, the field may extend past the image border, and ConvTranspose counts the
  input units that a border output would see past the map's edge.
- ``Pad`` in ``reflect``/``edge``/``wrap`` mode: the field is exact for every unit that holds an
  input value; the padded border units get the field their position extrapolates to, not the
  mirrored one.
- A product ``x * g`` where ``g`` is broadcast over every spatial axis of ``x`` (a
  squeeze-excitation or attention gate) keeps the field of ``x``: deconvnet and guided
  projections never enter the gate branch. The gradient's true dependence reaches further.

The rules live in one module per op family (:mod:`.conv`, :mod:`.resample`, :mod:`.shape`,
:mod:`.reduce`, :mod:`.elementwise`), registered in :data:`.field.FIELD_RULES`; :mod:`.field`
holds the algebra they share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx

from onnxdeconv.errors import InputError
from onnxdeconv.graph.passes import TensorInfo, constant_tensors
from onnxdeconv.graph.receptive_field.elementwise import elementwise
from onnxdeconv.graph.receptive_field.field import (
    FIELD_RULES,
    Context,
    Dim,
    Field,
    FieldFunction,
    FieldRule,
    Op,
    cover,
)

__all__ = ["ReceptiveField", "receptive_fields"]

logger = logging.getLogger(__name__)

#: The rule of ops without one of their own.
_ELEMENTWISE = FieldRule(elementwise)

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ReceptiveField:
    """The input region that one unit of a tensor sees, per spatial dim of the input.

    Along input dim ``i``, unit ``p`` sees input pixels
    ``[offset[i] + p * stride[i], offset[i] + p * stride[i] + size[i])`` (the region may extend
    past the image border, into padding). ``size`` is None for units that see the whole input
    (after global pooling or a fully connected layer).

    ``axes[i]`` is the axis of the tensor (batch axis 0) that holds input dim ``i``, or None
    where the tensor has a single unit along that dim (it was squeezed or reduced away); None as
    a whole means axes ``2, 3, ...`` (a map in NCHW order). ``units[i]`` is the number of units
    along that axis.
    """

    size: tuple[int, ...] | None
    stride: tuple[int, ...]
    offset: tuple[int, ...]
    axes: tuple[int | None, ...] | None = None
    units: tuple[int, ...] | None = None

    def box(self, position: tuple[int, ...], channel: int | None = None) -> Box | None:
        """The ``[begin, end)`` input range of the unit at ``position``, per input spatial dim.

        Args:
            position: The unit's index along the tensor's axes 2, 3, ... (its per-sample axes
                after the first, which the analyses take for channels).
            channel: The unit's index along axis 1. It matters only where axis 1 holds a spatial
                dim (an NHWC map); without it, the box spans every unit along that axis.
        """
        if self.size is None:
            return None
        if self.axes is None:
            if len(position) != len(self.size):
                raise ValueError(
                    f"position {list(position)} has {len(position)} dims; the field has "
                    f"{len(self.size)}"
                )
            axes: tuple[int | None, ...] = tuple(range(2, 2 + len(self.size)))
        else:
            axes = self.axes
        units = self.units or (1,) * len(self.size)
        ranges = []
        for axis, count, offset, stride, size in zip(
            axes, units, self.offset, self.stride, self.size, strict=True
        ):
            if axis is None:
                first = last = 0
            elif axis >= 2:
                if axis - 2 >= len(position):
                    raise ValueError(
                        f"position {list(position)} does not reach axis {axis} of the tensor"
                    )
                first = last = int(position[axis - 2])
            elif axis == 1 and channel is not None:
                first = last = channel
            else:
                first, last = 0, count - 1
            ranges.append((offset + first * stride, offset + last * stride + size))
        return tuple(ranges)

    def describe(self) -> str:
        """Short text such as ``11x11 /4``, ``23x31 /8x4`` (strides per dim) or ``global``."""
        if self.size is None:
            return "global"
        strides = self.stride if len(set(self.stride)) > 1 else sorted(set(self.stride))
        return f"{'x'.join(map(str, self.size))} /{'x'.join(map(str, strides))}"


def _public(field: Field, shape: Sequence[int] | None, rank: int) -> ReceptiveField:
    """Integers rounded outward (see the module docstring), with the axes and unit counts."""
    if field is None or any(
        d.axis is not None and (shape is None or d.axis >= len(shape)) for d in field
    ):
        return ReceptiveField(None, (1,) * rank, (0,) * rank)
    sizes, strides, offsets, axes, units = [], [], [], [], []
    for dim in field:
        count = 1 if dim.axis is None or shape is None else int(shape[dim.axis])
        if dim.stride.denominator == 1:
            stride = int(dim.stride)
            begin, size = dim.offset, dim.size
        else:
            # The whole stride nearest below or above (at least 1) whose cover is smaller.
            line = [(0, count, dim.offset, dim.stride, dim.size)]
            candidates = {max(1, math.floor(dim.stride)), math.ceil(dim.stride)}
            stride, begin, size = min(
                ((c, *cover(line, Fraction(c))) for c in candidates),
                key=lambda c: (math.ceil(c[1] + c[2]) - math.floor(c[1]), c[0]),
            )
        first = math.floor(begin)
        sizes.append(math.ceil(begin + size) - first)
        strides.append(stride)
        offsets.append(first)
        axes.append(dim.axis)
        units.append(count)
    return ReceptiveField(tuple(sizes), tuple(strides), tuple(offsets), tuple(axes), tuple(units))


def _input_dims(per_sample: tuple[int | str, ...]) -> tuple[int, ...]:
    """Axes of the input that hold its spatial dims: ``2..`` for NCHW, ``1..rank-1`` for NHWC."""
    from onnxdeconv.inputs import image_layout  # the inputs module imports OpenCV: load late

    rank = len(per_sample) + 1
    if rank >= 4:
        try:
            layout, _ = image_layout(per_sample)
        except InputError:
            layout = "NCHW"
        if layout == "NHWC":
            return tuple(range(1, rank - 1))
    return tuple(range(2, rank))


def receptive_fields(
    graph: onnx.GraphProto,
    input_name: str,
    info: Mapping[str, TensorInfo],
    constants: Mapping[str, np.ndarray] | None = None,
) -> dict[str, ReceptiveField]:
    """Receptive field of every tensor computed from the image input.

    Args:
        graph: The forward graph, in topological order.
        input_name: The image input.
        info: Static shapes of the tensors (batch first).
        constants: Values of initializers and constant tensors (pads, slice starts, resize
            scales in newer opsets); default: those the graph holds.

    Ops without a rule keep the field when their inputs broadcast to their output (as
    elementwise ops), and make it global otherwise.
    """
    ctx = Context(info, constants if constants is not None else constant_tensors(graph))
    per_sample = tuple(info[input_name].shape[1:])
    dims = _input_dims(per_sample)
    fields: dict[str, Field] = {
        input_name: tuple(Dim(a, Fraction(0), Fraction(1), Fraction(1)) for a in dims)
    }
    for node in graph.node:
        rule = FIELD_RULES.get(node.op_type, _ELEMENTWISE)
        data = range(len(node.input)) if rule.data_inputs is None else rule.data_inputs
        on_path = {
            i: fields[node.input[i]]
            for i in data
            if i < len(node.input) and node.input[i] in fields
        }
        if not on_path or rule.apply is None:
            continue
        op = Op(node, ctx, on_path)
        outputs: list[Field]
        try:
            outputs = _apply(rule.apply, op)
        except (ValueError, KeyError, IndexError, ZeroDivisionError, TypeError) as exc:
            # A malformed attribute must not stop listing layers: the field is unknown there.
            logger.debug("receptive field of %s (%s): %s", node.name, node.op_type, exc)
            outputs = [None] * len(node.output)
        for name, field in zip(node.output, outputs, strict=True):
            if name:
                fields[name] = field
    rank = len(dims)
    return {name: _public(field, ctx.shape(name), rank) for name, field in fields.items()}


def _apply(apply: FieldFunction, op: Op) -> list[Field]:
    """The field of each output of ``op.node``."""
    node = op.node
    field = apply(op)
    if isinstance(field, list):
        return field  # a rule for each output (Split)
    # Second outputs (pool indices, a dropout mask) share the map's field when they share its
    # shape; running statistics and states do not.
    first = op.out_shape()
    return [
        field if index == 0 or op.out_shape(index) == first else None
        for index in range(len(node.output))
    ]
