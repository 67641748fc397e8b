"""Linearise one forward pass into an affine model, for ``check``'s dot-product (adjoint) test.

Each nonlinear op on the path is replaced by its first-order expansion at the recorded pass:
``y = f(x0) + J(x0) (x - x0)``. The result is exactly affine in the input, so
``f(x0 + d) - f(x0)`` is the Jacobian at ``x0`` times ``d`` for any ``d``. Ops without a
lineariser here are affine already (or have no rule at all); MaxPool is linearised at its
recorded switches.

A lineariser is registered per op type with :func:`lineariser`, in the modules of this package
(:mod:`~onnxdeconv.check.linearise.activation`, :mod:`~onnxdeconv.check.linearise.norm`,
:mod:`~onnxdeconv.check.linearise.quantize`). It receives the node and the recorded values of
every tensor :func:`recorded_tensors` asked for, and returns replacement nodes and initializers
that compute the node's outputs. The linearised model keeps the model's opset, which may be as
old as 8 (see :func:`onnxdeconv.load_model`), so replacements use only ops that exist there (Mul,
Add, Sub, MatMul, Reshape, Gather).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdeconv.deconv.quantized import mark_rectifiers
from onnxdeconv.graph.passes import SWITCHES_SUFFIX, constant_tensors, copy_model, node_attribute
from onnxdeconv.registry import OpRegistry


@dataclass
class Linearised:
    """What replaces one node: nodes in order, and the initializers they read."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def constant(self, value: np.ndarray, name: str) -> str:
        """Add ``value`` (float data as float32, integers as int64) and return its name."""
        array = np.asarray(value)
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def output_sum(
        self, node: onnx.NodeProto, partial: str, value: np.ndarray, name: str
    ) -> onnx.NodeProto:
        """The last node: ``partial + value`` (a constant) into the node's output, by its name."""
        return helper.make_node(
            "Add", [partial, self.constant(value, name)], [node.output[0]], name=node.name
        )


#: ``(node, recorded values) -> replacement``; the values hold the node's inputs and outputs.
Lineariser = Callable[[onnx.NodeProto, Mapping[str, np.ndarray]], Linearised]

#: Lineariser of each nonlinear op type; the modules of this package register theirs.
LINEARISERS: OpRegistry[Lineariser] = OpRegistry("lineariser", __name__)
#: Decorator: ``@lineariser("Relu")`` registers a lineariser (twice for one op raises).
lineariser = LINEARISERS.register


def float_attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    """Attribute ``name`` of ``node`` as a float, or ``default``."""
    return float(node_attribute(node, name, default))


def recorded_tensors(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """Tensors a pass must record to linearise ``graph``: (float tensors, MaxPool outputs)."""
    names: list[str] = []
    pools: list[str] = []
    # Weights are read from the graph itself (see linearise), not recorded by a run.
    constants = set(constant_tensors(graph))
    for node in graph.node:
        if node.op_type == "MaxPool":
            pools.append(node.output[0])
        elif node.op_type in LINEARISERS:
            names += [
                n
                for n in [*node.input, *node.output]
                if n and n not in names and n not in constants
            ]
    return names, pools


def elementwise_affine(
    node: onnx.NodeProto, slope: np.ndarray, values: Mapping[str, np.ndarray]
) -> Linearised:
    """Replace ``y = f(x)`` by ``y = slope * x + (f(x0) - slope * x0)``, all elementwise.

    Args:
        node: The node; its input 0 is ``x`` and output 0 is ``y``.
        slope: ``f'(x0)``, the derivative at the recorded input.
        values: The recorded pass.
    """
    x0 = np.asarray(values[node.input[0]], np.float64)
    y0 = np.asarray(values[node.output[0]], np.float64)
    slope = np.broadcast_to(np.asarray(slope, np.float64), x0.shape)
    linearised = Linearised()
    stem = f"{node.output[0]}__frozen"
    scaled = f"{stem}_scaled"
    linearised.nodes = [
        helper.make_node(
            "Mul", [node.input[0], linearised.constant(slope, f"{stem}_slope")], [scaled]
        ),
        linearised.output_sum(node, scaled, y0 - slope * x0, f"{stem}_offset"),
    ]
    return linearised


@lineariser("Relu")
def _relu(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Linearised:
    return elementwise_affine(node, np.asarray(values[node.input[0]]) > 0, values)


def _linearise_max_pool(node: onnx.NodeProto, switches: np.ndarray) -> Linearised:
    # A gather at the recorded switches: the pool with its choice of maxima fixed. The switches
    # index the flattened input, so a Gather on axis 0 of the flat input (opset 1) does it and
    # the graph stays valid at the model's own opset (GatherElements needs opset 11).
    linearised = Linearised()
    stem = f"{node.output[0]}__frozen"
    indices = np.asarray(switches, np.int64)
    linearised.nodes = [
        helper.make_node(
            "Reshape",
            [node.input[0], linearised.constant(np.array([-1]), f"{stem}_flat")],
            [f"{stem}_in"],
        ),
        helper.make_node(
            "Gather",
            [f"{stem}_in", linearised.constant(indices, f"{stem}_switches")],
            [node.output[0]],
            name=node.name,
            axis=0,
        ),
    ]
    return linearised


def linearise(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """Fix the nonlinear choices of a forward pass; returns a new, affine model (batch 1).

    Args:
        model: Forward model with batch 1 (not mutated).
        values: The recorded pass: every tensor :func:`recorded_tensors` lists, and each
            MaxPool's switches under ``<output>__switches``.
    """
    out = copy_model(model)
    # A lineariser sees the recorded tensors and the graph's constants (weights, slopes) alike.
    constants = constant_tensors(model.graph)
    known: dict[str, np.ndarray] = {
        name: constants[name]
        for node in model.graph.node
        if node.op_type in LINEARISERS
        for name in node.input
        if name in constants
    }
    known.update(values)
    nodes: list[onnx.NodeProto] = []
    # Quantizers that absorbed a ReLU are marked as the transpose rules see them.
    marked = mark_rectifiers(out.graph, constants)
    for node, seen in zip(out.graph.node, marked, strict=True):
        linearised: Linearised | None = None
        if node.op_type == "MaxPool" and node.output[0] + SWITCHES_SUFFIX in values:
            linearised = _linearise_max_pool(node, values[node.output[0] + SWITCHES_SUFFIX])
        elif (
            node.op_type in LINEARISERS
            and all(name in known for name in [*node.input, *node.output] if name)
            # A node of constants alone (a weight's DequantizeLinear) is not on the path.
            and not all(name in constants for name in node.input if name)
        ):
            linearised = LINEARISERS[node.op_type](seen, known)
        if linearised is None:
            nodes.append(node)
            continue
        nodes += linearised.nodes
        out.graph.initializer.extend(linearised.initializers)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
