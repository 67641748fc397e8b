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
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.graph.passes import (
    constant_tensors,
    copy_model,
    infer_tensor_info,
    names_read,
    node_attribute,
    skeleton,
)

logger = logging.getLogger(__name__)

_VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Identity")


def _scalar(name: str, constants: Mapping[str, np.ndarray]) -> float | None:
    if name not in constants:
        return None
    value = np.asarray(constants[name])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _zero_pads(pad: onnx.NodeProto | None, constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """The pads of a constant-mode Pad with fill value 0, or None for any other node."""
    if pad is None or node_attribute(pad, "mode", "constant") != "constant":
        return None
    if len(pad.input) < 2:
        # Before opset 11, pads and value are attributes.
        if float(node_attribute(pad, "value", 0.0)) != 0.0:
            return None
        return [int(p) for p in node_attribute(pad, "pads", [])]
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


@dataclass(frozen=True)
class _Lookup:
    """What matching reads of the graph: producers, constants and channel counts."""

    #: The node that computes each tensor.
    producers: Mapping[str, onnx.NodeProto]
    constants: Mapping[str, np.ndarray]
    #: Channel count of the tensors: the 5-D view must be ``[N, 1, C, ...]``.
    channels: Mapping[str, int]

    def producer(self, name: str, *ops: str) -> onnx.NodeProto | None:
        """The node that computes ``name`` if it is one of ``ops``."""
        node = self.producers.get(name)
        return node if node is not None and node.op_type in ops else None


@dataclass(frozen=True)
class _LrnParameters:
    """The attributes of the ``LRN`` node a matched chain becomes."""

    size: int
    alpha: float
    beta: float
    bias: float


@dataclass(frozen=True)
class _Denominator:
    """``(bias + alpha * window_mean) ** beta``, the divisor of a decomposed LRN."""

    window_mean: str
    alpha: float
    beta: float
    bias: float


def _match(div: onnx.NodeProto, lookup: _Lookup) -> _LrnParameters | None:
    """The LRN attributes when ``div`` ends a decomposed LocalResponseNorm of its input 0.

    Walks the chain back from the Div to the square of that input, one stage at a time.
    """
    x = div.input[0]
    denominator = _denominator(div.input[1], lookup)
    if denominator is None:
        return None
    pool = _pool_under_views(denominator.window_mean, lookup.producers)
    size = None if pool is None else _channel_window(pool)
    if pool is None or size is None:
        return None
    pad = _channel_pad(pool.input[0], size, lookup)
    lift = None if pad is None else lookup.producers.get(pad.input[0])
    if lift is None or not _lifts_channels(lift, x, lookup):
        return None
    square = lookup.producers.get(lift.input[0])
    if square is None or not _squares(square, x, lookup.constants):
        return None
    return _LrnParameters(size, denominator.alpha, denominator.beta, denominator.bias)


def _denominator(name: str, lookup: _Lookup) -> _Denominator | None:
    """``Pow(Add(Mul(mean, alpha), bias), beta)`` computing ``name``; the Mul may be left out."""
    power = lookup.producer(name, "Pow")
    if power is None or (beta := _scalar(power.input[1], lookup.constants)) is None:
        return None
    add = lookup.producer(power.input[0], "Add")
    biased = None if add is None else _other_input(add, lookup.constants)
    if biased is None:
        return None
    mean, bias = biased
    alpha = 1.0
    mul = lookup.producer(mean, "Mul")
    if mul is not None and (scaled := _other_input(mul, lookup.constants)) is not None:
        mean, alpha = scaled
    return _Denominator(mean, alpha, beta, bias)


def _pool_under_views(name: str, producers: Mapping[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The AveragePool that computes ``name`` through the view back from ``[N, 1, C, H, W]``."""
    node = producers.get(name)
    for _ in range(3):
        if node is None or node.op_type not in _VIEWS:
            break
        node = producers.get(node.input[0])
    return node if node is not None and node.op_type == "AveragePool" else None


def _channel_window(pool: onnx.NodeProto) -> int | None:
    """The window size of an AveragePool that averages over channels only, without padding.

    The pool itself must not pad, so count_include_pad makes no difference: the channel padding
    is an explicit Pad of zeros that the average counts.
    """
    kernel = [int(k) for k in node_attribute(pool, "kernel_shape", [])]
    strides = [int(s) for s in node_attribute(pool, "strides", [1] * len(kernel))]
    pool_pads = [int(p) for p in node_attribute(pool, "pads", [0] * 2 * len(kernel))]
    if len(kernel) != 3 or kernel[1:] != [1, 1] or any(s != 1 for s in strides) or any(pool_pads):
        return None
    return kernel[0]


def _channel_pad(name: str, size: int, lookup: _Lookup) -> onnx.NodeProto | None:
    """The Pad of zeros that computes ``name`` (past zero-width ones) and pads as LRN does.

    Old exports add a second Pad of zeros (the pooling's own padding) after the channel one.
    """
    pad = lookup.producer(name, "Pad")
    pads = _zero_pads(pad, lookup.constants)
    while pad is not None and pads is not None and not any(pads):
        pad = lookup.producer(pad.input[0], "Pad")
        pads = _zero_pads(pad, lookup.constants)
    if pad is None or pads is None:
        return None
    # Rank 5 view [N, 1, C, H, W]: the channels are axis 2, padded (size // 2, (size - 1) // 2).
    # ONNX's LRN has that window only when the size is odd.
    expected = [0] * 10
    expected[2], expected[7] = size // 2, (size - 1) // 2
    return pad if size % 2 == 1 and pads == expected else None


def _lifts_channels(lift: onnx.NodeProto, x: str, lookup: _Lookup) -> bool:
    """Whether ``lift`` views ``[N, C, H, W]`` as ``[N, 1, C, H, W]`` (``C`` the channels of x)."""
    if lift.op_type == "Reshape":
        if len(lift.input) < 2:
            return False
        tail = _shape_tail(lift.input[1], lookup.producers, lookup.constants)
        return (
            tail is not None
            and len(tail) == 4
            and tail[0] == 1
            and tail[1] == lookup.channels.get(x)
        )
    if lift.op_type == "Unsqueeze":
        axes = lookup.constants.get(lift.input[1]) if len(lift.input) > 1 else None
        axes = axes if axes is not None else np.asarray(node_attribute(lift, "axes", []))
        return [int(a) for a in np.asarray(axes).reshape(-1)] == [1]
    return False


def _squares(square: onnx.NodeProto, x: str, constants: Mapping[str, np.ndarray]) -> bool:
    """Whether ``square`` computes ``x * x`` or ``x ** 2``."""
    if square.op_type == "Mul":
        return list(square.input) == [x, x]
    return (
        square.op_type == "Pow"
        and square.input[0] == x
        and _scalar(square.input[1], constants) == 2.0
    )


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
    fused = _lrn_nodes(model)
    if not fused:
        return model
    out = copy_model(model)
    nodes = [fused.get(index, node) for index, node in enumerate(model.graph.node)]
    # Drop what nothing reads any more: the chain, and shape arithmetic read off it.
    nodes = _drop_unread(nodes, {o.name for o in model.graph.output})
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _lrn_nodes(model: onnx.ModelProto) -> dict[int, onnx.NodeProto]:
    """An ``LRN`` node for each Div (by node index) that ends a decomposed LocalResponseNorm."""
    nodes = model.graph.node
    producers = {out: node for node in nodes for out in node.output if out}
    lookup: _Lookup | None = None
    fused: dict[int, onnx.NodeProto] = {}
    for index, div in enumerate(nodes):
        if div.op_type != "Div" or len(div.input) != 2:
            continue
        power = producers.get(div.input[1])
        if power is None or power.op_type != "Pow":
            continue
        # Shape inference only for models that may hold the chain.
        if lookup is None:
            lookup = _Lookup(producers, constant_tensors(model.graph), _channel_counts(model))
        parameters = _match(div, lookup)
        if parameters is None:
            continue
        fused[index] = helper.make_node(
            "LRN",
            [div.input[0]],
            [div.output[0]],
            name=div.name or f"{div.output[0]}_lrn",
            size=parameters.size,
            alpha=parameters.alpha,
            beta=parameters.beta,
            bias=parameters.bias,
        )
        logger.info("fused a decomposed LocalResponseNorm into LRN node %s", div.name)
    return fused


def _drop_unread(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those whose outputs nothing reads, repeated until none is left."""
    while True:
        read = names_read(nodes) | outputs
        kept = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept
