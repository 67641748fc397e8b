"""Constant folding once the input size is known: shape arithmetic becomes initializers.

Exporters that keep a model's spatial axes dynamic (old PyTorch exports above all) compute
reshape targets, slice bounds, pads and resize sizes at run time, from ``Shape`` of a feature
map: ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, ``Shape -> Gather -> Div -> Slice``,
``If`` on ``Equal(Shape(x)[1], 1)``. Transpose rules need those values as constants. Once
:func:`onnxdeconv.prepared.prepare` fixes the per-sample input shape, every such value is
known, except where it depends on the batch size, which must stay free: the forward and deconv
graphs run at any batch.

:func:`fold_constants` therefore evaluates the graph's shape-only part at two probe batch sizes
(one when the model's batch is fixed) and folds every value that comes out the same at both:
``Shape(x)[1:]`` folds, ``Shape(x)[0]`` does not. A Reshape whose computed target varies with
the batch, such as ``x.view(x.size(0), -1)``, gets a constant target with -1 (or 0, "copy") on
the batch axis instead, so that no ``Shape`` is left behind. An ``If`` whose condition folds is
replaced by the nodes of the branch it takes. Values come from ONNX's reference evaluator at the
model's opset; shapes from shape inference, or from one run where inference may disagree with
ONNX Runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxdeconv.graph.passes import (
    TensorInfo,
    attach_weights,
    constant_tensors,
    copy_model,
    default_opset,
    infer_tensor_info,
    names_read,
    node_attribute,
    prune_to,
    skeleton,
    with_input_shape,
)

logger = logging.getLogger(__name__)

#: Batch sizes the shape arithmetic is evaluated at when the model's batch is dynamic. A value
#: that is the same at both does not depend on the batch.
PROBE_BATCHES = (2, 3)
#: Nodes whose inputs or output hold more elements than this are left alone: folding is for
#: shape arithmetic, not for precomputing weights.
MAX_ELEMENTS = 1 << 20
#: Folding and inlining alternate until nothing changes, at most this often.
MAX_ROUNDS = 8
_RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
_RANDOM |= {"Bernoulli"}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SHAPE_OPS = ("Shape", "Size")

Values = dict[str, np.ndarray]


def fold_constants(
    model: onnx.ModelProto,
    input_name: str,
    input_shape: Sequence[int],
    batch: int | None = None,
) -> onnx.ModelProto:
    """Fold what depends only on constants and on the input's per-sample shape.

    Args:
        model: The forward model (not mutated).
        input_name: Its image input.
        input_shape: The per-sample input shape (without batch) the model is prepared for.
        batch: The model's fixed batch size, or None when it is dynamic.

    Returns:
        ``model`` itself when nothing folds, otherwise a new model in which each folded tensor
        that a remaining node reads is an initializer, and each ``If`` with a folded condition is
        replaced by its branch.
    """
    current = model
    for _ in range(MAX_ROUNDS):
        if any(node.op_type in _SHAPE_OPS for node in current.graph.node):
            batches = (batch,) if batch is not None else PROBE_BATCHES
            infos = [_shapes(current, input_name, (b, *input_shape)) for b in batches]
        else:
            # Without Shape or Size, values depend on constants alone: one pass, no shapes.
            batches, infos = (batch or PROBE_BATCHES[0],), [{}]
        probes = [_evaluate(current.graph, info, default_opset(current)) for info in infos]
        folded = _batch_free(probes, _constant_names(current.graph))
        copies = _batch_copies(current.graph, probes, infos) if len(batches) > 1 else {}
        rewritten = _rewrite(current, folded, copies)
        if rewritten is None:
            break
        current = rewritten
    if current is not model:
        logger.debug(
            "constant folding: %d nodes -> %d", len(model.graph.node), len(current.graph.node)
        )
    return current


def _shapes(model: onnx.ModelProto, input_name: str, shape: Sequence[int]) -> dict[str, TensorInfo]:
    """Shapes of every tensor at the given input shape, measured by one run where unsure."""
    info = infer_tensor_info(with_input_shape(skeleton(model), input_name, shape))
    if not _inference_unsure(model, info):
        return info
    # Only what Shape and Size read is folded into the graph, so only those are measured.
    produced = {o for n in model.graph.node for o in n.output}
    names = sorted({n.input[0] for n in _shape_reads(model.graph) if n.input[0] in produced})
    if not names:
        return info
    return _measured(model, input_name, shape, names, info)


def _shape_reads(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The ``Shape`` and ``Size`` nodes that have an input."""
    return [n for n in graph.node if n.op_type in _SHAPE_OPS and n.input]


