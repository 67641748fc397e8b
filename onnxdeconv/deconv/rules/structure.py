"""Ops that move or copy values without arithmetic: Concat, reshapes and identities."""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.deconv.rules.shape_ops import only_data_input_on_path


@transpose_rule("Identity", "Dropout")
def identity(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Pass the signal through (Dropout is the identity at inference)."""
    ctx.only_first_input_on_path()
    if ctx.node.op_type == "Dropout" and len(ctx.node.input) > 2 and ctx.node.input[2]:
        training = ctx.optional_constant(2)
        if training is None or bool(training):
            raise ctx.unsupported(
                "only inference mode is supported: the training_mode input must be a constant false"
            )
    return {0: signal}


@transpose_rule("Concat")
def concat(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Split the signal back into the parts that were concatenated."""
    rank = len(ctx.output_shape()) + 1
    axis = int(ctx.attr("axis"))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise ctx.unsupported("concatenation along the batch axis is not supported")
    sizes = [ctx.input_shape(i)[axis - 1] for i in range(len(ctx.node.input))]
    graph = ctx.graph
    parts = graph.op_multi(
        "Split", [signal, graph.const(sizes, "split_sizes")], len(sizes), hint="unconcat", axis=axis
    )
    return {i: part for i, part in enumerate(parts) if ctx.on_path[i]}


@transpose_rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Give the signal back the input's shape, provided the batch axis was left alone."""
    only_data_input_on_path(ctx)
    in_info, out_info = ctx.info[ctx.node.input[0]], ctx.info[ctx.node.output[0]]
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    keeps_batch = in_info.shape[0] == out_info.shape[0] and (
        int(np.prod(in_shape)) == int(np.prod(out_shape))
    )
    if not keeps_batch:
        raise ctx.unsupported(
            f"it maps {list(in_info.shape)} to {list(out_info.shape)}; only reshapes that keep "
            "the batch axis first are supported"
        )
    graph = ctx.graph
    return {0: graph.op("Reshape", [signal, graph.const([-1, *in_shape], "reshape_back")])}
