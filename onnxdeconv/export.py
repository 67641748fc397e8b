"""Export one self-contained ONNX graph: forward pass, arg-max selection and deconv together.

The exported graph needs no Python and no glue code, so other runtimes (C++, C#, JavaScript) can
compute projections with a single session.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from onnxdeconv.deconv.builder import DeconvPlan
from onnxdeconv.deconv.emitter import BATCH_INDEX, DECONV_OPSET, OPSET_RANGE, PROJECTION, SIGNAL
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import ModelLoadError, OnnxDeconvError
from onnxdeconv.graph import experimental
from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.graph.passes import (
    REDUCE_OPS,
    attach_weights,
    default_opset,
    instrument,
    with_input_shape,
)
from onnxdeconv.prepared import PreparedModel, prepare

logger = logging.getLogger(__name__)

CHANNEL = "channel"
POSITION = "position"
ACTIVATION = "activation"
DECONV_PREFIX = "deconv/"
SELECT_PREFIX = "select/"
#: Each selected unit's sign, which the projection of its magnitude is multiplied by.
SIGN = SELECT_PREFIX + "sign"
LINK_PREFIX = "link/"
OUTPUT_NODE = "output"
#: The exported graph's own inputs and outputs: fixed names, whatever the model calls its tensors.
RESERVED_NAMES = (PROJECTION, ACTIVATION, POSITION, CHANNEL)
#: Every other tensor the exported graph adds starts with one of these.
RESERVED_PREFIXES = (SELECT_PREFIX, DECONV_PREFIX)
#: Node names the exported graph adds: these, or a name starting with one of the prefixes.
RESERVED_NODE_NAMES = (OUTPUT_NODE,)
RESERVED_NODE_PREFIXES = (SELECT_PREFIX, LINK_PREFIX, DECONV_PREFIX)
#: A model's tensor or node whose name the exported graph reserves gets this prefix there.
MODEL_PREFIX = "model/"


@dataclass(frozen=True)
class ExportOptions:
    """Choices for :func:`export_projector`.

    Attributes:
        layer: Tensor name or alias; default the deepest projectable layer.
        rule: What the rectifiers pass back.
        position_input: Take the spatial position as an input instead of finding the arg-max.
        batch: Take K channels (``channel`` of shape [K]) and return K projections.
    """

    layer: str | None = None
    rule: Rule = "deconvnet"
    position_input: bool = False
    batch: bool = False


def _target_opset(loaded: LoadedModel) -> LoadedModel:
    """Bring the forward model into the opset range the deconv graph is built for."""
    opset = default_opset(loaded.model)
    if OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        return loaded
    # ONNX Runtime runs the experimental ops of old exports only up to opset 9: carry them over
    # as the standard ops that compute the same.
    float_type = loaded.input_dtype if loaded.input_dtype.kind == "f" else np.dtype(np.float32)
    standard = experimental.with_standard_ops(loaded.model, float_type)
    try:
        converted = version_converter.convert_version(standard, DECONV_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors with C++ messages
        raise ModelLoadError(
            f"cannot convert the model from opset {opset} to {DECONV_OPSET} for export ({exc}); "
            f"re-export it at an opset from {OPSET_RANGE[0]} to {OPSET_RANGE[1]}"
        ) from exc
    converted.ir_version = helper.find_min_ir_version_for(list(converted.opset_import))
    _drop_reduce_noop(converted)
    return LoadedModel(
        converted,
        loaded.input_name,
        loaded.input_shape,
        loaded.input_dtype,
        loaded.path,
        loaded.metadata,
    )


#: The reductions that gained ``noop_with_empty_axes`` at opset 18.
_NOOP_FROM_18 = frozenset(REDUCE_OPS) - {"ReduceSum"}


def _drop_reduce_noop(model: onnx.ModelProto) -> None:
    """Remove ``noop_with_empty_axes=0`` that onnx's converter leaves on reductions below 18.

    Mutates ``model``. The attribute only exists from opset 18 on (13 for ReduceSum); its default
    0 is the older behaviour, so dropping it changes nothing.
    """
    if default_opset(model) >= 18:
        return
    for node in model.graph.node:
        if node.op_type in _NOOP_FROM_18:
            kept = [
                a
                for a in node.attribute
                if not (a.name == "noop_with_empty_axes" and helper.get_attribute_value(a) == 0)
            ]
            del node.attribute[:]
            node.attribute.extend(kept)


class _Nodes:
    """Collects the selection nodes that sit between the forward and the deconv graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, SELECT_PREFIX + name))
        return SELECT_PREFIX + name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=SELECT_PREFIX + output, **attrs)
        )
        return output