def _inference_unsure(model: onnx.ModelProto, info: Mapping[str, TensorInfo]) -> bool:
    """Whether shape inference may be wrong, or silent, about a shape that would be folded.

    Ceil-mode pools below opset 22 are inferred differently from how ONNX Runtime runs them, and
    a folded wrong shape would be baked into the graph.
    """
    ceil_mode_pool = any(
        node.op_type in ("MaxPool", "AveragePool") and _attr(node, "ceil_mode", 0)
        for node in model.graph.node
    )
    return ceil_mode_pool or any(
        not _static(info.get(node.input[0])) for node in _shape_reads(model.graph)
    )


def _measured(
    model: onnx.ModelProto,
    input_name: str,
    shape: Sequence[int],
    names: list[str],
    info: dict[str, TensorInfo],
) -> dict[str, TensorInfo]:
    """``info`` with the shapes of ``names`` as one ONNX Runtime run of a zero input gives them."""
    element = next(i for i in model.graph.input if i.name == input_name).type.tensor_type
    probe = attach_weights(prune_to(with_input_shape(model, input_name, shape), names))
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), _quiet(), providers=["CPUExecutionProvider"]
        )
        feed = np.zeros(shape, helper.tensor_dtype_to_np_dtype(element.elem_type))
        values = session.run(names, {input_name: feed})
    except Exception as exc:  # prepare reports a model that cannot run
        logger.debug("constant folding: measuring shapes failed (%s); using inferred ones", exc)
        return info
    measured = dict(info)
    for name, value in zip(names, values, strict=True):
        elem_type = info[name].elem_type if name in info else element.elem_type
        measured[name] = TensorInfo(tuple(np.shape(value)), elem_type)
    return measured


def _quiet() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def _static(info: TensorInfo | None) -> bool:
    return info is not None and all(isinstance(d, int) and d >= 0 for d in info.shape)


def _static_dims(infos: Sequence[TensorInfo | None]) -> list[list[int]] | None:
    """The dims of one tensor at each probe, or None unless they are static at every probe."""
    if not all(_static(info) for info in infos):
        return None
    return [[int(d) for d in info.shape] for info in infos if info is not None]


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant")
    return names


def _constants(graph: onnx.GraphProto) -> Values:
    # Weights past the size limit are never folded, so they are not even converted.
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    constants = constant_tensors(graph)
    return {
        name: np.asarray(constants[name])
        for name in constants
        if sizes.get(name, 0) <= MAX_ELEMENTS
    }


def _evaluate(graph: onnx.GraphProto, info: Mapping[str, TensorInfo], opset: int) -> Values:
    """Every value computable from constants and static shapes, in graph order."""
    values = _constants(graph)
    for node in graph.node:
        if not _evaluable(node):
            continue
        if node.op_type in _SHAPE_OPS:
            shape = _shape_value(node, info)
            if shape is not None:
                values[node.output[0]] = shape
        else:
            values.update(_computed_outputs(node, values, info, opset))
    return values


