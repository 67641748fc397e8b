"""Resize and Upsample: nearest and linear interpolation, transposed axis by axis.

Both modes are separable: along each axis, output ``j`` is ``sum_t w_t[j] * x[i_t[j]]`` with one
tap (nearest) or two (linear). The taps are computed here in float32 arithmetic, the way ONNX
Runtime computes them, so that nearest rounding ties fall on the same side; the transpose then adds
each output's weighted signal back onto the elements it read (see
:func:`~onnxdeconv.deconv.rules.shape_ops.scatter_back`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.shape_ops import Tap, only_data_input_on_path, scatter_back

F32 = np.float32

COORDINATE_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def source_coordinates(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    """Where each output samples the input, in input pixels (float32, as ONNX Runtime)."""
    o = np.arange(out_size, dtype=F32)
    s = F32(scale)
    if mode in ("pytorch_half_pixel", "align_corners") and out_size == 1:
        return np.zeros(1, F32)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        x = (o + F32(0.5)) / s - F32(0.5)
    elif mode == "align_corners":
        x = o * F32(in_size - 1) / F32(out_size - 1)
    elif mode == "asymmetric":
        x = o / s
    elif mode == "tf_half_pixel_for_nn":
        x = (o + F32(0.5)) / s
    else:
        raise ValueError(mode)
    return np.asarray(x, F32)


def nearest_taps(x: np.ndarray, in_size: int, rounding: str, scale: float) -> list[Tap]:
    """The one element each output copies."""
    floor = np.floor(x)
    if rounding == "round_prefer_floor":
        index = np.where(x == floor + F32(0.5), floor, np.sign(x) * np.floor(np.abs(x) + 0.5))
    elif rounding == "round_prefer_ceil":
        index = np.sign(x) * np.floor(np.abs(x) + 0.5)  # std::round: half away from zero
    elif rounding == "floor":
        index = floor
    elif rounding == "ceil":
        index = np.ceil(x)
    else:  # "simple", before opset 11: floor when enlarging, ceil when shrinking
        index = np.ceil(x) if scale < 1 else floor
    return [Tap(np.clip(index, 0, in_size - 1).astype(np.int64))]


def linear_taps(x: np.ndarray, in_size: int) -> list[Tap]:
    """The two neighbours each output interpolates, with their weights."""
    x = np.clip(x, F32(0), F32(in_size - 1)).astype(F32)
    low = np.minimum(x.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    to_low = np.abs(x - low.astype(F32))
    to_high = np.abs(x - high.astype(F32))
    same = low == high
    w_low = np.where(same, F32(0.5), to_high).astype(np.float64)
    w_high = np.where(same, F32(0.5), to_low).astype(np.float64)
    taps = [Tap(low, w_low), Tap(high, w_high)]
    taps = [t for t in taps if t.weight is not None and np.any(t.weight != 0)]
    if len(taps) == 1 and taps[0].weight is not None and np.all(taps[0].weight == 1):
        return [Tap(taps[0].index)]
    return taps


def _scales(ctx: TransposeContext, legacy: bool, axes: list[int], rank: int) -> list[float] | None:
    """Scales per tensor axis, or None when the node gives output sizes instead."""
    if legacy:
        if len(ctx.node.input) > 1 and ctx.node.input[1]:
            given = [float(s) for s in ctx.constant(1, "scales")]
        else:
            given = [float(s) for s in ctx.attr("scales", [])]
        if len(given) != rank:
            raise ctx.unsupported("the scales must be given for every axis")
        return given
    sizes_given = len(ctx.node.input) > 3 and bool(ctx.node.input[3])
    if len(ctx.node.input) > 2 and ctx.node.input[2]:
        value = ctx.optional_constant(2)
        if value is None and not sizes_given:
            raise ctx.unsupported("the scales must be a constant (initializer or Constant node)")
        if value is not None and value.size:
            scales = [1.0] * rank
            for axis, scale in zip(axes, value.ravel(), strict=True):
                scales[axis] = float(scale)
            return scales
    if not sizes_given:
        raise ctx.unsupported("the node gives neither scales nor sizes")
    return None


@dataclass(frozen=True)
class _Sampling:
    """Where a Resize reads its outputs from, per axis."""

    #: ``nearest`` or ``linear``.
    mode: str
    #: One of :data:`COORDINATE_MODES`.
    coordinates: str
    #: One of :data:`NEAREST_MODES`: how ``nearest`` rounds.
    rounding: str

    def taps(self, in_size: int, out_size: int, scale: float) -> list[Tap]:
        """The input elements (and weights) each output along one axis is computed from."""
        x = source_coordinates(self.coordinates, out_size, in_size, scale)
        if self.mode == "nearest":
            return nearest_taps(x, in_size, self.rounding, scale)
        return linear_taps(x, in_size)


def _sampling(ctx: TransposeContext, legacy: bool) -> _Sampling:
    """The node's interpolation, coordinate and rounding modes; raises for unsupported ones."""
    mode = str(ctx.attr("mode", "nearest"))
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise ctx.unsupported(f"mode={mode!r}; nearest and linear are supported")
    coordinates = "asymmetric" if legacy else str(ctx.attr("coordinate_transformation_mode", ""))
    coordinates = coordinates or "half_pixel"
    if coordinates not in COORDINATE_MODES:
        raise ctx.unsupported(
            f"coordinate_transformation_mode={coordinates!r}; supported: "
            + ", ".join(COORDINATE_MODES)
        )
    rounding = "simple" if legacy else str(ctx.attr("nearest_mode", "round_prefer_floor"))
    if rounding not in NEAREST_MODES:
        raise ctx.unsupported(f"nearest_mode={rounding!r}")
    return _Sampling(mode, coordinates, rounding)