#: Significant bits of the narrow float types whose layers the export rounds (see _rounded).
SIGNIFICANT_BITS: dict[int, int] = {TensorProto.FLOAT16: 11, TensorProto.BFLOAT16: 8}


def _rounded(nodes: _Nodes, values: str, bits: int) -> str:
    """``values`` (float32) rounded to ``bits`` significant bits, as a narrower float holds them.

    A float16 model's layer, read as an output, is rounded to float16; inside one graph ONNX
    Runtime computes float16 layers in float32 and removes casts to float16 and back again, even
    with its optimizations off. Veltkamp's split rounds with float32 arithmetic alone:
    ``t = x * (2^(24 - bits) + 1)``, ``x' = t - (t - x)``.
    """
    split = nodes.const(f"split_{bits}", np.array(2.0 ** (24 - bits) + 1, np.float32))
    scaled = nodes.op("Mul", [values, split], "select/round_scaled")
    gap = nodes.op("Sub", [scaled, values], "select/round_gap")
    return nodes.op("Sub", [scaled, gap], "select/acts_rounded")


def _selection(
    nodes: _Nodes,
    target: str,
    target_shape: tuple[int, ...],
    position_input: bool,
    input_rank: int,
    elem_type: int = TensorProto.FLOAT,
) -> None:
    """Pick the activation to project; build the signal for the deconv graph and the sign.

    ``input_rank`` is the number of per-sample axes of the image input: the sign (tensor
    ``SIGN``, [K, 1, ...]) broadcasts over the projection.
    """
    channels, spatial = target_shape[0], target_shape[1:]
    size = math.prod(spatial)
    i64 = np.int64
    acts = nodes.op("Cast", [target], "select/acts", to=TensorProto.FLOAT)
    if elem_type in SIGNIFICANT_BITS:
        acts = _rounded(nodes, acts, SIGNIFICANT_BITS[elem_type])
    rows = nodes.op("Gather", [acts, CHANNEL], "select/rows", axis=1)  # [1, K, *spatial]
    flat = nodes.op(
        "Reshape", [rows, nodes.const("rows_shape", np.array([-1, size], i64))], "select/rows_flat"
    )
    if position_input:
        strides = [math.prod(spatial[i + 1 :]) for i in range(len(spatial))]
        weighted = nodes.op(
            "Mul", [POSITION, nodes.const("strides", np.array(strides, i64))], "select/weighted"
        )
        where = nodes.op(
            "ReduceSum",
            [weighted, nodes.const("axis1", np.array([1], i64))],
            "select/where",
            keepdims=1,
        )
    else:
        where = nodes.op("ArgMax", [flat], "select/where", axis=1, keepdims=1)  # [K, 1]
        coords = []
        for axis, extent in enumerate(spatial):
            stride = math.prod(spatial[axis + 1 :])
            step = nodes.op(
                "Div",
                [where, nodes.const(f"stride{axis}", np.array(stride, i64))],
                f"select/step{axis}",
            )
            coords.append(
                nodes.op(
                    "Mod",
                    [step, nodes.const(f"extent{axis}", np.array(extent, i64))],
                    f"select/coord{axis}",
                )
            )
        if coords:
            nodes.op("Concat", coords, POSITION, axis=1)
        else:
            empty = nodes.op(
                "Concat",
                [nodes.op("Shape", [CHANNEL], "select/k"), nodes.const("zero", np.array([0], i64))],
                "select/empty_shape",
                axis=0,
            )
            nodes.op(
                "ConstantOfShape",
                [empty],
                POSITION,
                value=numpy_helper.from_array(np.zeros(1, i64)),
            )
    value = nodes.op("GatherElements", [flat, where], "select/value", axis=1)  # [K, 1]
    nodes.op("Reshape", [value, nodes.const("vector", np.array([-1], i64))], ACTIVATION)
    offset = nodes.op("Mul", [CHANNEL, nodes.const("size", np.array(size, i64))], "select/offset")
    column = nodes.op(
        "Unsqueeze", [offset, nodes.const("axis1b", np.array([1], i64))], "select/offset_col"
    )
    index = nodes.op("Add", [column, where], "select/index")
    k = nodes.op("Shape", [CHANNEL], "select/count")
    zeros_shape = nodes.op(
        "Concat",
        [k, nodes.const("numel", np.array([channels * size], i64))],
        "select/zeros_shape",
        axis=0,
    )
    zeros = nodes.op(
        "ConstantOfShape",
        [zeros_shape],
        "select/zeros",
        value=numpy_helper.from_array(np.zeros(1, np.float32)),
    )
    # The unit's magnitude travels back and the projection takes its sign (as Projector.project
    # does): a negative unit projects as a · deconv(1), captum's attribution times the value.
    magnitude = nodes.op("Abs", [value], "select/magnitude")
    hot = nodes.op("ScatterElements", [zeros, index, magnitude], "select/one_hot", axis=1)
    nodes.op(
        "Reshape",
        [hot, nodes.const("signal_shape", np.array([-1, *target_shape], i64))],
        DECONV_PREFIX + SIGNAL,
    )
    nodes.op(
        "ConstantOfShape",
        [k],
        DECONV_PREFIX + BATCH_INDEX,
        value=numpy_helper.from_array(np.zeros(1, i64)),
    )
    negative = nodes.op(
        "Less", [value, nodes.const("zero_float", np.zeros((), np.float32))], "select/negative"
    )
    signs = nodes.op(
        "Where",
        [
            negative,
            nodes.const("minus_one", np.array(-1.0, np.float32)),
            nodes.const("plus_one", np.array(1.0, np.float32)),
        ],
        "select/signs",
    )  # [K, 1]
    nodes.op(
        "Reshape",
        [signs, nodes.const("sign_shape", np.array([-1, *[1] * input_rank], i64))],
        SIGN,
    )