def _evaluable(node: onnx.NodeProto) -> bool:
    """Whether evaluating the node could give a value to fold.

    Constants are read as they are; random ops differ at every run; nodes with subgraphs are
    inlined (``If``) or left alone instead.
    """
    return (
        node.op_type != "Constant"
        and node.domain in _DEFAULT_DOMAINS
        and node.op_type not in _RANDOM
        and not _has_subgraph(node)
    )


def _shape_value(node: onnx.NodeProto, info: Mapping[str, TensorInfo]) -> np.ndarray | None:
    """The output of a ``Shape`` or ``Size`` node whose input shape is static, else None."""
    source = info.get(node.input[0])
    if source is None or not _static(source):
        return None
    dims = [int(d) for d in source.shape]
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), np.int64)
    start, end = _attr(node, "start", 0), _attr(node, "end", None)
    return np.array(dims[start:end], np.int64)


def _computed_outputs(
    node: onnx.NodeProto, values: Values, info: Mapping[str, TensorInfo], opset: int
) -> Values:
    """The node's outputs when all its inputs have values and nothing is too big to fold."""
    inputs = [name for name in node.input if name]
    if not all(name in values for name in inputs):
        return {}
    if any(_too_big(info.get(out)) for out in node.output if out):
        return {}
    try:
        outputs = _run_node(node, {name: values[name] for name in inputs}, opset)
    except Exception as exc:
        logger.debug("constant folding: cannot evaluate %s (%s)", node.name, exc)
        return {}
    computed = {}
    for name, value in zip(node.output, outputs, strict=False):
        array = np.asarray(value)
        if name and array.size <= MAX_ELEMENTS:
            computed[name] = array
    return computed


def _run_node(
    node: onnx.NodeProto, feeds: Mapping[str, np.ndarray], opset: int
) -> list[np.ndarray]:
    """Evaluate one node with the reference implementation of the model's opset.

    A bare NodeProto would be evaluated at the newest opset, where e.g. Unsqueeze reads its axes
    from an input instead of the attribute old exports use.
    """
    graph = helper.make_graph(
        [node],
        "fold",
        [helper.make_empty_tensor_value_info(name) for name in feeds],
        [helper.make_empty_tensor_value_info(name) for name in node.output if name],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, dict(feeds))]


def _attr(node: onnx.NodeProto, name: str, default: int | None) -> int | None:
    """An integer attribute of ``node``, or ``default``."""
    value = node_attribute(node, name)
    return default if value is None else int(value)


def _too_big(info: TensorInfo | None) -> bool:
    if info is None or not _static(info):
        return False
    return int(np.prod([int(d) for d in info.shape])) > MAX_ELEMENTS


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )


def _batch_free(probes: Sequence[Values], constants: set[str]) -> Values:
    """Computed values that are the same at every probe batch size."""
    first, *others = probes
    folded: Values = {}
    for name, value in first.items():
        if name in constants:
            continue
        if all(
            name in other
            and other[name].dtype == value.dtype
            and other[name].shape == value.shape
            and np.array_equal(other[name], value)
            for other in others
        ):
            folded[name] = value
    return folded


def _batch_copies(
    graph: onnx.GraphProto, probes: Sequence[Values], infos: Sequence[Mapping[str, TensorInfo]]
) -> dict[int, np.ndarray]:
    """Constant targets for the Reshape nodes whose computed target varies with the batch.

    ``x.view(x.size(0), -1)`` computes ``[N, -1]``. Each such target becomes a constant in which
    the batch's entry is -1 (:func:`_inferred_axis_target`) or, failing that, 0
    (:func:`_copied_dims_target`). Keyed by node index.
    """
    copies: dict[int, np.ndarray] = {}
    for index, node in enumerate(graph.node):
        targets = _batch_dependent_target(node, probes)
        if targets is None:
            continue
        outputs = [info.get(node.output[0]) for info in infos]
        data = [info.get(node.input[0]) for info in infos]
        copy = _inferred_axis_target(outputs)
        if copy is None and not _attr(node, "allowzero", 0):
            copy = _copied_dims_target(targets, data)
        if copy is not None:
            copies[index] = copy
    return copies


