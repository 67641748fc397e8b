"""Affine layers with constant weights: Gemm, MatMul and inference-mode BatchNormalization."""

from __future__ import annotations

import numpy as np

from onnxdeconv.deconv.rules import RuleContext, transpose_rule


@transpose_rule("Gemm")
def gemm(ctx: RuleContext, signal: str) -> dict[int, str]:
    """Multiply by the transposed weight: ``d/dA (alpha * A @ B') = alpha * g @ B'^T``."""
    ctx.only_first_input_on_path()
    if int(ctx.attr("transA", 0)):
        raise ctx.unsupported("transA=1 would mix the batch; only transA=0 is supported")
    weight = ctx.constant(1, "weight B")
    graph = ctx.graph
    tied = graph.const(weight.astype(np.float32), ctx.node.input[1])
    projected = graph.op(
        "Gemm",
        [signal, tied],
        hint="gemm_t",
        alpha=float(ctx.attr("alpha", 1.0)),
        transB=0 if int(ctx.attr("transB", 0)) else 1,
    )
    return {0: projected}


@transpose_rule("MatMul")
def matmul(ctx: RuleContext, signal: str) -> dict[int, str]:
    """Multiply by the transposed constant right operand."""
    ctx.only_first_input_on_path()
    weight = ctx.constant(1, "right operand")
    if weight.ndim != 2:
        raise ctx.unsupported("only a 2-D constant right operand is supported")
    graph = ctx.graph
    transposed = graph.const(weight.T.astype(np.float32), f"{ctx.node.input[1]}_T")
    return {0: graph.op("MatMul", [signal, transposed], hint="matmul_t")}


@transpose_rule("BatchNormalization")
def batch_normalization(ctx: RuleContext, signal: str) -> dict[int, str]:
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
