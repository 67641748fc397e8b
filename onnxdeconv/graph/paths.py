"""Graph queries along the projection path: tensors that depend on the image, nodes, switches."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from onnxdeconv.graph.passes import SWITCHES_SUFFIX, TensorInfo
from onnxdeconv.graph.quantized import carries_signal


def switch_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Name the switches tensor of every MaxPool: its own ``Indices`` output or a new one."""
    names = {}
    for node in graph.node:
        if node.op_type == "MaxPool":
            existing = node.output[1] if len(node.output) > 1 and node.output[1] else ""
            names[node.output[0]] = existing or node.output[0] + SWITCHES_SUFFIX
    return names


#: Ops whose output depends on the input's values in a way no fixed linear map describes: which
#: elements, branch or iteration count they pass is decided by the data.
DATA_DEPENDENT = frozenset(
    {"NonZero", "TopK", "Where", "If", "Loop", "Scan", "ArgMax", "ArgMin", "Unique", "Compress"}
    | {"NonMaxSuppression"}
)


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the enclosing scope."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read: set[str] = set()
    for node in graph.node:
        read.update(node_inputs(node))
        local.update(node.output)
    return read - local


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The node's inputs and what its subgraphs (If, Loop, Scan bodies) read from outside."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
        graphs += list(attribute.graphs)
        for subgraph in graphs:
            names += sorted(_outer_names(subgraph))
    return names


def path_tensors(
    graph: onnx.GraphProto, input_name: str, info: Mapping[str, TensorInfo]
) -> set[str]:
    """Tensors that depend on the image input and can carry a signal.

    These are the float tensors, and the integer tensors a quantizer writes (see
    :data:`~onnxdeconv.graph.quantized.QUANTIZED_OUTPUTS`); a dynamic quantizer's scale and zero
    point are held at their forward values and carry none.
    """
    reached = {input_name}
    for node in graph.node:
        if not any(name in reached for name in node_inputs(node)):
            continue
        for index, output in enumerate(node.output):
            if not output or output not in info:
                continue
            carries = carries_signal(node, index)
            if carries or (carries is None and info[output].is_float):
                reached.add(output)
    return reached


def path_nodes(graph: onnx.GraphProto, target: str, reached: set[str]) -> list[onnx.NodeProto]:
    """The nodes the target depends on through ``reached`` tensors, in reverse graph order."""
    needed = {target}
    nodes = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            nodes.append(node)
            needed.update(name for name in node.input if name in reached)
    return nodes