def _batch_dependent_target(
    node: onnx.NodeProto, probes: Sequence[Values]
) -> list[np.ndarray] | None:
    """A Reshape's computed target at each probe, or None unless it varies with the batch.

    A target that is the same at every probe is batch-free: it is folded as it is.
    """
    if node.op_type != "Reshape" or len(node.input) < 2:
        return None
    target = node.input[1]
    if not all(target in probe for probe in probes):
        return None
    values = [probe[target].astype(np.int64).reshape(-1) for probe in probes]
    if all(np.array_equal(v, values[0]) for v in values):
        return None
    return values


def _inferred_axis_target(outputs: Sequence[TensorInfo | None]) -> np.ndarray | None:
    """The Reshape's output dims with -1 on the one axis that varies between the probes.

    The one size that keeps the element count is the original's, at any batch. None when the
    output is not static, or more than one axis (or an axis of size 0 elsewhere) varies.
    """
    dims = _static_dims(outputs)
    if dims is None:
        return None
    sizes = np.array(dims)
    varying = np.flatnonzero((sizes != sizes[0]).any(axis=0))
    if len(varying) != 1 or not np.all(np.delete(sizes[0], varying) > 0):
        return None
    target: np.ndarray = sizes[0].copy()
    target[varying] = -1
    return target


def _copied_dims_target(
    targets: Sequence[np.ndarray], data: Sequence[TensorInfo | None]
) -> np.ndarray | None:
    """The computed target with 0 ("copy the data's dim", ``allowzero=0`` only) where it varies.

    Only where each entry that varies equals the data's own dim on its axis at every probe.
    """
    data_dims = _static_dims(data)
    if data_dims is None or any(t.shape != targets[0].shape for t in targets):
        return None
    differ = [i for i in range(targets[0].size) if len({int(t[i]) for t in targets}) > 1]
    copies_data_dim = all(
        i < len(data_dims[0])
        and all(int(t[i]) == d[i] for t, d in zip(targets, data_dims, strict=True))
        for i in differ
    )
    if not copies_data_dim:
        return None
    target: np.ndarray = targets[0].copy()
    target[differ] = 0
    return target


def _rewrite(
    model: onnx.ModelProto, folded: Values, copies: Mapping[int, np.ndarray]
) -> onnx.ModelProto | None:
    """Apply one round of folding to a copy of ``model``.

    Folded nodes become initializers, ``If`` nodes with a folded condition their branch, and
    Reshape nodes read their batch-copying constant targets (``copies``, by node index).
    Returns None when there is nothing to change.
    """
    fold = _Folding(folded, {o.name for o in model.graph.output})
    if not copies and not any(fold.changes(node) for node in model.graph.node):
        return None
    out = copy_model(model)
    graph = out.graph
    nodes = _folded_nodes(graph, fold, copies)
    kept = _prune(nodes, fold.outputs, names_read(model.graph.node))
    read = names_read(kept) | fold.outputs
    produced = {o for node in kept for o in node.output}
    existing = {t.name for t in graph.initializer}
    for name in sorted(read - produced - existing):
        if name in folded:
            graph.initializer.append(numpy_helper.from_array(folded[name], name))
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph, read)
    return out


@dataclass(frozen=True)
class _Folding:
    """One round's folded values, and what it does with each node."""

    folded: Values
    #: The graph's outputs: they stay computed by their nodes.
    outputs: set[str]

    def removes(self, node: onnx.NodeProto) -> bool:
        """Whether every output of the node is folded (Constant nodes stay as they are)."""
        return node.op_type != "Constant" and all(
            not out or (out in self.folded and out not in self.outputs) for out in node.output
        )

    def inlines(self, node: onnx.NodeProto) -> bool:
        """Whether the node is an ``If`` whose condition folds, to be replaced by its branch."""
        return node.op_type == "If" and node.input[0] in self.folded and not _nested(node)

    def changes(self, node: onnx.NodeProto) -> bool:
        """Whether the round removes or inlines the node."""
        return self.removes(node) or self.inlines(node)


