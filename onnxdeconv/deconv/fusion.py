"""Composite activations and multiplicative gates, found on the projection path before the walk.

Exporters write some activations as small subgraphs of elementwise ops: SiLU as
``x * sigmoid(x)``, GELU as ``x * 0.5 * (1 + erf(x / sqrt 2))``, old HardSwish as
``x * clip(x + 3, 0, 6) / 6``. Passed back op by op, the deconvnet rule would rectify the signal
at the Sigmoid or the Clip inside and treat the rest as a gate, which is not what an activation
``y = f(x)`` does. :func:`rewrite_path` replaces each such subgraph by ONE node of the activation
it computes (its input ``x``, its output ``y``, the name of its last node), whose rule in
:mod:`onnxdeconv.deconv.rules.activation` passes ``relu(signal)`` under ``deconvnet`` and the exact
derivative under ``gradient``. A subgraph is fused only when its intermediate tensors are read by
nothing else on the path; otherwise its ops go through their own rules, which are exact under
``gradient`` too.

What is recognised (constants are scalars, commutative operands in either order, and a product
may be spread over several Mul nodes and Divs by a constant):

=================  ===========================================================  ===============
fused op           subgraph                                                     exported by
=================  ===========================================================  ===============
Swish(alpha)       ``x * sigmoid(alpha * x)``                                   ``nn.SiLU``, tf
HardSwish          ``x * hardsigmoid(x)`` (alpha 1/6, beta 1/2),                ``nn.Hardswish``
                   ``x * clip(x + 3, 0, 6) / 6``                                (opset < 14)
HardSigmoid        ``clip(x + 3, 0, 6) / 6``                                    old exports
Gelu(none)         ``x * 0.5 * (1 + erf(x / sqrt 2))``                          ``nn.GELU``
Gelu(tanh)         ``x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``      ``nn.GELU``
Mish               ``x * tanh(softplus(x))``                                    ``nn.Mish``
Softplus(beta,     ``where(beta x > threshold, x, softplus(beta x) / beta)``    ``nn.Softplus``
threshold)                                                                      (dynamo)
Softsign           ``x / (1 + |x|)``                                            ``nn.Softsign``
=================  ===========================================================  ===============

:func:`mark_gates` then marks, on each Mul of two path tensors, which factor is the gate (see
:func:`onnxdeconv.deconv.rules.elementwise.mul`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxdeconv.deconv.quantized import mark_quantized
from onnxdeconv.graph.passes import TensorInfo

logger = logging.getLogger(__name__)

#: Attribute that :func:`mark_gates` sets on a Mul of two path tensors: the index of the gate.
GATE_ATTRIBUTE = "onnxdeconv_gate"

#: Ops whose output makes a factor a gate: bounded, sigmoid-like squashing functions.
GATE_OPS = ("Sigmoid", "HardSigmoid", "Clip")
#: Ops that a gate passes through unchanged in value (only moved or cast).
_SHAPE_OPS = (
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Transpose",
    "Expand",
    "Cast",
)
_RELATIVE_TOLERANCE = 1e-5


def _close(value: float, wanted: float) -> bool:
    return math.isclose(value, wanted, rel_tol=_RELATIVE_TOLERANCE, abs_tol=1e-12)


@dataclass
class _Match:
    """A recognised activation: its op, attributes and the nodes it replaces."""

    op_type: str
    source: str
    attributes: dict[str, Any] = field(default_factory=dict)
    nodes: list[onnx.NodeProto] = field(default_factory=list)


class _Finder:
    """Pattern helpers over the path: producers, consumer counts and scalar constants."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        nodes: Sequence[onnx.NodeProto],
        reached: set[str],
        constants: Mapping[str, np.ndarray],
    ) -> None:
        self.producers = {out: node for node in graph.node for out in node.output if out}
        # Only consumers on the path matter: no signal comes back from the others.
        self.consumers = Counter(name for node in nodes for name in node.input)
        self.reached = reached
        self.constants = constants

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant, or None."""
        if name in self.reached or name not in self.constants:
            return None
        value = np.asarray(self.constants[name])
        if value.size != 1 or value.dtype.kind != "f":
            return None
        return float(value.ravel()[0])

    def inner(self, name: str, *op_types: str) -> onnx.NodeProto | None:
        """The producer of ``name`` if it has one of ``op_types`` and ``name`` is read once."""
        node = self.producers.get(name)
        if node is None or node.op_type not in op_types or name not in self.reached:
            return None
        return node if self.consumers[name] == 1 else None

    def product(self, name: str, region: list[onnx.NodeProto]) -> tuple[float, list[str]]:
        """Write ``name`` as ``coefficient * prod(factors)``.

        Looks through inner Mul nodes, Div by a scalar and Pow by 2 or 3; the nodes looked through
        are added to ``region``.
        """
        value = self.scalar(name)
        if value is not None:
            return value, []
        node = self.inner(name, "Mul", "Div", "Pow")
        if node is not None and node.op_type == "Mul":
            region.append(node)
            left, left_factors = self.product(node.input[0], region)
            right, right_factors = self.product(node.input[1], region)
            return left * right, left_factors + right_factors
        if node is not None and node.op_type == "Div":
            divisor = self.scalar(node.input[1])
            if divisor:
                region.append(node)
                coefficient, factors = self.product(node.input[0], region)
                return coefficient / divisor, factors
        if node is not None and node.op_type == "Pow":
            exponent = self.scalar(node.input[1])
            if exponent in (2.0, 3.0):
                region.append(node)
                coefficient, factors = self.product(node.input[0], region)
                power = int(exponent or 0)
                return coefficient**power, factors * power
        return 1.0, [name]

    def root_product(self, node: onnx.NodeProto) -> tuple[float, list[str], list[onnx.NodeProto]]:
        """:meth:`product` of the output of ``node``, which may be read any number of times."""
        region = [node]
        if node.op_type == "Mul":
            left, left_factors = self.product(node.input[0], region)
            right, right_factors = self.product(node.input[1], region)
            return left * right, left_factors + right_factors, region
        divisor = self.scalar(node.input[1]) if node.op_type == "Div" else None
        if divisor:
            coefficient, factors = self.product(node.input[0], region)
            return coefficient / divisor, factors, region
        return 1.0, [], region

    def scaled(self, name: str, source: str, region: list[onnx.NodeProto]) -> float | None:
        """The ``c`` for which ``name == c * source``, or None."""
        if name == source:
            return 1.0
        coefficient, factors = self.product(name, region)
        return coefficient if factors == [source] else None

    def plus_one(self, name: str, op_type: str, region: list[onnx.NodeProto]) -> str | None:
        """For ``name == 1 + op_type(u)``: the input ``u`` (both nodes go to ``region``)."""
        add = self.inner(name, "Add")
        if add is None:
            return None
        for a, b in (add.input, reversed(add.input)):
            one = self.scalar(a)
            inner = self.inner(b, op_type)
            if one is not None and _close(one, 1.0) and inner is not None:
                region += [add, inner]
                return str(inner.input[0])
        return None

    def clip_0_6_of_x_plus_3(self, name: str, x: str, region: list[onnx.NodeProto]) -> bool:
        """Whether ``name == clip(x + 3, 0, 6)``."""
        clip = self.inner(name, "Clip")
        if clip is None:
            return False
        if len(clip.input) >= 3:
            low, high = self.scalar(clip.input[1]), self.scalar(clip.input[2])
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in clip.attribute}
            low, high = attrs.get("min"), attrs.get("max")
        if low is None or high is None or not (_close(low, 0.0) and _close(high, 6.0)):
            return False
        add = self.inner(clip.input[0], "Add")
        if add is None:
            return False
        for a, b in (add.input, reversed(add.input)):
            three = self.scalar(b)
            if a == x and three is not None and _close(three, 3.0):
                region += [clip, add]
                return True
        return False


def _gated_activation(finder: _Finder, x: str, g: str) -> tuple[_Match, float] | None:
    """Recognise ``x * g`` with ``g`` a function of ``x``.

    Returns:
        The match, and the coefficient the whole product must have, or None.
    """
    region: list[onnx.NodeProto] = []
    sigmoid = finder.inner(g, "Sigmoid")
    if sigmoid is not None:
        alpha = finder.scaled(sigmoid.input[0], x, region)
        if alpha is not None and alpha > 0:
            return _Match("Swish", x, {"alpha": alpha}, [sigmoid, *region]), 1.0
    region = []
    hard = finder.inner(g, "HardSigmoid")
    if hard is not None and hard.input[0] == x:
        attrs = {a.name: helper.get_attribute_value(a) for a in hard.attribute}
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        if _close(alpha, 1 / 6) and _close(beta, 0.5):
            return _Match("HardSwish", x, {}, [hard]), 1.0
    region = []
    if finder.clip_0_6_of_x_plus_3(g, x, region):
        return _Match("HardSwish", x, {}, region), 1 / 6
    region = []
    tanh = finder.inner(g, "Tanh")
    if tanh is not None:
        softplus = finder.inner(tanh.input[0], "Softplus")
        if softplus is not None and softplus.input[0] == x:
            return _Match("Mish", x, {}, [tanh, softplus]), 1.0
    region = []
    erf_input = finder.plus_one(g, "Erf", region)
    if erf_input is not None:
        scale = finder.scaled(erf_input, x, region)
        if scale is not None and _close(scale, 1 / math.sqrt(2)):
            return _Match("Gelu", x, {"approximate": "none"}, region), 0.5
    region = []
    tanh_input = finder.plus_one(g, "Tanh", region)
    if tanh_input is not None and _gelu_tanh_argument(finder, tanh_input, x, region):
        return _Match("Gelu", x, {"approximate": "tanh"}, region), 0.5
    return None


def _gelu_tanh_argument(finder: _Finder, name: str, x: str, region: list[onnx.NodeProto]) -> bool:
    """Whether ``name == sqrt(2/pi) * (x + 0.044715 x^3)``."""
    scale, factors = finder.product(name, region)
    if len(factors) != 1 or not _close(scale, math.sqrt(2 / math.pi)):
        return False
    add = finder.inner(factors[0], "Add")
    if add is None:
        return False
    for a, b in (add.input, reversed(add.input)):
        if a != x:
            continue
        kappa, cube = finder.product(b, region)
        if cube == [x, x, x] and _close(kappa, 0.044715):
            region.append(add)
            return True
    return False


def _match_product(finder: _Finder, node: onnx.NodeProto) -> _Match | None:
    coefficient, factors, region = finder.root_product(node)
    if len(factors) == 1:
        hard: list[onnx.NodeProto] = []
        x = _clip_source(finder, factors[0], hard)
        if x is not None and _close(coefficient, 1 / 6):
            return _Match("HardSigmoid", x, {"alpha": 1 / 6, "beta": 0.5}, region + hard)
        return None
    if len(factors) != 2:
        return None
    keys = {_key(n) for n in region}
    for x, g in (factors, reversed(factors)):
        producer = finder.producers.get(x)
        if x not in finder.reached or (producer is not None and _key(producer) in keys):
            continue
        found = _gated_activation(finder, x, g)
        if found is not None and _close(coefficient, found[1]):
            match = found[0]
            match.nodes = region + match.nodes
            return match
    return None


def _clip_source(finder: _Finder, name: str, region: list[onnx.NodeProto]) -> str | None:
    """For ``name == clip(x + 3, 0, 6)``: ``x``."""
    clip = finder.inner(name, "Clip")
    if clip is None:
        return None
    add = finder.inner(clip.input[0], "Add")
    if add is None:
        return None
    for x in add.input:
        if x in finder.reached and finder.clip_0_6_of_x_plus_3(name, x, region):
            return str(x)
    return None


def _match_softsign(finder: _Finder, node: onnx.NodeProto) -> _Match | None:
    x, denominator = node.input[0], node.input[1]
    region: list[onnx.NodeProto] = []
    if finder.plus_one(denominator, "Abs", region) == x:
        return _Match("Softsign", x, {}, [node, *region])
    return None


def _match_softplus(finder: _Finder, node: onnx.NodeProto) -> _Match | None:
    """PyTorch's softplus with a linear region: ``where(b x > t, x, softplus(b x) / b)``."""
    condition, x, soft = node.input[0], node.input[1], node.input[2]
    greater = finder.producers.get(condition)
    if greater is None or greater.op_type != "Greater" or x not in finder.reached:
        return None
    threshold = finder.scalar(greater.input[1])
    region: list[onnx.NodeProto] = [node]
    scale, factors = finder.product(soft, region)
    if threshold is None or len(factors) != 1:
        return None
    softplus = finder.inner(factors[0], "Softplus")
    if softplus is None:
        return None
    scaled = softplus.input[0]
    beta = 1.0 / scale if scale else 0.0
    inner_region: list[onnx.NodeProto] = []
    factor = finder.scaled(scaled, x, inner_region)
    if greater.input[0] != scaled or factor is None or not _close(factor, beta):
        return None
    # The scaled input is read by the Softplus and by the Greater, which is off the path.
    nodes = [*region, softplus, *inner_region]
    return _Match("Softplus", x, {"beta": beta, "threshold": threshold}, nodes)


