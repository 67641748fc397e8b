"""Generate the deconv graph by walking back from a target tensor to the image input."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxdeconv.deconv.emitter import DECONV_OPSET, OPSET_RANGE, DeconvGraph
from onnxdeconv.deconv.fusion import rewrite_path
from onnxdeconv.deconv.placement import Placement
from onnxdeconv.deconv.rules import (
    RULES,
    TRANSPOSE_RULES,
    Rule,
    TransposeContext,
    TransposeRule,
)
from onnxdeconv.errors import OnnxDeconvError, UnsupportedOpError
from onnxdeconv.graph.experimental import is_experimental
from onnxdeconv.graph.passes import TensorInfo, attach_weights, constant_tensors
from onnxdeconv.graph.paths import DATA_DEPENDENT, path_nodes, path_tensors, switch_names
from onnxdeconv.graph.quantized import REFUSED_QUANTIZED_OPS

logger = logging.getLogger(__name__)


@dataclass
class DeconvPlan:
    """A generated deconv graph and what it needs from the forward pass."""

    model: onnx.ModelProto
    target: str
    rule: Rule
    #: Forward tensors the deconv graph takes as inputs (switches, rectifier inputs), in order.
    forward_inputs: list[str]
    #: Output name of each MaxPool on the path -> the name of its switches tensor.
    switches: dict[str, str]
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    #: A windowed graph (see :mod:`onnxdeconv.deconv.window`): it also takes ``window_origin``.
    windowed: bool = False
    #: Where each row's output lies in the input's spatial axes, for a windowed graph that
    #: returns crops (``[K, C, *crop.size]``, zero past the input's borders); None where the
    #: output is whole inputs.
    crop: Placement | None = None
    #: The data of the model's large weights, which its initializers only name: sessions share
    #: these buffers (``create_session(weights=...)``) with the forward pass.
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def self_contained(self) -> onnx.ModelProto:
        """The deconv model with its weights' data inside (for export, or another runtime)."""
        return attach_weights(self.model, self.weights)


def build_deconv(
    model: onnx.ModelProto,
    input_name: str,
    target: str,
    info: Mapping[str, TensorInfo],
    rule: Rule = "deconvnet",
    constants: Mapping[str, np.ndarray] | None = None,
    opset: int = DECONV_OPSET,
    reached: set[str] | None = None,
) -> DeconvPlan:
    """Build the deconv graph that projects signals at ``target`` back to ``input_name``.

    Args:
        model: The forward model, topologically sorted, with static per-sample shapes in ``info``.
        input_name: The image input the projection ends at.
        target: The tensor whose activations are projected.
        info: Types and batch-first shapes of every tensor, from shape inference.
        rule: ``deconvnet``, ``guided`` or ``gradient``: what the rectifiers pass back.
        constants: Initializer and Constant values; read from ``model`` when omitted.
        opset: Opset of the generated graph, within :data:`OPSET_RANGE`.
        reached: :func:`path_tensors` of the model, when the caller has it already.

    Returns:
        The deconv model (not yet run through the checker) and its forward needs.

    Raises:
        UnsupportedOpError: A node on the path has no rule or an unsupported attribute.
        OnnxDeconvError: The target does not depend on the input or has no static shape.
    """
    _check_choices(rule, opset)
    graph = model.graph
    if constants is None:
        constants = constant_tensors(graph)
    if reached is None:
        reached = path_tensors(graph, input_name, info)
    if target not in reached:
        raise OnnxDeconvError(
            f"tensor '{target}' does not carry float data computed from input '{input_name}': "
            "choose a feature map listed as projectable by 'onnxdeconv layers'"
        )
    nodes = rewrite_path(graph, path_nodes(graph, target, reached), reached, info, constants)
    all_info, switches = with_switches(graph, info)
    on_path = {n for node in nodes for n in node.input if n in reached}
    _require_static_shapes({target, input_name} | on_path, all_info)

    deconv = DeconvGraph(all_info[target].per_sample, all_info)
    walk = _Transposer(deconv, rule, all_info, constants, reached, switches)
    walk.pending[target].append("signal")
    for node in nodes:  # already in reverse topological order
        walk.transpose(node)
    arrived_at_input = walk.pending.pop(input_name, [])
    if not arrived_at_input:
        raise OnnxDeconvError(f"no signal from '{target}' reaches input '{input_name}'")
    projection = deconv.sum(arrived_at_input, input_name)
    return finish_plan(
        deconv, projection, all_info, input_name, target, rule, walk.used_switches, opset
    )


def _check_choices(rule: Rule, opset: int) -> None:
    if rule not in RULES:
        raise OnnxDeconvError(f"unknown rule '{rule}': use one of {', '.join(RULES)}")
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"deconv graphs are built at opset {OPSET_RANGE}, not {opset}")


def _require_static_shapes(names: Iterable[str], info: Mapping[str, TensorInfo]) -> None:
    """Raise unless every tensor in ``names`` has a static per-sample shape."""
    for name in names:
        try:
            info[name].per_sample  # noqa: B018 - validates the shape
        except ValueError as exc:
            raise OnnxDeconvError(
                f"tensor '{name}' has no static shape ({exc}); give a fixed input size",
                parameter="input_shape",
            ) from exc


