"""The field algebra every receptive-field rule shares, and the table of rules.

See :mod:`onnxdeconv.graph.receptive_field` for what a field is. A rule maps the fields of a
node's inputs to the field of its output; each op family's module registers its rules with
:func:`field_rule` (or :func:`no_field`) in :data:`FIELD_RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TypeVar

import numpy as np
import onnx

from onnxdeconv.graph.passes import TensorInfo, node_attribute
from onnxdeconv.registry import OpRegistry


@dataclass(frozen=True)
class Dim:
    """One input dim of a tensor's field: the axis that holds it (None: one unit) and its line."""

    axis: int | None
    offset: Fraction
    stride: Fraction
    size: Fraction


#: A tensor's field: one entry per input spatial dim, or None once it is global.
Field = tuple[Dim, ...] | None

#: A cover piece: ``(first, count, offset, stride, size)``: units ``first .. first + count - 1``
#: see ``[offset + (q - first) * stride, ... + size)``.
Piece = tuple[int, int, Fraction, Fraction, Fraction]


def cover(pieces: Iterable[Piece], stride: Fraction) -> tuple[Fraction, Fraction]:
    """Offset and size of the field with ``stride`` that contains every piece."""
    low: Fraction | None = None
    high: Fraction | None = None
    for first, count, offset, step, size in pieces:
        # Both lines are affine in q, so their gap is extreme at the ends of the piece.
        for q in {first, first + count - 1}:
            begin = offset + (q - first) * step - q * stride
            low = begin if low is None else min(low, begin)
            high = begin + size if high is None else max(high, begin + size)
    assert low is not None and high is not None
    return low, high - low


def ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    """Integer list attribute ``name`` of ``node``, or None."""
    value = node_attribute(node, name)
    return None if value is None else [int(v) for v in value]


class Context:
    """Shapes and constant values that the ops read."""

    def __init__(self, info: Mapping[str, TensorInfo], constants: Mapping[str, np.ndarray]):
        self.info = info
        self.constants = constants

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The static batch-first shape of ``name``, or None where it is not known."""
        entry = self.info.get(name)
        if entry is None or not all(isinstance(d, int) and d > 0 for d in entry.shape):
            return None
        return tuple(int(d) for d in entry.shape)

    def value(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The constant value of input ``index``, or None where it is absent or computed."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        return np.asarray(self.constants[name]) if name in self.constants else None

    def input_ints(self, node: onnx.NodeProto, index: int) -> list[int] | None:
        """Integers from a constant input."""
        array = self.value(node, index)
        return None if array is None else [int(v) for v in array.reshape(-1)]

    def ints(self, node: onnx.NodeProto, attribute: str, index: int) -> list[int] | None:
        """Integers from an attribute (old opsets) or else a constant input (new opsets)."""
        value = ints(node, attribute)
        return value if value is not None else self.input_ints(node, index)


@dataclass
class Op:
    """What a handler gets: the node, its inputs' fields (None: global) and shapes."""

    node: onnx.NodeProto
    ctx: Context
    #: Field of each input on the path, by input index.
    fields: dict[int, Field]

    def in_shape(self, index: int = 0) -> tuple[int, ...] | None:
        """Static shape of input ``index``, or None."""
        return self.ctx.shape(self.node.input[index])

    def out_shape(self, index: int = 0) -> tuple[int, ...] | None:
        """Static shape of output ``index``, or None."""
        return self.ctx.shape(self.node.output[index])


def spread(dim: Dim, shape: Sequence[int]) -> bool:
    """Whether the dim sits on an axis with more than one unit."""
    return dim.axis is not None and shape[dim.axis] > 1


def channels_hold_dim(field: tuple[Dim, ...], shape: Sequence[int] | None) -> bool:
    """Whether a dim of ``field`` lies on the channel axis and that has several (or unknown) units.

    An op that mixes channels then mixes that dim whole: its output has no bounded field.
    """
    return any(dim.axis == 1 for dim in field) and (shape is None or shape[1] > 1)


def map_spatial(field: tuple[Dim, ...], spatial: Callable[[Dim, int], Dim]) -> tuple[Dim, ...]:
    """``field`` with ``spatial(dim, axis)`` for each dim on a spatial axis (2 on); others stay."""
    return tuple(
        dim if dim.axis is None or dim.axis < 2 else spatial(dim, dim.axis) for dim in field
    )


def renumber(field: Field, mapping: Callable[[int], int | None]) -> Field:
    """The field with each dim's axis moved by ``mapping`` (None: the dim has one unit)."""
    if field is None:
        return None
    return tuple(replace(d, axis=None if d.axis is None else mapping(d.axis)) for d in field)