def _fused_node(match: _Match, last: onnx.NodeProto) -> onnx.NodeProto:
    node = helper.make_node(match.op_type, [match.source], list(last.output), name=last.name)
    node.attribute.extend(helper.make_attribute(k, v) for k, v in match.attributes.items())
    return node


def fuse_activations(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    reached: set[str],
    constants: Mapping[str, np.ndarray],
) -> list[onnx.NodeProto]:
    """Replace each composite activation among the path ``nodes`` (reverse order) by one node."""
    finder = _Finder(graph, nodes, reached, constants)
    on_path = {_key(node) for node in nodes}
    replaced: dict[tuple[str, ...], onnx.NodeProto] = {}
    removed: set[tuple[str, ...]] = set()
    for node in nodes:
        if _key(node) in removed:
            continue
        match: _Match | None = None
        if node.op_type in ("Mul", "Div") and len(node.input) == 2:
            match = _match_product(finder, node)
        if match is None and node.op_type == "Div" and len(node.input) == 2:
            match = _match_softsign(finder, node)
        if match is None and node.op_type == "Where":
            match = _match_softplus(finder, node)
        if match is None:
            continue
        inner = {_key(n) for n in match.nodes} - {_key(node)}
        if inner & removed or not inner <= on_path:
            continue
        replaced[_key(node)] = _fused_node(match, node)
        removed |= inner
        logger.debug("fused %s at node %s", match.op_type, node.name)
    return [replaced.get(_key(node), node) for node in nodes if _key(node) not in removed]