@dataclass
class _Transposer:
    """Walks the path back node by node, collecting the signals that arrive at each tensor."""

    deconv: DeconvGraph
    rule: Rule
    info: Mapping[str, TensorInfo]
    constants: Mapping[str, np.ndarray]
    reached: set[str]
    switches: dict[str, str]
    #: Signals sent back to each forward tensor, not yet passed on; summed where they meet.
    pending: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Output name of each MaxPool the signal went through -> its switches tensor.
    used_switches: dict[str, str] = field(default_factory=dict)

    def transpose(self, node: onnx.NodeProto) -> None:
        """Send the signals at the node's outputs back to its inputs (nodes none reached skip)."""
        arrived = [self.pending.pop(output, []) for output in node.output]
        if not any(arrived):
            return
        transpose = _rule_of(node)
        context = TransposeContext(
            node=node,
            rule=self.rule,
            info=self.info,
            constants=self.constants,
            on_path=[name in self.reached for name in node.input],
            graph=self.deconv,
            switches=self.switches,
            output_signals=[
                self.deconv.sum(signals, output) if signals else None
                for signals, output in zip(arrived, node.output, strict=True)
            ],
        )
        signal = context.output_signals[0] or self.deconv.zeros(context.output_shape(0))
        for index, produced in transpose(context, signal).items():
            self.pending[node.input[index]].append(produced)
        if node.op_type == "MaxPool":
            self.used_switches[node.output[0]] = self.switches[node.output[0]]


def _rule_of(node: onnx.NodeProto) -> TransposeRule:
    """The node's transpose rule; raises UnsupportedOpError saying why it has none."""
    transpose = TRANSPOSE_RULES.get(node.op_type)
    if transpose is not None:
        return transpose
    if node.op_type in REFUSED_QUANTIZED_OPS:
        raise UnsupportedOpError(node.name, node.op_type, REFUSED_QUANTIZED_OPS[node.op_type])
    if node.op_type in DATA_DEPENDENT:
        raise UnsupportedOpError(
            node.name,
            node.op_type,
            "it is a data-dependent op (what it passes on is decided by the input's "
            "values), which has no transpose",
        )
    if is_experimental(node):
        raise UnsupportedOpError(
            node.name,
            node.op_type,
            "it is an experimental op of opsets 1 to 9 with no transpose rule",
        )
    raise UnsupportedOpError(node.name, node.op_type, "the op has no transpose rule")


