"""The experimental ops of opsets 1 to 9 that old Caffe2 and CNTK exports use.

ONNX Runtime runs them up to opset 9 (see :mod:`onnxdeconv.graph.experimental`); all four are
affine, so their transposes are exact and the same under every rule:

* ``ImageScaler``: ``y = scale * x + bias[c]`` per channel (the mean pixel of old exports);
* ``Affine``: ``y = alpha * x + beta``, and ``Scale``: ``y = scale * x``;
* ``Crop``: a window of the last two axes (``border`` ``[left, top, right, bottom]``, or a
  ``scale`` ``[height, width]`` from the top-left corner), transposed like a ``Slice``.
"""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.shape_ops import Tap, only_data_input_on_path, scatter_back
from onnxdeconv.errors import ModelLoadError
from onnxdeconv.graph.experimental import crop_window


def _scaled(ctx: TransposeContext, signal: str, attribute: str) -> dict[int, str]:
    """``factor * signal``, the factor the node's float attribute ``attribute`` (default 1)."""
    only_data_input_on_path(ctx)
    factor = float(ctx.attr(attribute, 1.0))
    if factor == 1.0:
        return {0: signal}
    scale = ctx.graph.const(np.float32(factor), f"{attribute}_factor")
    return {0: ctx.graph.op("Mul", [signal, scale], hint=f"{ctx.node.op_type.lower()}_t")}


@transpose_rule("ImageScaler")
def image_scaler(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by ``scale``: the per-channel ``bias`` is a constant, with no signal."""
    return _scaled(ctx, signal, "scale")


@transpose_rule("Affine")
def affine(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by ``alpha``: ``beta`` is a constant, with no signal."""
    return _scaled(ctx, signal, "alpha")


@transpose_rule("Scale")
def scale(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by ``scale``."""
    return _scaled(ctx, signal, "scale")


@transpose_rule("Crop")
def crop(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Put the signal back inside the window the crop read, zeros on the borders."""
    only_data_input_on_path(ctx)
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    if len(in_shape) != 3:
        raise ctx.unsupported("Crop needs an [N, C, H, W] input")
    try:
        corner, _ = crop_window(ctx.node)
    except ModelLoadError as exc:
        raise ctx.unsupported(str(exc).split("; ", 1)[-1]) from exc
    shape = list(out_shape)
    for local, start in zip((1, 2), corner, strict=True):
        read = np.arange(start, start + shape[local], dtype=np.int64)
        if start < 0 or start + shape[local] > in_shape[local]:
            raise ctx.unsupported(
                f"the window ends past the input ({in_shape[local]} along axis {local + 1})"
            )
        signal = scatter_back(ctx.graph, signal, shape, local, [Tap(read)], in_shape[local])
        shape[local] = in_shape[local]
    return {0: signal}