def _key(node: onnx.NodeProto) -> tuple[str, ...]:
    # Outputs name a node uniquely (single assignment), whichever Python object wraps it.
    return tuple(node.output)


def _gate_source(finder: _Finder, name: str) -> bool:
    """Whether ``name`` is made by a gate op, looking through moves, casts and scalar affine ops."""
    for _ in range(16):
        node = finder.producers.get(name)
        if node is None:
            return False
        if node.op_type in GATE_OPS:
            return True
        if node.op_type in _SHAPE_OPS:
            name = node.input[0]
            continue
        if node.op_type in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            scalars = [finder.scalar(i) is not None for i in node.input]
            if scalars == [False, True] or (scalars == [True, False] and node.op_type != "Div"):
                name = node.input[0] if scalars[1] else node.input[1]
                continue
        return False
    return False


def _gate_index(
    finder: _Finder, node: onnx.NodeProto, info: Mapping[str, TensorInfo]
) -> int | None:
    if node.input[0] == node.input[1]:
        return None
    made_by_gate = [i for i in (0, 1) if _gate_source(finder, node.input[i])]
    output = info[node.output[0]].shape
    broadcast = [i for i in (0, 1) if info[node.input[i]].shape != output]
    if len(made_by_gate) == 1:
        return made_by_gate[0]
    if len(broadcast) == 1:
        return broadcast[0]
    return None