def with_switches(
    graph: onnx.GraphProto, info: Mapping[str, TensorInfo]
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """``info`` plus the switches tensor of every MaxPool, and the switches' names."""
    all_info = dict(info)
    switches = switch_names(graph)
    for pooled, name in switches.items():
        if pooled in info:
            all_info[name] = TensorInfo(info[pooled].shape, onnx.TensorProto.INT64)
    return all_info, switches


def finish_plan(
    deconv: DeconvGraph,
    projection: str,
    info: Mapping[str, TensorInfo],
    input_name: str,
    target: str,
    rule: Rule,
    used_switches: dict[str, str],
    opset: int,
    windowed: bool = False,
    crop: Placement | None = None,
) -> DeconvPlan:
    """Close ``deconv`` with ``projection`` as its output and describe it as a plan.

    ``crop`` is the placement of windows in the input where ``projection`` is one crop per row.
    """
    input_shape = info[input_name].per_sample
    output_shape = input_shape if crop is None else (input_shape[0], *crop.size)
    model = deconv.to_model(projection, output_shape, opset)
    kind = "windowed deconv" if windowed else "deconv"
    logger.debug("%s graph for %s: %d nodes", kind, target, len(model.graph.node))
    return DeconvPlan(
        model=model,
        target=target,
        rule=rule,
        forward_inputs=list(deconv.forward_inputs),
        switches=used_switches,
        input_shape=info[input_name].per_sample,
        target_shape=info[target].per_sample,
        windowed=windowed,
        crop=crop,
        weights=dict(deconv.weights),
    )


@dataclass(frozen=True)
class PathBlock:
    """What stops the deconv graph of a tensor, as :func:`path_blocks` finds it without building.

    Tensors with the same block fail for the same reason: a node on their path that has no
    transpose (``kind`` "node", the node's name) or a tensor without a static shape ("shape").
    ``kind`` "unsure" means that only building the graph can tell.
    """

    kind: str
    name: str
    #: Where the builder, walking back, meets it: the larger, the sooner (shapes come first).
    rank: int


class _ProbeGraph(DeconvGraph):
    """A deconv graph that only names what the rules emit: it keeps no node and no weight."""

    def const(self, value: np.ndarray | float | Sequence[int], hint: str = "const") -> str:
        return self.fresh(hint)

    def op_multi(
        self, op_type: str, inputs: Sequence[str], n_outputs: int, hint: str = "", **attrs: Any
    ) -> list[str]:
        stem = hint or op_type.lower()
        return [self.fresh(f"{stem}_{i}" if n_outputs > 1 else stem) for i in range(n_outputs)]


def path_blocks(
    model: onnx.ModelProto,
    input_name: str,
    info: Mapping[str, TensorInfo],
    rule: Rule = "deconvnet",
    constants: Mapping[str, np.ndarray] | None = None,
    reached: set[str] | None = None,
) -> dict[str, PathBlock | None]:
    """For every tensor on a path, whether :func:`build_deconv` would fail on it, and where.

    One walk over the whole graph instead of one deconv graph per tensor (which costs the square
    of the depth): each node's rule runs once, on a graph that keeps nothing, with a signal at
    every output that carries one; then each tensor inherits, in graph order, the block the
    builder would meet first walking back from it: a tensor without a static shape on its path
    (checked before the walk), else the deepest node without a transpose among those its signal
    passes through. Tensors inside a fused activation, and those whose signal would not reach
    the input, are "unsure". A tensor missing from the result is not on any path.
    """
    _check_choices(rule, DECONV_OPSET)
    graph = model.graph
    if constants is None:
        constants = constant_tensors(graph)
    if reached is None:
        reached = path_tensors(graph, input_name, info)
    every = [node for node in reversed(graph.node) if any(o in reached for o in node.output)]
    nodes = rewrite_path(graph, every, reached, info, constants)
    all_info, switches = with_switches(graph, info)
    walk = _Transposer(_ProbeGraph((), all_info), rule, all_info, constants, reached, switches)
    errors, sends = _probe_rules(nodes, walk)
    originals = {(node.name, node.op_type) for node in graph.node}
    static = {name: _is_static(all_info, name) for name in reached}
    shape_block = {input_name: None if static.get(input_name) else input_name}
    node_block: dict[str, PathBlock | None] = {input_name: None}
    arrives = {input_name: True}
    for index in reversed(range(len(nodes))):  # graph order
        node = nodes[index]
        on_path = [name for name in node.input if name in reached]
        bad_shape = next(
            (shape_block.get(name, name) for name in on_path if shape_block.get(name, name)), None
        )
        if errors[index] is not None:
            rank = len(nodes) - index
            block: PathBlock | None = _node_failure(node, errors[index], originals, rank)
            reaches = True
        else:
            passed = [name for name in on_path if name in sends[index]]
            block = _deepest([node_block.get(name, _UNSURE) for name in passed])
            reaches = any(arrives.get(name, False) for name in passed)
        if not reaches and block is None:
            block = _UNSURE
        for output in node.output:
            if output in reached:
                shape_block[output] = bad_shape or (None if static[output] else output)
                node_block[output] = block
                arrives[output] = reaches
    result: dict[str, PathBlock | None] = {}
    for name, block in node_block.items():
        bad = shape_block.get(name)
        result[name] = PathBlock("shape", bad, len(nodes) + 1) if bad else block
    return result


def _probe_rules(
    nodes: Sequence[onnx.NodeProto], walk: _Transposer
) -> tuple[dict[int, OnnxDeconvError | None], dict[int, set[str]]]:
    """Run each node's rule once on the probe: its error, and the inputs it sends a signal to."""
    errors: dict[int, OnnxDeconvError | None] = {}
    sends: dict[int, set[str]] = {}
    for index, node in enumerate(nodes):
        walk.pending.clear()
        try:
            for output in node.output:
                if output in walk.reached:
                    walk.pending[output].append(walk.deconv.fresh(f"{output}_probe"))
            walk.transpose(node)
            errors[index] = None
            sends[index] = set(walk.pending)
        except OnnxDeconvError as exc:
            errors[index] = exc
        except Exception:  # a rule that cannot run on the probe: building will tell
            errors[index] = OnnxDeconvError("unsure")
    return errors, sends


def _node_failure(
    node: onnx.NodeProto,
    error: OnnxDeconvError | None,
    originals: set[tuple[str, str]],
    rank: int,
) -> PathBlock:
    """The block of a node whose rule failed: exact where it is the model's own node."""
    exact = isinstance(error, UnsupportedOpError) and (
        (error.node_name, error.op_type) in originals
    )
    return PathBlock("node" if exact else "unsure", node.name or node.output[0], rank)


def _deepest(inherited: Sequence[PathBlock | None]) -> PathBlock | None:
    """The block a walk back meets first among its inputs' (the deepest); unsure beats all."""
    # A tensor only a build can judge has no place in the walk: it makes the rest unsure.
    if _UNSURE in inherited:
        return _UNSURE
    return max(inherited, key=lambda b: -1 if b is None else b.rank, default=None)


#: The block of a tensor only a build can judge.
_UNSURE = PathBlock("unsure", "", 0)


def _is_static(info: Mapping[str, TensorInfo], name: str) -> bool:
    if name not in info:
        return False
    try:
        info[name].per_sample  # noqa: B018 - validates the shape
    except ValueError:
        return False
    return True
