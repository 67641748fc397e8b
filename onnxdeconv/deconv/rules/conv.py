"""Conv: its transpose is ConvTranspose with the same (tied) weights and no bias."""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.rules import RuleContext, transpose_rule
from onnxdeconv.deconv.rules.spatial import read_window, transpose_window


@transpose_rule("Conv")
def conv(ctx: RuleContext, signal: str) -> dict[int, str]:
    """Transpose a convolution of any stride, padding, dilation and group."""
    ctx.only_first_input_on_path()
    weight = ctx.constant(1, "weight")
    in_shape = ctx.input_shape()
    window = read_window(ctx, weight.shape[2:], in_shape[1:])
    tied = ctx.graph.const(weight.astype(np.float32), ctx.node.input[1])
    projected = transpose_window(
        ctx.graph,
        signal,
        tied,
        window,
        in_shape,
        ctx.output_shape()[1:],
        int(ctx.attr("group", 1)),
    )
    return {0: projected}