def mark_gates(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    reached: set[str],
    info: Mapping[str, TensorInfo],
    constants: Mapping[str, np.ndarray],
) -> list[onnx.NodeProto]:
    """Copy each Mul of two path tensors with :data:`GATE_ATTRIBUTE` naming its gate factor.

    The gate is the factor made by Sigmoid, HardSigmoid or Clip (looking through reshapes and
    scalar affine ops), or failing that the only factor that is broadcast (squeeze-excitation's
    ``[C, 1, 1]`` scale). A product with no such factor is left unmarked.
    """
    finder = _Finder(graph, nodes, reached, constants)
    out = []
    for node in nodes:
        if (
            node.op_type == "Mul"
            and len(node.input) == 2
            and all(name in reached and name in info for name in node.input)
        ):
            gate = _gate_index(finder, node, info)
            if gate is not None:
                marked = onnx.NodeProto()
                marked.CopyFrom(node)
                marked.attribute.append(helper.make_attribute(GATE_ATTRIBUTE, gate))
                node = marked
        out.append(node)
    return out


def rewrite_path(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    reached: set[str],
    info: Mapping[str, TensorInfo],
    constants: Mapping[str, np.ndarray],
) -> list[onnx.NodeProto]:
    """Fuse composite activations, mark gates and quantized ops, on the path ``nodes`` (reverse).

    Returns a new list; the graph and its nodes are not mutated.
    """
    fused = fuse_activations(graph, nodes, reached, constants)
    gated = mark_gates(graph, fused, reached, info, constants)
    return mark_quantized(graph, gated, reached, constants)
