"""Receptive fields computed from the graph: size, stride and offset of every feature map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx
from onnx import helper

from onnxdeconv.graph.passes import TensorInfo

WINDOW_OPS = {"Conv", "MaxPool", "AveragePool"}
GLOBAL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Flatten", "Reshape"}


@dataclass(frozen=True)
class ReceptiveField:
    """The input region that one unit of a feature map sees, per spatial dim.

    Unit ``p`` of the map sees input pixels ``[offset + p * stride, offset + p * stride + size)``
    (the region may extend past the image border, into padding). ``size`` is None for units that
    see the whole input (after global pooling or a fully connected layer).
    """

    size: tuple[int, ...] | None
    stride: tuple[int, ...]
    offset: tuple[int, ...]

    def box(self, position: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
        """The ``[begin, end)`` input range of the unit at ``position``, per spatial dim."""
        if self.size is None:
            return None
        return tuple(
            (o + p * s, o + p * s + k)
            for o, p, s, k in zip(self.offset, position, self.stride, self.size, strict=True)
        )

    def describe(self) -> str:
        """Short text such as ``11x11 /4`` or ``global``."""
        if self.size is None:
            return "global"
        return f"{'x'.join(map(str, self.size))} /{'x'.join(map(str, sorted(set(self.stride))))}"


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _window(node: onnx.NodeProto, field: ReceptiveField, kernel: list[int]) -> ReceptiveField:
    assert field.size is not None
    rank = len(kernel)
    strides = list(_attr(node, "strides", [1] * rank))  # type: ignore[call-overload]
    dilations = list(_attr(node, "dilations", [1] * rank))  # type: ignore[call-overload]
    pads = list(_attr(node, "pads", [0] * 2 * rank))  # type: ignore[call-overload]
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    if auto_pad in (b"SAME_UPPER", b"SAME_LOWER"):
        # Exact pads depend on the input size; half the extent is the centred approximation.
        pads = [(d * (k - 1)) // 2 for k, d in zip(kernel, dilations, strict=True)] * 2
    return ReceptiveField(
        size=tuple(
            r + d * (k - 1) * j
            for r, k, d, j in zip(field.size, kernel, dilations, field.stride, strict=True)
        ),
        stride=tuple(j * s for j, s in zip(field.stride, strides, strict=True)),
        offset=tuple(
            o - p * j for o, p, j in zip(field.offset, pads[:rank], field.stride, strict=True)
        ),
    )


def _merge(fields: list[ReceptiveField]) -> ReceptiveField:
    if any(f.size is None for f in fields):
        return ReceptiveField(None, fields[0].stride, fields[0].offset)
    begins = [min(f.offset[i] for f in fields) for i in range(len(fields[0].offset))]
    ends = [
        max(f.offset[i] + (f.size[i] if f.size else 0) for f in fields) for i in range(len(begins))
    ]
    stride = tuple(max(f.stride[i] for f in fields) for i in range(len(begins)))
    return ReceptiveField(
        tuple(e - b for b, e in zip(begins, ends, strict=True)), stride, tuple(begins)
    )


def receptive_fields(
    graph: onnx.GraphProto,
    input_name: str,
    info: Mapping[str, TensorInfo],
) -> dict[str, ReceptiveField]:
    """Receptive field of every tensor computed from the image input.

    Ops not listed here keep the field when they keep the spatial shape (elementwise ops), and make
    it global otherwise.
    """
    spatial_rank = len(info[input_name].shape) - 2
    fields = {
        input_name: ReceptiveField((1,) * spatial_rank, (1,) * spatial_rank, (0,) * spatial_rank)
    }
    for node in graph.node:
        sources = [fields[name] for name in node.input if name in fields]
        if not sources:
            continue
        field = _merge(sources)
        if node.op_type in GLOBAL_OPS:
            field = ReceptiveField(None, field.stride, field.offset)
        elif node.op_type in WINDOW_OPS and field.size is not None:
            if node.op_type == "Conv" and node.input[1] in info:
                kernel = [int(k) for k in info[node.input[1]].shape[2:]]
            else:
                kernel = list(_attr(node, "kernel_shape", []))  # type: ignore[call-overload]
            if len(kernel) == spatial_rank:
                field = _window(node, field, kernel)
        elif field.size is not None and not _keeps_spatial(node, info):
            field = ReceptiveField(None, field.stride, field.offset)
        for output in node.output:
            if output:
                fields[output] = field
    return fields


def _keeps_spatial(node: onnx.NodeProto, info: Mapping[str, TensorInfo]) -> bool:
    first = info.get(node.input[0])
    out = info.get(node.output[0])
    return first is not None and out is not None and first.shape[2:] == out.shape[2:]
