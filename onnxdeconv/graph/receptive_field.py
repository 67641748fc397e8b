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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.errors import InputError
from onnxdeconv.graph.passes import TensorInfo, constant_tensors

logger = logging.getLogger(__name__)

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


# --- the exact field, while it propagates --------------------------------------------------------


@dataclass(frozen=True)
class _Dim:
    """One input dim of a tensor's field: the axis that holds it (None: one unit) and its line."""

    axis: int | None
    offset: Fraction
    stride: Fraction
    size: Fraction


#: A tensor's field: one entry per input spatial dim, or None once it is global.
_Field = tuple[_Dim, ...] | None
#: A cover piece: ``(first, count, offset, stride, size)``: units ``first .. first + count - 1``
#: see ``[offset + (q - first) * stride, ... + size)``.
_Piece = tuple[int, int, Fraction, Fraction, Fraction]


def _cover(pieces: Iterable[_Piece], stride: Fraction) -> tuple[Fraction, Fraction]:
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


def _public(field: _Field, shape: Sequence[int] | None, rank: int) -> ReceptiveField:
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
                ((c, *_cover(line, Fraction(c))) for c in candidates),
                key=lambda c: (math.ceil(c[1] + c[2]) - math.floor(c[1]), c[0]),
            )
        first = math.floor(begin)
        sizes.append(math.ceil(begin + size) - first)
        strides.append(stride)
        offsets.append(first)
        axes.append(dim.axis)
        units.append(count)
    return ReceptiveField(tuple(sizes), tuple(strides), tuple(offsets), tuple(axes), tuple(units))


# --- reading nodes -------------------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    value = _attr(node, name)
    return None if value is None else [int(v) for v in value]  # type: ignore[attr-defined]


class _Context:
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
        value = _ints(node, attribute)
        return value if value is not None else self.input_ints(node, index)


@dataclass
class _Op:
    """What a handler gets: the node, its inputs' fields (None: global) and shapes."""

    node: onnx.NodeProto
    ctx: _Context
    #: Field of each input on the path, by input index.
    fields: dict[int, _Field]

    def in_shape(self, index: int = 0) -> tuple[int, ...] | None:
        return self.ctx.shape(self.node.input[index])

    def out_shape(self, index: int = 0) -> tuple[int, ...] | None:
        return self.ctx.shape(self.node.output[index])


def _spread(dim: _Dim, shape: Sequence[int]) -> bool:
    """Whether the dim sits on an axis with more than one unit."""
    return dim.axis is not None and shape[dim.axis] > 1


def _renumber(field: _Field, mapping: Callable[[int], int | None]) -> _Field:
    if field is None:
        return None
    return tuple(replace(d, axis=None if d.axis is None else mapping(d.axis)) for d in field)


# --- merging the fields of several inputs --------------------------------------------------------


def _merge(parts: Sequence[tuple[_Field, Sequence[int]]], out: Sequence[int]) -> _Field:
    """Fields of inputs that broadcast to ``out``; each shape is already aligned to ``out``.

    An input that is broadcast along an axis contributes the same region to every unit of it.
    """
    fields = [f for f, _ in parts]
    if any(f is None for f in fields) or not parts:
        return None
    merged = []
    for index in range(len(fields[0])):  # type: ignore[arg-type]
        entries = [(f[index], shape) for f, shape in parts]  # type: ignore[index]
        spread = {d.axis for d, shape in entries if d.axis is not None and out[d.axis] > 1}
        if len(spread) > 1:
            return None  # one input dim along two output axes: units mix positions
        axis = spread.pop() if spread else next((d.axis for d, _ in entries), None)
        count = 1 if axis is None else out[axis]
        pieces: list[_Piece] = []
        strides = []
        for dim, shape in entries:
            moving = axis is not None and dim.axis == axis and shape[axis] == count
            pieces.append((0, count, dim.offset, dim.stride if moving else Fraction(0), dim.size))
            strides.append(dim.stride)
        moving_strides = [p[3] for p in pieces if p[3]]
        stride = max(moving_strides) if moving_strides else max(strides)
        offset, size = _cover(pieces, stride)
        merged.append(_Dim(axis, offset, stride, size))
    return tuple(merged)


