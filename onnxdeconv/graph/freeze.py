"""Freeze one forward pass into an affine model, for the dot-product (adjoint) check.

Each nonlinear op on the path is replaced by its first-order expansion at the recorded pass:
``y = f(x0) + J(x0) (x - x0)``. The result is exactly affine in the input, so
``f(x0 + d) - f(x0)`` is the Jacobian at ``x0`` times ``d`` for any ``d``. Ops without a
freezer here are affine already (or have no rule at all).

A freezer is registered per op type with :func:`freezer`. It receives the node and the recorded
values of every tensor :func:`recorded_tensors` asked for, and returns replacement nodes and
initializers that compute the node's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdeconv.graph.passes import SWITCHES_SUFFIX, constant_tensors, copy_model


@dataclass
class Frozen:
    """What replaces one node: nodes in order, and the initializers they read."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def constant(self, value: np.ndarray, name: str) -> str:
        """Add ``value`` (float data as float32, integers as int64) and return its name."""
        array = np.asarray(value)
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


#: ``(node, recorded values) -> replacement``; the values hold the node's inputs and outputs.
Freezer = Callable[[onnx.NodeProto, Mapping[str, np.ndarray]], Frozen]

FREEZERS: dict[str, Freezer] = {}


def freezer(*op_types: str) -> Callable[[Freezer], Freezer]:
    """Register a freezer for each of ``op_types``."""

    def register(function: Freezer) -> Freezer:
        for op_type in op_types:
            if op_type in FREEZERS:
                raise ValueError(f"two freezers for {op_type}")
            FREEZERS[op_type] = function
        return function

    return register


def recorded_tensors(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """Tensors a pass must record to freeze ``graph``: (float tensors, MaxPool outputs)."""
    names: list[str] = []
    pools: list[str] = []
    # Weights are read from the graph itself (see linearize), not recorded by a run.
    constants = set(constant_tensors(graph))
    for node in graph.node:
        if node.op_type == "MaxPool":
            pools.append(node.output[0])
        elif node.op_type in FREEZERS:
            names += [
                n
                for n in [*node.input, *node.output]
                if n and n not in names and n not in constants
            ]
    return names, pools


def elementwise_affine(
    node: onnx.NodeProto, slope: np.ndarray, values: Mapping[str, np.ndarray]
) -> Frozen:
    """Replace ``y = f(x)`` by ``y = slope * x + (f(x0) - slope * x0)``, all elementwise.

    Args:
        node: The node; its input 0 is ``x`` and output 0 is ``y``.
        slope: ``f'(x0)``, the derivative at the recorded input.
        values: The recorded pass.
    """
    x0 = np.asarray(values[node.input[0]], np.float64)
    y0 = np.asarray(values[node.output[0]], np.float64)
    slope = np.broadcast_to(np.asarray(slope, np.float64), x0.shape)
    frozen = Frozen()
    stem = f"{node.output[0]}__frozen"
    scaled = f"{stem}_scaled"
    frozen.nodes = [
        helper.make_node("Mul", [node.input[0], frozen.constant(slope, f"{stem}_slope")], [scaled]),
        helper.make_node(
            "Add",
            [scaled, frozen.constant(y0 - slope * x0, f"{stem}_offset")],
            [node.output[0]],
            name=node.name,
        ),
    ]
    return frozen


@freezer("Relu")
def _relu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Frozen:
    return elementwise_affine(node, np.asarray(values[node.input[0]]) > 0, values)


def _freeze_max_pool(node: onnx.NodeProto, switches: np.ndarray) -> Frozen:
    # A gather at the recorded switches: the pool with its choice of maxima fixed.
    frozen = Frozen()
    stem = f"{node.output[0]}__frozen"
    indices = np.asarray(switches, np.int64)
    frozen.nodes = [
        helper.make_node(
            "Reshape",
            [node.input[0], frozen.constant(np.array([1, -1]), f"{stem}_flat")],
            [f"{stem}_in"],
        ),
        helper.make_node(
            "GatherElements",
            [f"{stem}_in", frozen.constant(indices.reshape(1, -1), f"{stem}_switches")],
            [f"{stem}_picked"],
            axis=1,
        ),
        helper.make_node(
            "Reshape",
            [f"{stem}_picked", frozen.constant(np.array(indices.shape), f"{stem}_shape")],
            [node.output[0]],
            name=node.name,
        ),
    ]
    return frozen


def linearize(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """Freeze the nonlinear choices of a forward pass; returns a new, affine model (batch 1).

    Args:
        model: Forward model with batch 1 (not mutated).
        values: The recorded pass: every tensor :func:`recorded_tensors` lists, and each
            MaxPool's switches under ``<output>__switches``.
    """
    out = copy_model(model)
    # A freezer sees the recorded tensors and the graph's constants (weights, slopes) alike.
    constants = constant_tensors(model.graph)
    known: dict[str, np.ndarray] = {
        name: constants[name]
        for node in model.graph.node
        if node.op_type in FREEZERS
        for name in node.input
        if name in constants
    }
    known.update(values)
    nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        frozen: Frozen | None = None
        if node.op_type == "MaxPool" and node.output[0] + SWITCHES_SUFFIX in values:
            frozen = _freeze_max_pool(node, values[node.output[0] + SWITCHES_SUFFIX])
        elif node.op_type in FREEZERS and all(
            name in known for name in [*node.input, *node.output] if name
        ):
            frozen = FREEZERS[node.op_type](node, known)
        if frozen is None:
            nodes.append(node)
            continue
        nodes += frozen.nodes
        out.graph.initializer.extend(frozen.initializers)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


# The freezer modules register themselves on import.
from onnxdeconv.graph import (  # noqa: E402
    freeze_activation,  # noqa: F401  (activations, Mul, Div, Where)
    freeze_norm,  # noqa: F401  (registers LRN, InstanceNormalization)
)