# --- merging the fields of several inputs --------------------------------------------------------


def merge(parts: Sequence[tuple[Field, Sequence[int]]], out: Sequence[int]) -> Field:
    """Fields of inputs that broadcast to ``out``; each shape is already aligned to ``out``.

    An input that is broadcast along an axis contributes the same region to every unit of it.
    """
    fields = [f for f, _ in parts if f is not None]
    if len(fields) < len(parts) or not parts:
        return None
    merged = []
    for index in range(len(fields[0])):
        dim = _merge_dim(
            [(f[index], shape) for f, (_, shape) in zip(fields, parts, strict=True)], out
        )
        if dim is None:
            return None  # one input dim along two output axes: units mix positions
        merged.append(dim)
    return tuple(merged)


def _merge_dim(entries: Sequence[tuple[Dim, Sequence[int]]], out: Sequence[int]) -> Dim | None:
    """One input dim of the merged field; None where inputs hold it along different axes."""
    axes = {d.axis for d, _ in entries if d.axis is not None and out[d.axis] > 1}
    if len(axes) > 1:
        return None
    axis = axes.pop() if axes else next((d.axis for d, _ in entries), None)
    count = 1 if axis is None else out[axis]
    # An input that holds the dim along the axis, unbroadcast, moves with the unit; any other
    # shows every unit the same region.
    pieces: list[Piece] = [
        (0, count, d.offset, d.stride if _moves(d, shape, axis, count) else Fraction(0), d.size)
        for d, shape in entries
    ]
    moving_strides = [p[3] for p in pieces if p[3]]
    stride = max(moving_strides) if moving_strides else max(d.stride for d, _ in entries)
    offset, size = cover(pieces, stride)
    return Dim(axis, offset, stride, size)


def _moves(dim: Dim, shape: Sequence[int], axis: int | None, count: int) -> bool:
    return axis is not None and dim.axis == axis and shape[axis] == count


def aligned(field: Field, shape: Sequence[int], rank: int) -> tuple[Field, tuple[int, ...]]:
    """Numpy broadcasting: a lower-rank input lines up with the output's last axes."""
    shift = rank - len(shape)
    return renumber(field, lambda a: a + shift), (1,) * shift + tuple(shape)


def resampled(
    dim: Dim, count: int, seen: Callable[[int], tuple[int, int] | None], scale: Fraction
) -> Dim:
    """The cover of an axis whose output unit ``q`` sees input units ``seen(q)`` (inclusive)."""
    pieces: list[Piece] = []
    for q in range(count):
        span = seen(q)
        if span is not None:
            low, high = span
            size = (high - low) * dim.stride + dim.size
            pieces.append((q, 1, dim.offset + low * dim.stride, Fraction(0), size))
    stride = dim.stride / scale
    if not pieces:
        return Dim(dim.axis, dim.offset, stride, dim.size)
    offset, size = cover(pieces, stride)
    return Dim(dim.axis, offset, stride, size)


# --- the table -----------------------------------------------------------------------------------

#: A rule: the field of the node's output (a list: of each output) from ``op.fields``.
FieldFunction = Callable[[Op], "Field | list[Field]"]
_F = TypeVar("_F", bound=FieldFunction)


@dataclass(frozen=True)
class FieldRule:
    """How one op type maps fields."""

    #: The rule; None for ops whose outputs describe the tensor (its shape) rather than hold
    #: its values: they get no field.
    apply: FieldFunction | None
    #: The inputs that carry the data; the others are shapes, indices, pads or weights.
    #: None: every input.
    data_inputs: tuple[int, ...] | None = None


#: Rule of each op type; the modules of this package register theirs on the first lookup. Ops
#: without one are treated as elementwise (see :mod:`.elementwise`).
FIELD_RULES: OpRegistry[FieldRule] = OpRegistry(
    "receptive-field rule", "onnxdeconv.graph.receptive_field"
)


def field_rule(*op_types: str, data_inputs: tuple[int, ...] | None = None) -> Callable[[_F], _F]:
    """Decorator: register the decorated function as the rule of each of ``op_types``."""

    def register(apply: _F) -> _F:
        FIELD_RULES.register(*op_types)(FieldRule(apply, data_inputs))
        return apply

    return register


def no_field(*op_types: str) -> None:
    """Register ``op_types`` as ops whose outputs describe the tensor: they get no field."""
    FIELD_RULES.register(*op_types)(FieldRule(None))
