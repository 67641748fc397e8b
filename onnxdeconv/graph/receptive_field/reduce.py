"""Contractions and reductions: MatMul, Gemm, reductions, global pools, softmax."""

from __future__ import annotations

from functools import partial

from onnxdeconv.graph.passes import REDUCE_OPS, node_attribute
from onnxdeconv.graph.receptive_field.field import (
    Field,
    Op,
    field_rule,
    merge,
    renumber,
    spread,
)


@field_rule("MatMul")
@field_rule("MatMulInteger", data_inputs=(0, 1))
def _matmul(op: Op) -> Field:
    """MatMul keeps the field unless it contracts an axis that holds a spatial dim."""
    out = op.out_shape()
    if out is None:
        return None
    rank = len(out)
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if field is None or shape is None or len(shape) < 2:
            return None
        contracted = len(shape) - 1 if index == 0 else len(shape) - 2
        if any(d.axis == contracted and shape[contracted] > 1 for d in field):
            return None
        shift = rank - len(shape)
        aligned = list((1,) * shift + tuple(shape))
        aligned[contracted + shift] = 1
        parts.append((renumber(field, partial(_contract, contracted, shift)), tuple(aligned)))
    return merge(parts, out)


def _contract(contracted: int, shift: int, axis: int) -> int | None:
    return None if axis == contracted else axis + shift


def _reduced_axes(op: Op, rank: int) -> list[int] | None:
    node = op.node
    if node.op_type in ("ArgMax", "ArgMin"):
        return [int(node_attribute(node, "axis", 0)) % rank]
    axes = op.ctx.ints(node, "axes", 1)
    if axes is None and len(node.input) > 1 and node.input[1]:
        return None  # computed axes
    if not axes:
        return [] if node_attribute(node, "noop_with_empty_axes", 0) else list(range(rank))
    return [a % rank for a in axes]


@field_rule(*REDUCE_OPS, data_inputs=(0,))
@field_rule("ArgMax", "ArgMin")
def _reduce(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    axes = _reduced_axes(op, len(shape))
    if axes is None:
        return None
    if any(d.axis in axes and spread(d, shape) for d in field):
        return None
    if node_attribute(op.node, "keepdims", 1):
        return field
    return renumber(field, lambda a: None if a in axes else a - sum(1 for r in axes if r < a))


@field_rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    return (
        None
        if any(d.axis is not None and d.axis >= 2 and spread(d, shape) for d in field)
        else field
    )


@field_rule("Gemm")
def _gemm(op: Op) -> Field:
    """Gemm contracts a whole row of its 2-D inputs: global unless no input spreads over space."""
    out = op.out_shape()
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if field is None or shape is None or out is None:
            return None
        if any(spread(d, shape) for d in field):
            return None
        parts.append((renumber(field, lambda a: None), tuple(out)))
    return merge(parts, out) if out is not None else None


@field_rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(op: Op) -> Field:
    field, shape = op.fields[0], op.in_shape()
    if field is None or shape is None:
        return None
    axis = int(node_attribute(op.node, "axis", -1)) % len(shape)
    # Before opset 13 the axis meant "this one and all after it": assume the wider.
    if any(d.axis is not None and d.axis >= axis and spread(d, shape) for d in field):
        return None
    return field
