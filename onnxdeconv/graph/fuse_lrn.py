"""Fuse PyTorch's decomposed ``LocalResponseNorm`` back into one ONNX ``LRN`` node.

``torch.nn.LocalResponseNorm`` is a composition of tensor ops, and both PyTorch exporters write
it as such::

    x -> Mul(x, x) -> Reshape [N, 1, C, H, W] -> Pad (channels: size//2, (size-1)//2)
      -> AveragePool (kernel [size, 1, 1], count_include_pad) -> Squeeze / Reshape [N, C, H, W]
      -> Mul(alpha) (left out when alpha = 1) -> Add(k) -> Pow(beta) -> Div(x, .)

which is ``x / (k + alpha / size * sum of x^2 over the channel window)^beta``: ONNX's ``LRN`` with
``bias = k`` and the same window when ``size`` is odd. Fused, it gets the LRN rule (the exact
vector-Jacobian product at the forward input) instead of stopping at ``Mul(x, x)``. Run it after
constant folding, which turns the old exporter's computed pads and ``If`` into constants.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.graph.passes import constant_tensors, copy_model, infer_tensor_info, skeleton

logger = logging.getLogger(__name__)

_VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Identity")


def _scalar(name: str, constants: Mapping[str, np.ndarray]) -> float | None:
    if name not in constants:
        return None
    value = np.asarray(constants[name])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _zero_pads(pad: onnx.NodeProto | None, constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """The pads of a constant-mode Pad with fill value 0, or None for any other node."""
    if pad is None or _attr(pad, "mode", "constant") != "constant":
        return None
    if len(pad.input) < 2:
        # Before opset 11, pads and value are attributes.
        if float(_attr(pad, "value", 0.0)) != 0.0:
            return None
        return [int(p) for p in _attr(pad, "pads", [])]
    if pad.input[1] not in constants:
        return None
    if len(pad.input) > 2 and pad.input[2] and _scalar(pad.input[2], constants) != 0:
        return None
    return [int(p) for p in np.asarray(constants[pad.input[1]]).reshape(-1)]


def _other_input(
    node: onnx.NodeProto, constants: Mapping[str, np.ndarray]
) -> tuple[str, float] | None:
    """``(non-constant input, scalar constant)`` of a binary node with one scalar constant."""
    if len(node.input) != 2:
        return None
    for mine, other in ((0, 1), (1, 0)):
        value = _scalar(node.input[other], constants)
        if value is not None and node.input[mine] not in constants:
            return node.input[mine], value
    return None


def _shape_tail(
    name: str, producers: Mapping[str, onnx.NodeProto], constants: Mapping[str, np.ndarray]
) -> list[int] | None:
    """Entries 1.. of a reshape target: a constant, or a Concat whose first part is the batch."""
    if name in constants:
        return [int(v) for v in np.asarray(constants[name]).reshape(-1)[1:]]
    concat = producers.get(name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) < 2:
        return None
    parts = []
    for part in concat.input[1:]:
        if part not in constants:
            return None
        parts += [int(v) for v in np.asarray(constants[part]).reshape(-1)]
    return parts


def _match(
    div: onnx.NodeProto,
    producers: Mapping[str, onnx.NodeProto],
    constants: Mapping[str, np.ndarray],
    channels: Mapping[str, int],
) -> tuple[dict[str, float], list[onnx.NodeProto]] | None:
    """LRN attributes and the chain's nodes when ``div`` ends a decomposed LocalResponseNorm.

    ``channels`` holds the channel count of tensors: the 5-D view must be ``[N, 1, C, ...]``.
    """
    x, denominator = div.input[0], div.input[1]
    chain = [div]

    def producer(name: str, *ops: str) -> onnx.NodeProto | None:
        node = producers.get(name)
        return node if node is not None and node.op_type in ops else None

    power = producer(denominator, "Pow")
    if power is None or (beta := _scalar(power.input[1], constants)) is None:
        return None
    add = producer(power.input[0], "Add")
    found = None if add is None else _other_input(add, constants)
    if add is None or found is None:
        return None
    chain += [power, add]
    scaled, bias = found
    alpha = 1.0
    mul = producer(scaled, "Mul")
    if mul is not None and (found := _other_input(mul, constants)) is not None:
        scaled, alpha = found
        chain.append(mul)
    view = producers.get(scaled)
    for _ in range(3):  # the view back from [N, 1, C, H, W]
        if view is None or view.op_type not in _VIEWS:
            break
        chain.append(view)
        view = producers.get(view.input[0])
    pool = view
    # The pool itself must not pad (checked below), so count_include_pad makes no difference:
    # the channel padding is an explicit Pad of zeros that the average counts.
    if pool is None or pool.op_type != "AveragePool":
        return None
    kernel = [int(k) for k in _attr(pool, "kernel_shape", [])]
    strides = [int(s) for s in _attr(pool, "strides", [1] * len(kernel))]
    pool_pads = [int(p) for p in _attr(pool, "pads", [0] * 2 * len(kernel))]
    if len(kernel) != 3 or kernel[1:] != [1, 1] or any(s != 1 for s in strides) or any(pool_pads):
        return None
    size = kernel[0]
    pad = producer(pool.input[0], "Pad")
    pads = _zero_pads(pad, constants)
    # Old exports add a second Pad of zeros (the pooling's own padding) after the channel one.
    while pad is not None and pads is not None and not any(pads):
        chain.append(pad)
        pad = producer(pad.input[0], "Pad")
        pads = _zero_pads(pad, constants)
    if pad is None or pads is None:
        return None
    # Rank 5 view [N, 1, C, H, W]: the channels are axis 2, padded (size // 2, (size - 1) // 2).
    expected = [0] * 10
    expected[2], expected[7] = size // 2, (size - 1) // 2
    if size % 2 == 0 or pads != expected:
        return None
    chain += [pool, pad]
    lift = producers.get(pad.input[0])
    if lift is None or lift.op_type not in ("Reshape", "Unsqueeze"):
        return None
    if lift.op_type == "Reshape":
        tail = _shape_tail(lift.input[1], producers, constants) if len(lift.input) > 1 else None
        if tail is None or len(tail) != 4 or tail[0] != 1 or tail[1] != channels.get(x):
            return None
    else:
        axes = constants.get(lift.input[1]) if len(lift.input) > 1 else None
        axes = axes if axes is not None else np.asarray(_attr(lift, "axes", []))
        if [int(a) for a in np.asarray(axes).reshape(-1)] != [1]:
            return None
    square = producers.get(lift.input[0])
    if square is None:
        return None
    if square.op_type == "Mul" and list(square.input) == [x, x]:
        pass
    elif not (
        square.op_type == "Pow"
        and square.input[0] == x
        and _scalar(square.input[1], constants) == 2.0
    ):
        return None
    chain += [lift, square]
    return {"size": size, "alpha": alpha, "beta": beta, "bias": bias}, chain


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    info = infer_tensor_info(skeleton(model))
    return {
        name: int(value.shape[1])
        for name, value in info.items()
        if len(value.shape) > 1 and isinstance(value.shape[1], int) and value.shape[1] > 0
    }


def fuse_local_response_norm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every decomposed LocalResponseNorm by an ``LRN`` node; returns a new model.

    The model comes back unchanged (the same object) when it has none. Nodes of the chain that
    nothing else reads are dropped.
    """
    graph = model.graph
    constants = constant_tensors(graph)
    producers = {out: node for node in graph.node for out in node.output if out}
    fused: dict[int, onnx.NodeProto] = {}
    channels: dict[str, int] | None = None
    for node in graph.node:
        if node.op_type != "Div" or len(node.input) != 2:
            continue
        power = producers.get(node.input[1])
        if power is None or power.op_type != "Pow":
            continue
        if channels is None:
            channels = _channel_counts(model)
        found = _match(node, producers, constants, channels)
        if found is None:
            continue
        attrs, _ = found
        fused[id(node)] = helper.make_node(
            "LRN",
            [node.input[0]],
            [node.output[0]],
            name=node.name or f"{node.output[0]}_lrn",
            size=int(attrs["size"]),
            alpha=float(attrs["alpha"]),
            beta=float(attrs["beta"]),
            bias=float(attrs["bias"]),
        )
        logger.info("fused a decomposed LocalResponseNorm into LRN node %s", node.name)
    if not fused:
        return model
    out = copy_model(model)
    nodes = [fused.get(id(node), node) for node in graph.node]
    # Drop what nothing reads any more: the chain, and shape arithmetic read off it.
    outputs = {o.name for o in graph.output}
    while True:
        used = set(outputs)
        for node in nodes:
            used.update(node.input)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    used.update(n for sub in attribute.g.node for n in sub.input)
        kept = [n for n in nodes if any(o in used for o in n.output if o)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
