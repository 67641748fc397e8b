"""Affine layers with constant weights: Gemm, MatMul and inference-mode BatchNormalization."""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule


@transpose_rule("Gemm")
def gemm(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by the transposed weight: ``d/dA (alpha * A @ B') = alpha * g @ B'^T``."""
    ctx.only_first_input_on_path()
    if int(ctx.attr("transA", 0)):
        raise ctx.unsupported("transA=1 would mix the batch; only transA=0 is supported")
    weight = ctx.constant(1, "weight B")
    graph = ctx.graph
    tied = ctx.tied_weight(weight)
    projected = graph.op(
        "Gemm",
        [signal, tied],
        hint="gemm_t",
        alpha=float(ctx.attr("alpha", 1.0)),
        transB=0 if int(ctx.attr("transB", 0)) else 1,
    )
    return {0: projected}


def _constant_matrix(ctx: TransposeContext, index: int, what: str, other_rank: int) -> np.ndarray:
    """A constant operand as a 2-D matrix; leading 1s go when they only broadcast."""
    weight = ctx.constant(index, what)
    while weight.ndim > 2 and weight.shape[0] == 1 and weight.ndim <= other_rank:
        weight = weight[0]
    if weight.ndim != 2:
        raise ctx.unsupported(f"only a 2-D constant {what} is supported")
    return weight


@transpose_rule("MatMul")
def matmul(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Multiply by the transposed constant operand, on whichever side it stands.

    ``y = x W`` sends back ``s W^T``; ``y = W x`` (x with at least two per-sample axes, so that
    the product does not contract the batch) sends back ``W^T s``.
    """
    graph = ctx.graph
    ranks = [len(ctx.info[name].shape) for name in ctx.node.input[:2]]
    if ctx.on_path[0] and not ctx.on_path[1]:
        weight = _constant_matrix(ctx, 1, "right operand", ranks[0])
        if ranks[0] == 2:
            # [K, n] times W^T: Gemm reads the forward weight as it is (no transposed copy).
            tied = ctx.graph.const(weight.astype(np.float32, copy=False), ctx.node.input[1])
            return {0: graph.op("Gemm", [signal, tied], hint="matmul_t", transB=1)}
        transposed = graph.const(
            np.ascontiguousarray(weight.T, np.float32), f"{ctx.node.input[1]}_T"
        )
        return {0: graph.op("MatMul", [signal, transposed], hint="matmul_t")}
    if ctx.on_path[1] and not ctx.on_path[0]:
        if ranks[1] < 3:
            raise ctx.unsupported(
                "a constant left operand times [N, k] would contract the batch axis"
            )
        weight = _constant_matrix(ctx, 0, "left operand", ranks[1])
        transposed = graph.const(
            np.ascontiguousarray(weight.T, np.float32), f"{ctx.node.input[0]}_T"
        )
        return {1: graph.op("MatMul", [transposed, signal], hint="matmul_t")}
    raise ctx.unsupported("exactly one operand may depend on the image; the other is a constant")


@transpose_rule("BatchNormalization")
def batch_normalization(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Scale by ``gamma / sqrt(var + eps)`` per channel, the slope of inference-mode BN."""
    ctx.only_first_input_on_path()
    if int(ctx.attr("training_mode", 0)) or len([o for o in ctx.node.output if o]) > 1:
        raise ctx.unsupported("only inference mode (training_mode=0, one output) is supported")
    gamma = ctx.constant(1, "scale").astype(np.float64)
    variance = ctx.constant(4, "variance").astype(np.float64)
    slope = gamma / np.sqrt(variance + float(ctx.attr("epsilon", 1e-5)))
    trailing = len(ctx.input_shape()) - 1
    graph = ctx.graph
    factor = graph.const(slope.reshape(-1, *([1] * trailing)), "bn_slope")
    return {0: graph.op("Mul", [signal, factor], hint="bn_t")}
