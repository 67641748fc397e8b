"""Rectifiers: the rule that distinguishes deconvnet, guided backpropagation and the gradient."""

from __future__ import annotations

import onnx

from onnxdeconv.deconv.rules import RuleContext, transpose_rule


@transpose_rule("Relu")
def relu(ctx: RuleContext, signal: str) -> dict[int, str]:
    """Rectify the signal (deconvnet), gate it by the forward input (gradient), or both (guided)."""
    ctx.only_first_input_on_path()
    graph = ctx.graph
    if ctx.mode == "deconvnet":
        return {0: graph.op("Relu", [signal], hint="rectified")}
    forward_input = graph.forward(ctx.node.input[0])
    positive = graph.op("Greater", [forward_input, graph.const(0.0, "zero_f")], hint="active")
    gate = graph.op("Cast", [positive], hint="active_f32", to=onnx.TensorProto.FLOAT)
    passed = graph.op("Relu", [signal], hint="rectified") if ctx.mode == "guided" else signal
    return {0: graph.op("Mul", [passed, gate], hint="gated")}
