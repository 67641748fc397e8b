"""The experimental ops of ONNX's first opsets (ImageScaler, Crop, Affine, ...) in old exports.

Caffe2 and CNTK exporters of 2017-2018 wrote them (an ``ImageScaler`` before the first Conv
subtracts the mean pixel). ONNX dropped them at opset 10 and the current ``onnx`` package has no
schema for them, but ONNX Runtime still runs them in the default domain from opset 1 to 9
(measured with onnxruntime 1.31: at opset 10 and later the session refuses them). Without a
schema the checker passes them with a warning printed on stdout, shape inference skips them (so
no tensor after one has a shape) and the version converter stops at them.

Each one that onnxdeconv reads gets a *stand-in*: a standard node with the same name, inputs,
outputs, output type and shape (``Identity`` for the elementwise ops, ``Slice`` for ``Crop``).
The checker, the converter and shape inference run on the stand-ins; the model ONNX Runtime
runs keeps the original nodes (:func:`restore`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdeconv.errors import ModelLoadError

#: The ops ONNX's checker knows as experimental (no schema in the current ``onnx``).
EXPERIMENTAL_OPS = frozenset(
    {
        *("ATen", "Affine", "ConstantFill", "Crop", "DynamicSlice", "GRUUnit"),
        *("GivenTensorFill", "ImageScaler", "ParametricSoftplus", "Scale", "ScaledTanh"),
    }
)
#: The last default-domain opset at which ONNX Runtime runs them.
LAST_OPSET = 9
#: Experimental ops whose output has the type and shape of their input.
ELEMENTWISE_OPS = frozenset({"Affine", "ImageScaler", "ParametricSoftplus", "Scale", "ScaledTanh"})
#: Every experimental op onnxdeconv reads (the others are refused when a model is loaded).
READ_OPS = ELEMENTWISE_OPS | {"Crop"}
#: Slice's "to the end" (its attributes are int64).
_TO_THE_END = 2**63 - 1


def is_experimental(node: onnx.NodeProto) -> bool:
    """Whether ``node`` is one of the schema-less experimental ops of the default domain."""
    return node.domain in ("", "ai.onnx") and node.op_type in EXPERIMENTAL_OPS


def experimental_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The experimental nodes of the main graph, in graph order."""
    return [node for node in model.graph.node if is_experimental(node)]


