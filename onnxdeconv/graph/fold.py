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
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxdeconv.graph.passes import (
    TensorInfo,
    constant_tensors,
    copy_model,
    default_opset,
    infer_tensor_info,
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
        if any(node.op_type in ("Shape", "Size") for node in current.graph.node):
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
    """Shapes of every tensor at the given input shape, measured by one run where unsure.

    Ceil-mode pools below opset 22 are inferred differently from how ONNX Runtime runs them, and
    a folded wrong shape would be baked into the graph.
    """
    info = infer_tensor_info(with_input_shape(skeleton(model), input_name, shape))
    unsure = any(
        node.op_type in ("MaxPool", "AveragePool")
        and any(a.name == "ceil_mode" and a.i for a in node.attribute)
        for node in model.graph.node
    ) or any(
        not _static(info.get(name))
        for node in model.graph.node
        if node.op_type in ("Shape", "Size")
        for name in node.input[:1]
    )
    if not unsure:
        return info
    produced = {o for n in model.graph.node for o in n.output}
    names = sorted(
        {
            n.input[0]
            for n in model.graph.node
            if n.op_type in ("Shape", "Size") and n.input and n.input[0] in produced
        }
    )
    if not names:
        return info
    element = next(i for i in model.graph.input if i.name == input_name).type.tensor_type
    probe = prune_to(with_input_shape(model, input_name, shape), names)
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
        if node.op_type == "Constant" or node.domain not in _DEFAULT_DOMAINS:
            continue
        if node.op_type in _RANDOM or _has_subgraph(node):
            continue
        if node.op_type in ("Shape", "Size"):
            source = info.get(node.input[0])
            if source is None or not _static(source):
                continue
            dims = [int(d) for d in source.shape]
            if node.op_type == "Size":
                values[node.output[0]] = np.array(int(np.prod(dims)), np.int64)
            else:
                start, end = _attr(node, "start", 0), _attr(node, "end", None)
                values[node.output[0]] = np.array(dims[start:end], np.int64)
            continue
        inputs = [name for name in node.input if name]
        if not all(name in values for name in inputs):
            continue
        if any(_too_big(info.get(out)) for out in node.output if out):
            continue
        try:
            outputs = _run_node(node, {name: values[name] for name in inputs}, opset)
        except Exception as exc:
            logger.debug("constant folding: cannot evaluate %s (%s)", node.name, exc)
            continue
        for name, value in zip(node.output, outputs, strict=False):
            array = np.asarray(value)
            if name and array.size <= MAX_ELEMENTS:
                values[name] = array
    return values


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
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


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


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, including outer-scope names read inside its subgraphs."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
        graphs += list(attribute.graphs) if attribute.type == onnx.AttributeProto.GRAPHS else []
        for graph in graphs:
            for inner in graph.node:
                names |= _subgraph_inputs(inner)
            names.update(o.name for o in graph.output)
    return names


def _batch_copies(
    graph: onnx.GraphProto, probes: Sequence[Values], infos: Sequence[Mapping[str, TensorInfo]]
) -> dict[int, np.ndarray]:
    """Constant targets for the Reshape nodes whose computed target varies with the batch.

    ``x.view(x.size(0), -1)`` computes ``[N, -1]``. When the output shapes at the probes differ in
    one axis only, the target becomes those dims with -1 on that axis: the one size that keeps
    the element count is the original's, at any batch. Otherwise (``allowzero=0`` only), entries
    that vary but equal the data's own dim on their axis become 0, "copy that dim". Keyed by node
    index.
    """
    copies: dict[int, np.ndarray] = {}
    for index, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target = node.input[1]
        if not all(target in probe for probe in probes):
            continue
        values = [probe[target].astype(np.int64).reshape(-1) for probe in probes]
        if all(np.array_equal(v, values[0]) for v in values):
            continue  # batch-free: folded as it is
        outs = [info.get(node.output[0]) for info in infos]
        if all(o is not None and _static(o) for o in outs):
            dims = np.array([[int(d) for d in o.shape] for o in outs if o is not None])
            varying = np.flatnonzero((dims != dims[0]).any(axis=0))
            if len(varying) == 1 and np.all(np.delete(dims[0], varying) > 0):
                copy = dims[0].copy()
                copy[varying] = -1
                copies[index] = copy
                continue
        data = [info.get(node.input[0]) for info in infos]
        if _attr(node, "allowzero", 0) or not all(d is not None and _static(d) for d in data):
            continue
        data_dims = [[int(x) for x in d.shape] for d in data if d is not None]
        if any(v.shape != values[0].shape for v in values):
            continue
        differ = [i for i in range(values[0].size) if len({int(v[i]) for v in values}) > 1]
        if all(
            i < len(data_dims[0])
            and all(int(v[i]) == d[i] for v, d in zip(values, data_dims, strict=True))
            for i in differ
        ):
            copy = values[0].copy()
            copy[differ] = 0
            copies[index] = copy
    return copies


def _rewrite(
    model: onnx.ModelProto, folded: Values, copies: Mapping[int, np.ndarray]
) -> onnx.ModelProto | None:
    """Apply one round of folding to a copy of ``model``.

    Folded nodes become initializers, ``If`` nodes with a folded condition their branch, and
    Reshape nodes read their batch-copying constant targets (``copies``, by node index).
    Returns None when there is nothing to change.
    """
    outputs = {o.name for o in model.graph.output}

    def is_folded(node: onnx.NodeProto) -> bool:
        return node.op_type != "Constant" and all(
            not out or (out in folded and out not in outputs) for out in node.output
        )

    def is_inlined(node: onnx.NodeProto) -> bool:
        return node.op_type == "If" and node.input[0] in folded and not _nested(node)

    if not copies and not any(is_folded(node) or is_inlined(node) for node in model.graph.node):
        return None
    out = copy_model(model)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    for index, node in enumerate(graph.node):
        if index in copies:
            name = node.input[1] + "_batch_copy"
            while name in taken:
                name += "_"
            taken.add(name)
            graph.initializer.append(numpy_helper.from_array(copies[index], name))
            node.input[1] = name
        if is_folded(node):
            continue
        if is_inlined(node):
            branch, initializers = _inline(node, bool(folded[node.input[0]]), taken)
            nodes.extend(branch)
            graph.initializer.extend(initializers)
            continue
        nodes.append(node)
    kept = _prune(nodes, outputs, _read_names(model.graph.node))
    read: set[str] = set(outputs)
    for node in kept:
        read |= _subgraph_inputs(node)
    produced = {o for node in kept for o in node.output}
    existing = {t.name for t in graph.initializer}
    for name in sorted(read - produced - existing):
        if name in folded:
            graph.initializer.append(numpy_helper.from_array(folded[name], name))
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [
        t for t in graph.initializer if t.name in read or t.name in _graph_inputs(graph)
    ]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    live = {o for node in kept for o in node.output} | {t.name for t in graph.initializer}
    value_info = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return out


def _read_names(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        names |= _subgraph_inputs(node)
    return names


def _prune(
    nodes: list[onnx.NodeProto], outputs: set[str], read_before: set[str]
) -> list[onnx.NodeProto]:
    """Drop the nodes folding orphaned: ``Shape`` nodes and constants whose every reader went.

    A node that nothing read before folding is left alone: it is the model's business.
    """
    kept = list(nodes)
    while True:
        read = _read_names(kept) | outputs
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


def _graph_inputs(graph: onnx.GraphProto) -> set[str]:
    return {i.name for i in graph.input}


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
        candidate = prefix + local
        while candidate in taken:
            candidate += "_"
        taken.add(candidate)
        renamed[local] = candidate
        return candidate

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


def folded_names(before: onnx.ModelProto, after: onnx.ModelProto) -> Iterable[str]:
    """Names of the tensors that folding turned into initializers (for logs and tests)."""
    had = {t.name for t in before.graph.initializer}
    return sorted(t.name for t in after.graph.initializer if t.name not in had)