def export_projector(
    model: LoadedModel | PreparedModel, options: ExportOptions | None = None
) -> onnx.ModelProto:
    """Build the self-contained projector graph for one layer.

    Inputs: the model's own image input (batch 1) and ``channel`` (int64 [1], or [K] with
    ``batch``), plus ``position`` (int64 [K, spatial rank]) with ``position_input``. Outputs:
    ``projection`` (float32, [K, *input_shape[1:]]), ``activation`` (float32 [K]) and
    ``position`` (int64 [K, spatial rank]) unless it is an input.

    Raises:
        OnnxDeconvError: The layer cannot be projected, or the model cannot be brought to an
            opset from 16 to 18.
    """
    options = options or ExportOptions()
    loaded = model.loaded if isinstance(model, PreparedModel) else model
    converted = _target_opset(loaded)
    if isinstance(model, PreparedModel):
        # A model at another opset is converted first; it keeps the input size it was given.
        prepared = model if converted is loaded else prepare(converted, model.input_shape)
    else:
        prepared = prepare(converted)
    opset = default_opset(converted.model)
    layer = _export_layer(prepared, options.layer)
    plan = prepared.plan(layer, options.rule, opset)
    graph = _projector_graph(converted, prepared, plan, options)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    out.ir_version = helper.find_min_ir_version_for(list(out.opset_import))
    out.producer_name = "onnxdeconv"
    for key, value in {
        "onnxdeconv.layer": layer,
        "onnxdeconv.rule": options.rule,
        **{k: v for k, v in loaded.metadata.items() if k.startswith("onnxdeconv.")},
    }.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug of ours, not the user's
        raise OnnxDeconvError(f"the exported graph is invalid: {exc}") from exc
    return out