def _aligned(field: _Field, shape: Sequence[int], rank: int) -> tuple[_Field, tuple[int, ...]]:
    """Numpy broadcasting: a lower-rank input lines up with the output's last axes."""
    shift = rank - len(shape)
    return _renumber(field, lambda a: a + shift), (1,) * shift + tuple(shape)


def _elementwise(op: _Op) -> _Field:
    """Inputs that broadcast to the output merge; global where the shapes do not broadcast."""
    out = op.out_shape()
    if out is None:
        return None
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if shape is None or len(shape) > len(out):
            return None
        if any(s not in (1, o) for s, o in zip(shape, out[len(out) - len(shape) :], strict=True)):
            return None
        parts.append(_aligned(field, shape, len(out)))
    if op.node.op_type == "Mul" and len(parts) > 1:
        parts = _without_gates(parts, out)
    return _merge(parts, out)


def _without_gates(
    parts: list[tuple[_Field, tuple[int, ...]]], out: Sequence[int]
) -> list[tuple[_Field, tuple[int, ...]]]:
    """Drop factors broadcast over every spatial axis of another factor: they are gates."""
    spatial = {
        d.axis
        for field, shape in parts
        if field is not None
        for d in field
        if d.axis is not None and shape[d.axis] > 1 and out[d.axis] > 1
    }
    if not spatial:
        return parts
    kept = [(f, s) for f, s in parts if any(s[a] > 1 for a in spatial)]
    return kept or parts


# --- windows: Conv, pools, ConvTranspose, resampling ---------------------------------------------


def _same_pads(
    node: onnx.NodeProto, size: int | None, kernel: int, stride: int, dilation: int
) -> int | None:
    """Begin padding under ``auto_pad``; None for explicit pads, -1 when the size is unknown."""
    auto_pad = _attr(node, "auto_pad", "NOTSET")
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


def _kernel(op: _Op) -> list[int] | None:
    kernel = _ints(op.node, "kernel_shape")
    if kernel is None and op.node.op_type in ("Conv", "ConvTranspose"):
        weight = op.ctx.value(op.node, 1)
        if weight is not None:
            kernel = list(weight.shape[2:])
        else:
            shape = op.ctx.shape(op.node.input[1]) if len(op.node.input) > 1 else None
            kernel = None if shape is None else list(shape[2:])
    return kernel


def _window(op: _Op, mixes_channels: bool) -> _Field:
    """Conv and pools: unit ``p`` sees input units ``p*s - pad .. p*s - pad + d*(k-1)``."""
    field, shape = op.fields[0], op.in_shape()
    kernel = _kernel(op)
    if field is None or kernel is None or (shape is not None and len(kernel) != len(shape) - 2):
        return None
    rank = len(kernel)
    strides = _ints(op.node, "strides") or [1] * rank
    dilations = _ints(op.node, "dilations") or [1] * rank
    pads = _ints(op.node, "pads") or [0] * 2 * rank
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            if mixes_channels and dim.axis == 1 and (shape is None or shape[1] > 1):
                return None  # the channel axis holds a spatial dim: every unit mixes it
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
            _Dim(
                dim.axis,
                dim.offset - begin * dim.stride,
                dim.stride * s,
                dim.size + d * (k - 1) * dim.stride,
            )
        )
    return tuple(dims)


def _resampled(
    dim: _Dim, count: int, seen: Callable[[int], tuple[int, int] | None], scale: Fraction
) -> _Dim:
    """The cover of an axis whose output unit ``q`` sees input units ``seen(q)`` (inclusive)."""
    pieces: list[_Piece] = []
    for q in range(count):
        span = seen(q)
        if span is not None:
            low, high = span
            size = (high - low) * dim.stride + dim.size
            pieces.append((q, 1, dim.offset + low * dim.stride, Fraction(0), size))
    stride = dim.stride / scale
    if not pieces:
        return _Dim(dim.axis, dim.offset, stride, dim.size)
    offset, size = _cover(pieces, stride)
    return _Dim(dim.axis, offset, stride, size)