def crop_window(node: onnx.NodeProto) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``Crop``'s ``(top, left)`` corner and its ``(height, width)``, None: to the borders.

    ``border`` is ``[left, top, right, bottom]``; with ``scale`` ``[height, width]`` the window
    has that size from the corner and ``right`` and ``bottom`` are ignored (as ONNX Runtime
    runs it).
    """
    values = {a.name: list(helper.get_attribute_value(a)) for a in node.attribute}
    border = [int(v) for v in values.get("border", [])]
    if len(border) != 4:
        raise ModelLoadError(
            f"node '{node.name}' (Crop) has border {border}; Crop needs four values "
            "[left, top, right, bottom]"
        )
    scale = [int(v) for v in values.get("scale", [])]
    return (border[1], border[0]), (scale[0], scale[1]) if len(scale) == 2 else None


def _crop_bounds(node: onnx.NodeProto) -> tuple[list[int], list[int]]:
    """Slice starts and ends over axes [2, 3] that read what ``node`` (a Crop) reads."""
    (top, left), size = crop_window(node)
    if size is not None:
        return [top, left], [top + size[0], left + size[1]]
    border = [int(v) for a in node.attribute if a.name == "border" for v in a.ints]
    right, bottom = border[2], border[3]
    return [top, left], [-bottom if bottom else _TO_THE_END, -right if right else _TO_THE_END]


def stand_in(node: onnx.NodeProto) -> onnx.NodeProto | None:
    """A standard node computing a tensor of the same type and shape as ``node``, or None.

    The stand-ins are valid at every opset up to :data:`LAST_OPSET` (``Slice`` takes attributes
    there), the only opsets at which ONNX Runtime runs the originals.
    """
    if node.op_type in ELEMENTWISE_OPS:
        return helper.make_node("Identity", node.input[:1], node.output[:1], name=node.name)
    if node.op_type == "Crop":
        starts, ends = _crop_bounds(node)
        return helper.make_node(
            "Slice",
            node.input[:1],
            node.output[:1],
            name=node.name,
            starts=starts,
            ends=ends,
            axes=[2, 3],
        )
    return None


def _floats(node: onnx.NodeProto, name: str, default: list[float]) -> list[float]:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return [float(v) for v in (value if isinstance(value, list) else [value])]
    return default


def _affine_parts(node: onnx.NodeProto) -> tuple[list[float], list[float]] | None:
    """``y = x * factor + offset`` of an elementwise experimental op (per channel where a list)."""
    if node.op_type == "ImageScaler":
        return _floats(node, "scale", [1.0]), _floats(node, "bias", [])
    if node.op_type == "Affine":
        return _floats(node, "alpha", [1.0]), _floats(node, "beta", [0.0])
    if node.op_type == "Scale":
        return _floats(node, "scale", [1.0]), []
    return None


def standard_equivalent(
    node: onnx.NodeProto, dtype: np.dtype
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """Standard nodes that compute exactly what ``node`` computes, with their constants.

    Unlike :func:`stand_in`, the result is the same computation, valid at every opset from 7, so
    a model can be converted to newer opsets (where ONNX Runtime no longer runs the originals).
    ImageScaler, Affine and Scale become a ``Mul`` (and an ``Add``), Crop its ``Slice``; None for
    the others. Constants are in ``dtype`` (the model's float type).
    """
    if node.op_type == "Crop":
        replacement = stand_in(node)
        return ([replacement], []) if replacement is not None else None
    parts = _affine_parts(node)
    if parts is None:
        return None
    factor, offset = parts
    stem = f"{node.output[0]}__{node.op_type.lower()}"
    # A per-channel list broadcasts over [N, C, H, W] as [1, C, 1, 1].
    shape = (1, -1, 1, 1)
    scaled = f"{stem}_scaled" if offset else node.output[0]
    constants = [
        numpy_helper.from_array(np.reshape(np.asarray(factor, dtype), shape), f"{stem}_factor")
    ]
    nodes = [helper.make_node("Mul", [node.input[0], constants[0].name], [scaled], name=node.name)]
    if offset:
        constants.append(
            numpy_helper.from_array(np.reshape(np.asarray(offset, dtype), shape), f"{stem}_offset")
        )
        nodes.append(
            helper.make_node(
                "Add", [scaled, constants[1].name], node.output[:1], name=f"{stem}_add"
            )
        )
    return nodes, constants


def with_standard_ops(model: onnx.ModelProto, dtype: np.dtype) -> onnx.ModelProto:
    """``model`` itself without experimental nodes, else a copy computing them with standard ops.

    Raises:
        ModelLoadError: An experimental op has no standard equivalent here (see
            :func:`standard_equivalent`).
    """
    if not experimental_nodes(model):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if not is_experimental(node):
            nodes.append(node)
            continue
        equivalent = standard_equivalent(node, dtype)
        if equivalent is None:
            raise ModelLoadError(
                f"node '{node.name}' ({node.op_type}) is an experimental op with no standard "
                "equivalent here: it cannot be carried to a newer opset"
            )
        nodes += equivalent[0]
        out.graph.initializer.extend(equivalent[1])
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def refuse_unreadable(model: onnx.ModelProto, where: str) -> None:
    """Raise :class:`ModelLoadError` for an experimental node onnxdeconv or ONNX Runtime can't run.

    The message is one line naming the node and the op.
    """
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    for node in experimental_nodes(model):
        if opset > LAST_OPSET:
            raise ModelLoadError(
                f"node '{node.name}' of {where} is {node.op_type}, an experimental op that "
                f"ONNX Runtime runs only up to opset {LAST_OPSET}, but the model is at opset "
                f"{opset}, so no layer of it can run: export it at opset {LAST_OPSET} or older, "
                f"or with standard ops"
            )
        if node.op_type not in READ_OPS:
            readable = ", ".join(sorted(READ_OPS))
            raise ModelLoadError(
                f"node '{node.name}' of {where} is {node.op_type}, an experimental op of ONNX's "
                f"first opsets that onnxdeconv cannot read (it reads {readable}): export the "
                "model with standard ops"
            )
        if len(node.input) != 1 or len(node.output) != 1:
            raise ModelLoadError(
                f"node '{node.name}' of {where} ({node.op_type}) has {len(node.input)} inputs "
                f"and {len(node.output)} outputs; the op has one of each"
            )


def with_stand_ins(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when it has no experimental node, else a copy with their stand-ins.

    Does not mutate ``model``. Nodes without a stand-in stay as they are.
    """
    if not experimental_nodes(model):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for index, node in enumerate(out.graph.node):
        replacement = stand_in(node) if is_experimental(node) else None
        if replacement is not None:
            out.graph.node[index].CopyFrom(replacement)
    return out


def restore(model: onnx.ModelProto, originals: Mapping[str, onnx.NodeProto]) -> onnx.ModelProto:
    """Put the original nodes (by node name) back in place of their stand-ins; mutates ``model``.

    Raises:
        ModelLoadError: A stand-in is missing (a pass dropped or renamed it).
    """
    placed = set()
    for index, node in enumerate(model.graph.node):
        if node.name in originals:
            model.graph.node[index].CopyFrom(originals[node.name])
            placed.add(node.name)
    missing = sorted(set(originals) - placed)
    if missing:
        raise ModelLoadError(
            f"the opset conversion lost the experimental nodes {', '.join(missing)}: export "
            "the model at opset 8 or 9"
        )
    return model