def _export_layer(prepared: PreparedModel, layer: str | None) -> str:
    """The tensor to export (``layer`` resolved, or the default one); it must be channels-first."""
    name = prepared.resolve(layer) if layer else prepared.default_layer()
    if name in prepared.channels_first_orders:
        # The exported graph selects channels on axis 1 of the layer tensor itself.
        raise OnnxDeconvError(
            f"layer '{name}' is channels-last (an NHWC map); export from the channels-first "
            "map next to it (before the model's Transpose back to NHWC)"
        )
    return name


def _projector_graph(
    converted: LoadedModel, prepared: PreparedModel, plan: DeconvPlan, options: ExportOptions
) -> onnx.GraphProto:
    """The forward graph at batch 1, then the selection, then the plan's deconv graph."""
    # Self-contained: weights left in the model's data file are read in.
    whole = attach_weights(converted.model)
    sized = with_input_shape(whole, converted.input_name, (1, *prepared.input_shape))
    forward, _ = instrument(sized, [], plan.switches, prepared.info, batch=1)
    graph = forward.graph
    del graph.output[:]
    renames = _rename_reserved(graph)
    deconv = onnx.compose.add_prefix(plan.self_contained(), DECONV_PREFIX)
    selection = _Nodes()
    target = renames.get(plan.target, plan.target)
    _selection(
        selection,
        target,
        plan.target_shape,
        options.position_input,
        len(prepared.input_shape),
        prepared.info[plan.target].elem_type,
    )
    links = [
        helper.make_node(
            "Identity",
            [renames.get(name, name)],
            [DECONV_PREFIX + name],
            name=LINK_PREFIX + renames.get(name, name),
        )
        for name in plan.forward_inputs
    ]
    kept = _share_forward_weights(deconv.graph, graph.initializer, renames)
    graph.node.extend([*selection.nodes, *links, *deconv.graph.node])
    graph.initializer.extend([*selection.initializers, *kept])
    _declare_io(graph, options, len(plan.target_shape) - 1, prepared.input_shape)
    graph.node.append(
        helper.make_node("Mul", [DECONV_PREFIX + PROJECTION, SIGN], [PROJECTION], name=OUTPUT_NODE)
    )
    graph.name = "onnxdeconv_projector"
    del graph.value_info[:]
    return graph


def _reserved(name: str, names: Iterable[str], prefixes: Iterable[str]) -> bool:
    return name in names or any(name.startswith(prefix) for prefix in prefixes)


def _rename_reserved(graph: onnx.GraphProto) -> dict[str, str]:
    """Give the model's tensors and nodes that bear a name the exported graph adds another one.

    Keras names layers ``activation``, ``activation_1``, ... and tf2onnx keeps those names, so
    a model often has a tensor called like an output of the exported graph; the exported
    graph's names stay fixed, and the model's tensor becomes ``model/activation``. Mutates
    ``graph`` (subgraphs included).

    Returns:
        The new name of each renamed tensor.
    """
    tensors, nodes = _graph_names(graph)
    taken = tensors | nodes
    tensor_renames = {
        name: _free_name(name, taken)
        for name in sorted(tensors)
        if _reserved(name, RESERVED_NAMES, RESERVED_PREFIXES)
    }
    node_renames = {
        name: _free_name(name, taken)
        for name in sorted(nodes)
        if _reserved(name, RESERVED_NODE_NAMES, RESERVED_NODE_PREFIXES)
    }
    if tensor_renames or node_renames:
        logger.info(
            "renamed the model's %s: the exported graph uses those names",
            ", ".join(
                f"'{old}' to '{new}'" for old, new in {**tensor_renames, **node_renames}.items()
            ),
        )
        _rename(graph, tensor_renames, node_renames)
    return tensor_renames