def _conv_transpose(op: _Op) -> _Field:
    """Output ``q`` gets input unit ``j`` through tap ``t`` when ``q = j*s - pad + t*d``."""
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    kernel = _kernel(op)
    if field is None or shape is None or out is None or kernel is None:
        return None
    rank = len(kernel)
    strides = _ints(op.node, "strides") or [1] * rank
    dilations = _ints(op.node, "dilations") or [1] * rank
    pads = _ints(op.node, "pads") or [0] * 2 * rank
    output_padding = _ints(op.node, "output_padding") or [0] * rank
    derived = _attr(op.node, "auto_pad", "NOTSET") != "NOTSET" or _attr(op.node, "output_shape")
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            if dim.axis == 1 and shape[1] > 1:
                return None
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

        dims.append(_resampled(dim, out[dim.axis], seen, Fraction(s)))
    return tuple(dims)


def _scales(op: _Op, rank: int) -> list[Fraction | None]:
    """Resize/Upsample scale per axis when the graph gives scales; None where only sizes."""
    node = op.node
    values: list[float] | None = None
    attribute = _attr(node, "scales")
    if attribute is not None:
        values = [float(v) for v in attribute]  # type: ignore[attr-defined]
    else:
        index = 1 if node.op_type == "Upsample" or len(node.input) == 2 else 2
        array = op.ctx.value(node, index)
        if array is not None and array.size:
            values = [float(v) for v in array.reshape(-1)]
    if values is None:
        return [None] * rank
    axes = _ints(node, "axes") or list(range(rank))
    scales: list[Fraction | None] = [Fraction(1)] * rank
    for axis, value in zip(axes, values, strict=False):
        scales[axis % rank] = Fraction(value).limit_denominator(10_000)
    return scales


@dataclass(frozen=True)
class _Interpolation:
    """How Resize reads one axis: the coordinate transforms and input units to consider."""

    transforms: tuple[str, ...]
    mode: str
    nearest_modes: tuple[str, ...]
    #: Input units read around ``floor(x)`` (linear, cubic), and how far a shrinking
    #: antialiasing filter reaches past ``x``.
    window: tuple[int, ...]
    reach: Fraction
    size: int
    count: int
    scale: Fraction
    roi: np.ndarray | None
    axis: int
    rank: int

    def seen(self, q: int) -> tuple[int, int]:
        """First and last input unit that output unit ``q`` reads."""
        units = []
        for transform in self.transforms:
            x = _source(transform, q, self)
            if self.mode == "nearest":
                picks = [_nearest(x, m) for m in self.nearest_modes]
            else:
                picks = [math.floor(x) + w for w in self.window]
                if self.reach:
                    picks += [math.floor(x - self.reach), math.ceil(x + self.reach)]
            units += [min(max(p, 0), self.size - 1) for p in picks]
        return min(units), max(units)


def _resize(op: _Op) -> _Field:
    """Resize and Upsample: output ``q`` sees the input units its interpolation reads."""
    node, field, shape, out = op.node, op.fields[0], op.in_shape(), op.out_shape()
    if field is None or shape is None or out is None:
        return None
    scales = _scales(op, len(shape))
    transforms: tuple[str, ...] = (
        str(_attr(node, "coordinate_transformation_mode", "half_pixel")),
    )
    if node.op_type == "Upsample":
        transforms = ("asymmetric",)
    elif _attr(node, "coordinate_transformation_mode") is None:
        # Opset-10 Resize maps asymmetrically, later ones by half pixels: the graph alone does
        # not say which, so the field covers both.
        transforms = ("asymmetric", "half_pixel")
    mode = str(_attr(node, "mode", "nearest"))
    nearest = _attr(node, "nearest_mode")
    nearest_modes = (str(nearest),) if nearest is not None else ("round_prefer_floor", "floor")
    window = (0,) if mode == "nearest" else (-1, 0, 1, 2) if mode == "cubic" else (0, 1)
    antialias = bool(_attr(node, "antialias", 0))
    roi = op.ctx.value(node, 1) if node.op_type == "Resize" and len(node.input) > 2 else None
    if "tf_crop_and_resize" in transforms and (roi is None or roi.size != 2 * len(shape)):
        return None
    dims = []
    for dim in field:
        if dim.axis is None or shape[dim.axis] == out[dim.axis] == 1:
            dims.append(dim)
            continue
        axis, size, count = dim.axis, shape[dim.axis], out[dim.axis]
        scale = scales[axis] or Fraction(count, size)
        # A shrinking antialiased filter widens by 1/scale.
        reach = (
            Fraction(max(window) + 1) / scale
            if antialias and scale < 1 and mode != "nearest"
            else Fraction(0)
        )
        reading = _Interpolation(
            transforms,
            mode,
            nearest_modes,
            window,
            reach,
            size,
            count,
            scale,
            roi,
            axis,
            len(shape),
        )
        if transforms == ("align_corners",) and count > 1 and size > 1:
            scale = Fraction(count - 1, size - 1)  # the corners meet: this is the true slope
        dims.append(_resampled(dim, count, reading.seen, scale))
    return tuple(dims)