def _folded_nodes(
    graph: onnx.GraphProto, fold: _Folding, copies: Mapping[int, np.ndarray]
) -> list[onnx.NodeProto]:
    """The graph's nodes after one round, before pruning; adds the initializers it needs.

    Reshape nodes (mutated in place) read their batch-copying targets, folded nodes go and
    inlined ``If`` nodes become their branch.
    """
    nodes: list[onnx.NodeProto] = []
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    for index, node in enumerate(graph.node):
        if index in copies:
            name = _fresh_name(node.input[1] + "_batch_copy", taken)
            graph.initializer.append(numpy_helper.from_array(copies[index], name))
            node.input[1] = name
        if fold.removes(node):
            continue
        if fold.inlines(node):
            branch, initializers = _inline(node, bool(fold.folded[node.input[0]]), taken)
            nodes.extend(branch)
            graph.initializer.extend(initializers)
            continue
        nodes.append(node)
    return nodes


def _fresh_name(base: str, taken: set[str]) -> str:
    """``base``, with underscores appended until no tensor has it; then it is taken."""
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _drop_unused(graph: onnx.GraphProto, read: set[str]) -> None:
    """Remove the initializers nothing reads and the value_info of tensors that are gone."""
    inputs = {i.name for i in graph.input}
    initializers = [t for t in graph.initializer if t.name in read or t.name in inputs]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    live = {o for node in graph.node for o in node.output} | {t.name for t in graph.initializer}
    value_info = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def _prune(
    nodes: list[onnx.NodeProto], outputs: set[str], read_before: set[str]
) -> list[onnx.NodeProto]:
    """Drop the nodes folding orphaned: ``Shape`` nodes and constants whose every reader went.

    A node that nothing read before folding is left alone: it is the model's business.
    """
    kept = list(nodes)
    while True:
        read = names_read(kept) | outputs
        orphaned = [
            node
            for node in kept
            if not any(o in read for o in node.output if o)
            and (node.op_type == "Constant" or any(o in read_before for o in node.output if o))
        ]
        if not orphaned:
            return kept
        gone = {id(node) for node in orphaned}
        kept = [node for node in kept if id(node) not in gone]


def _nested(node: onnx.NodeProto) -> bool:
    """Whether a branch of ``node`` itself holds subgraphs.

    Such an ``If`` is left alone: renaming inside nested scopes is not worth the risk for what
    exporters produce.
    """
    branches = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return any(_has_subgraph(inner) for branch in branches for inner in branch.node)


def _inline(
    node: onnx.NodeProto, condition: bool, taken: set[str]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes of the branch an ``If`` takes, renamed apart, ending in Identity to its outputs."""
    name = "then_branch" if condition else "else_branch"
    branch = next(a.g for a in node.attribute if a.name == name)
    prefix = f"{node.name or node.output[0]}/{name}/"
    renamed: dict[str, str] = {}

    def fresh(local: str) -> str:
        renamed[local] = _fresh_name(prefix + local, taken)
        return renamed[local]

    initializers = []
    for tensor in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = fresh(tensor.name)
        initializers.append(copy)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = fresh(inner.name or inner.op_type)
        del copy.input[:]
        copy.input.extend(renamed.get(i, i) for i in inner.input)
        del copy.output[:]
        copy.output.extend(fresh(o) if o else "" for o in inner.output)
        nodes.append(copy)
    for result, target in zip(branch.output, node.output, strict=True):
        nodes.append(
            helper.make_node(
                "Identity",
                [renamed.get(result.name, result.name)],
                [target],
                name=fresh(f"{target}_identity"),
            )
        )
    return nodes, initializers