def _check_resizable(ctx: TransposeContext, mode: str, scales: list[float] | None) -> None:
    """Raise for what the transpose does not cover: aspect policies, the batch, antialiasing."""
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    if str(ctx.attr("keep_aspect_ratio_policy", "stretch")) != "stretch" and scales is None:
        raise ctx.unsupported("only keep_aspect_ratio_policy='stretch' is supported with sizes")
    if ctx.info[ctx.node.input[0]].shape[0] != ctx.info[ctx.node.output[0]].shape[0] or (
        scales is not None and scales[0] != 1
    ):
        raise ctx.unsupported("resizing the batch axis is not supported")
    if (
        int(ctx.attr("antialias", 0))
        and mode == "linear"
        and any(o < i for i, o in zip(in_shape, out_shape, strict=True))
    ):
        raise ctx.unsupported("antialiased downsampling is not supported")


@transpose_rule("Resize", "Upsample")
def resize(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Send each output's signal back to the input elements it was interpolated from.

    Nearest: to the one element it copied. Linear: to its two neighbours along each axis, with
    the interpolation weights. The batch axis must keep its size.
    """
    only_data_input_on_path(ctx)
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    rank = len(in_shape) + 1
    # Resize-10 has (X, scales); from opset 11 on, (X, roi, scales[, sizes]).
    legacy = ctx.node.op_type == "Upsample" or len(ctx.node.input) == 2
    sampling = _sampling(ctx, legacy)
    axes = [int(a) + rank if int(a) < 0 else int(a) for a in ctx.attr("axes", range(rank))]
    scales = _scales(ctx, legacy, axes, rank)
    _check_resizable(ctx, sampling.mode, scales)
    shape = list(out_shape)
    for local, (n_in, n_out) in enumerate(zip(in_shape, out_shape, strict=True)):
        scale = scales[local + 1] if scales is not None else float(F32(n_out) / F32(n_in))
        if n_in == n_out and scale == 1:
            continue  # ONNX Runtime copies an axis of scale 1 whatever the coordinate mode
        taps = sampling.taps(n_in, n_out, scale)
        signal = scatter_back(ctx.graph, signal, shape, local, taps, n_in)
        shape[local] = n_in
    return {0: signal}