def _source(transform: str, q: int, how: _Interpolation) -> Fraction:
    """The input coordinate that output unit ``q`` reads (ONNX Resize's coordinate transform)."""
    size, count, scale, roi = how.size, how.count, how.scale, how.roi
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
        end = Fraction(float(roi[how.rank + how.axis])).limit_denominator(10_000)
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


def _depth_to_space(op: _Op) -> _Field:
    block = int(_attr(op.node, "blocksize", 1))  # type: ignore[call-overload]
    field, out = op.fields[0], op.out_shape()
    if field is None or out is None:
        return None
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            if dim.axis == 1 and (op.in_shape() or (1, 2))[1] > 1:
                return None
            dims.append(dim)
            continue
        dims.append(
            _resampled(dim, out[dim.axis], lambda q: (q // block, q // block), Fraction(block))
        )
    return tuple(dims)


def _space_to_depth(op: _Op) -> _Field:
    block = int(_attr(op.node, "blocksize", 1))  # type: ignore[call-overload]
    field = op.fields[0]
    if field is None:
        return None
    dims = []
    for dim in field:
        if dim.axis is None or dim.axis < 2:
            if dim.axis == 1 and (op.in_shape() or (1, 2))[1] > 1:
                return None
            dims.append(dim)
            continue
        size = dim.size + (block - 1) * dim.stride
        dims.append(_Dim(dim.axis, dim.offset, dim.stride * block, size))
    return tuple(dims)


# --- layout: Transpose, reshapes, Pad, Slice, Split, Concat, Gather ------------------------------


def _transpose(op: _Op) -> _Field:
    field = op.fields[0]
    shape = op.in_shape()
    perm = _ints(op.node, "perm")
    if perm is None:
        if shape is None:
            return None
        perm = list(reversed(range(len(shape))))
    return _renumber(field, perm.index)


def _regroup(op: _Op) -> _Field:
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


def _slice(op: _Op) -> _Field:
    field, shape, out = op.fields[0], op.in_shape(), op.out_shape()
    if field is None or shape is None:
        return None
    starts = op.ctx.ints(op.node, "starts", 1)
    axes = op.ctx.ints(op.node, "axes", 3)
    steps = None if _ints(op.node, "starts") is not None else op.ctx.input_ints(op.node, 4)
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
        dims.append(_Dim(dim.axis, dim.offset + start * dim.stride, dim.stride * step, dim.size))
    return tuple(dims)


def _pad(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    pads = _ints(op.node, "pads") or _ints(op.node, "paddings")
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


def _split(op: _Op) -> list[_Field]:
    field = op.fields[0]
    shape = op.in_shape()
    axis = int(_attr(op.node, "axis", 0))  # type: ignore[call-overload]
    shapes = [op.ctx.shape(o) if o else None for o in op.node.output]
    if field is None or shape is None:
        return [None] * len(op.node.output)
    axis %= len(shape)
    results: list[_Field] = []
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


def _concat(op: _Op) -> _Field:
    out = op.out_shape()
    if out is None:
        return None
    axis = int(_attr(op.node, "axis", 0)) % len(out)  # type: ignore[call-overload]
    parts: list[tuple[_Field, tuple[int, ...]]] = []
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
        return _merge([(f, _widened(shape, axis, out)) for f, shape in parts], out)
    return _concat_spatial(parts, starts, axis, out)


def _widened(shape: Sequence[int], axis: int, out: Sequence[int]) -> tuple[int, ...]:
    """The shape of a Concat input as if it filled the output along ``axis``."""
    return tuple(out[a] if a == axis else s for a, s in enumerate(shape))


def _concat_spatial(
    parts: list[tuple[_Field, tuple[int, ...]]], starts: list[int], axis: int, out: Sequence[int]
) -> _Field:
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
            one = _merge(
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
        pieces: list[_Piece] = [
            (begin, shape[axis], d.offset, d.stride, d.size)
            for d, begin, (_, shape) in zip(dims, starts, parts, strict=True)
        ]
        stride = max(d.stride for d in dims)
        offset, size = _cover(pieces, stride)
        merged.append(_Dim(axis, offset, stride, size))
    return tuple(merged)


def _gather(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None or 0 not in op.fields:
        return None
    axis = int(_attr(op.node, "axis", 0)) % len(shape)  # type: ignore[call-overload]
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
            dims.append(_Dim(None, dim.offset + picked * dim.stride, dim.stride, dim.size))
        elif dim.axis is None or dim.axis < axis:
            dims.append(dim)
        elif dim.axis == axis:
            dims.append(replace(dim, axis=None))
        else:
            dims.append(replace(dim, axis=dim.axis + rank - 1))
    return tuple(dims)


# --- contractions and reductions -----------------------------------------------------------------


def _matmul(op: _Op) -> _Field:
    """MatMul keeps the field unless it contracts an axis that holds a spatial dim."""
    out = op.out_shape()
    if out is None:
        return None
    rank = len(out)
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if field is None or shape is None or len(shape) < 2:
            return None
        contracted = len(shape) - 1 if index == 0 else len(shape) - 2
        if any(d.axis == contracted and shape[contracted] > 1 for d in field):
            return None
        shift = rank - len(shape)
        aligned = list((1,) * shift + tuple(shape))
        aligned[contracted + shift] = 1
        parts.append((_renumber(field, partial(_contract, contracted, shift)), tuple(aligned)))
    return _merge(parts, out)


def _contract(contracted: int, shift: int, axis: int) -> int | None:
    return None if axis == contracted else axis + shift


def _reduced_axes(op: _Op, rank: int) -> list[int] | None:
    node = op.node
    if node.op_type in ("ArgMax", "ArgMin"):
        return [int(_attr(node, "axis", 0)) % rank]  # type: ignore[call-overload]
    axes = op.ctx.ints(node, "axes", 1)
    if axes is None and len(node.input) > 1 and node.input[1]:
        return None  # computed axes
    if not axes:
        return [] if _attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return [a % rank for a in axes]


def _reduce(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    axes = _reduced_axes(op, len(shape))
    if axes is None:
        return None
    if any(d.axis in axes and _spread(d, shape) for d in field):
        return None
    if _attr(op.node, "keepdims", 1):
        return field
    return _renumber(field, lambda a: None if a in axes else a - sum(1 for r in axes if r < a))


def _global_pool(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    return (
        None
        if any(d.axis is not None and d.axis >= 2 and _spread(d, shape) for d in field)
        else field
    )


def _gemm(op: _Op) -> _Field:
    """Gemm contracts a whole row of its 2-D inputs: global unless no input spreads over space."""
    out = op.out_shape()
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if field is None or shape is None or out is None:
            return None
        if any(_spread(d, shape) for d in field):
            return None
        parts.append((_renumber(field, lambda a: None), tuple(out)))
    return _merge(parts, out) if out is not None else None


def _tile(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    repeats = op.ctx.input_ints(op.node, 1)
    if field is None or shape is None or repeats is None:
        return None
    tiled = [a for a, r in enumerate(repeats) if r != 1]
    if any(d.axis in tiled and _spread(d, shape) for d in field):
        return None  # repeated copies of the map: a unit's region depends on its copy
    return tuple(replace(d, axis=None) if d.axis in tiled else d for d in field)


def _softmax(op: _Op) -> _Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    axis = int(_attr(op.node, "axis", -1)) % len(shape)  # type: ignore[call-overload]
    # Before opset 13 the axis meant "this one and all after it": assume the wider.
    if any(d.axis is not None and d.axis >= axis and _spread(d, shape) for d in field):
        return None
    return field


# --- the walk ------------------------------------------------------------------------------------

_REDUCTIONS = (
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
_SINGLE: dict[str, Callable[[_Op], _Field]] = {
    "Conv": lambda op: _window(op, mixes_channels=True),
    "MaxPool": lambda op: _window(op, mixes_channels=False),
    "AveragePool": lambda op: _window(op, mixes_channels=False),
    "LpPool": lambda op: _window(op, mixes_channels=False),
    "ConvTranspose": _conv_transpose,
    "Resize": _resize,
    "Upsample": _resize,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "Transpose": _transpose,
    "Reshape": _regroup,
    "Flatten": _regroup,
    "Squeeze": _regroup,
    "Unsqueeze": _regroup,
    "Slice": _slice,
    "Pad": _pad,
    "Concat": _concat,
    "Gather": _gather,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Tile": _tile,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "GlobalLpPool": _global_pool,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Hardmax": _softmax,
    **dict.fromkeys((*_REDUCTIONS, "ArgMax", "ArgMin"), _reduce),
}
#: The inputs that carry the data; the others are shapes, indices, pads or weights.
_DATA_INPUTS: dict[str, tuple[int, ...]] = dict.fromkeys(
    (
        *("Conv", "ConvTranspose", "Resize", "Upsample", "Reshape", "Slice", "Pad", "Gather"),
        *("Split", "Squeeze", "Unsqueeze", "Expand", "Tile", "Clip", *_REDUCTIONS),
    ),
    (0,),
)
#: Ops whose outputs describe the tensor rather than hold its values.
_NO_FIELD = {"Shape", "Size", "NonZero", "ConstantOfShape", "EyeLike"}


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

    Ops without a rule here keep the field when their inputs broadcast to their output
    (elementwise ops), and make it global otherwise.
    """
    ctx = _Context(info, constants if constants is not None else constant_tensors(graph))
    per_sample = tuple(info[input_name].shape[1:])
    dims = _input_dims(per_sample)
    fields: dict[str, _Field] = {
        input_name: tuple(_Dim(a, Fraction(0), Fraction(1), Fraction(1)) for a in dims)
    }
    for node in graph.node:
        data = _DATA_INPUTS.get(node.op_type, range(len(node.input)))
        on_path = {
            i: fields[node.input[i]]
            for i in data
            if i < len(node.input) and node.input[i] in fields
        }
        if not on_path or node.op_type in _NO_FIELD:
            continue
        op = _Op(node, ctx, on_path)
        outputs: list[_Field]
        try:
            outputs = _apply(op)
        except (ValueError, KeyError, IndexError, ZeroDivisionError, TypeError) as exc:
            # A malformed attribute must not stop listing layers: the field is unknown there.
            logger.debug("receptive field of %s (%s): %s", node.name, node.op_type, exc)
            outputs = [None] * len(node.output)
        for name, field in zip(node.output, outputs, strict=True):
            if name:
                fields[name] = field
    rank = len(dims)
    return {name: _public(field, ctx.shape(name), rank) for name, field in fields.items()}


def _apply(op: _Op) -> list[_Field]:
    """The field of each output of ``op.node``."""
    node = op.node
    if node.op_type == "Split":
        return _split(op)
    field = _SINGLE.get(node.op_type, _elementwise)(op)
    # Second outputs (pool indices, a dropout mask) share the map's field when they share its
    # shape; running statistics and states do not.
    first = op.out_shape()
    return [
        field if index == 0 or op.out_shape(index) == first else None
        for index in range(len(node.output))
    ]