def _free_name(name: str, taken: set[str]) -> str:
    """``model/<name>``, or ``model/<name>_<i>`` where that is taken too; adds it to ``taken``."""
    free, count = MODEL_PREFIX + name, 0
    while free in taken:
        count += 1
        free = f"{MODEL_PREFIX}{name}_{count}"
    taken.add(free)
    return free


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [
        graph
        for attribute in node.attribute
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
    ]


def _graph_names(graph: onnx.GraphProto) -> tuple[set[str], set[str]]:
    """Every tensor name and every node name in ``graph`` and its subgraphs."""
    tensors = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    tensors |= {t.name for t in graph.initializer}
    tensors |= {t.values.name for t in graph.sparse_initializer}
    nodes: set[str] = set()
    for node in graph.node:
        tensors |= {*node.input, *node.output} - {""}
        if node.name:
            nodes.add(node.name)
        for subgraph in _subgraphs(node):
            inner_tensors, inner_nodes = _graph_names(subgraph)
            tensors |= inner_tensors
            nodes |= inner_nodes
    return tensors, nodes


def _rename(graph: onnx.GraphProto, tensors: dict[str, str], nodes: dict[str, str]) -> None:
    """Rename tensors and nodes in ``graph`` and its subgraphs (mutates it)."""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = tensors.get(value.name, value.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = tensors.get(sparse.values.name, sparse.values.name)
    for node in graph.node:
        node.input[:] = [tensors.get(name, name) for name in node.input]
        node.output[:] = [tensors.get(name, name) for name in node.output]
        node.name = nodes.get(node.name, node.name)
        for subgraph in _subgraphs(node):
            _rename(subgraph, tensors, nodes)


def _share_forward_weights(
    deconv: onnx.GraphProto,
    forward_weights: Iterable[onnx.TensorProto],
    renames: dict[str, str],
) -> list[onnx.TensorProto]:
    """The deconv initializers the forward graph lacks; the others' readers read the forward's.

    Mutates the nodes of ``deconv``: weights it shares with the forward graph are stored once.
    ``renames`` maps the model's names to the ones its weights have in the forward graph.
    """
    forward_by_name = {t.name: t for t in forward_weights}
    shared = {}
    kept = []
    for tensor in deconv.initializer:
        original = tensor.name[len(DECONV_PREFIX) :]
        forward_name = renames.get(original, original)
        if _same_tensor(forward_by_name.get(forward_name), tensor):
            shared[tensor.name] = forward_name
        else:
            kept.append(tensor)
    for node in deconv.node:
        node.input[:] = [shared.get(name, name) for name in node.input]
    return kept


def _same_tensor(twin: onnx.TensorProto | None, tensor: onnx.TensorProto) -> bool:
    return (
        twin is not None
        and twin.data_type == tensor.data_type
        and np.array_equal(numpy_helper.to_array(twin), numpy_helper.to_array(tensor))
    )


def _declare_io(
    graph: onnx.GraphProto, options: ExportOptions, rank: int, input_shape: tuple[int, ...]
) -> None:
    """Add the projector's inputs and outputs besides the image input (see export_projector)."""
    count: int | str = "K" if options.batch else 1
    position = helper.make_tensor_value_info(POSITION, TensorProto.INT64, [count, rank])
    graph.input.append(helper.make_tensor_value_info(CHANNEL, TensorProto.INT64, [count]))
    if options.position_input:
        graph.input.append(position)
    graph.output.extend(
        [
            helper.make_tensor_value_info(PROJECTION, TensorProto.FLOAT, [count, *input_shape]),
            helper.make_tensor_value_info(ACTIVATION, TensorProto.FLOAT, [count]),
        ]
    )
    if not options.position_input:
        graph.output.append(position)
