"""Elementwise ops: inputs that broadcast to the output merge their fields.

This is also the rule of every op without one of its own (see :func:`elementwise`).
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxdeconv.graph.receptive_field.field import Field, Op, aligned, field_rule, merge

# The ops with a transpose rule or a lineariser, registered here so that each has its entry; an
# op missing here is treated the same way.
_ELEMENTWISE_OPS = (
    *("Add", "Sub", "Mul", "Div", "Neg", "Abs", "Pow", "Sqrt", "Reciprocal", "Where"),
    *("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Tanh"),
    *("HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Swish", "Erf"),
    *("BatchNormalization", "Cast", "CastLike", "Dropout", "Identity"),
    # LRN mixes channels only. InstanceNormalization's statistics mix every position; the field
    # follows the projection, which holds them at their forward values.
    *("LRN", "InstanceNormalization"),
    # The affine experimental ops of opsets 1 to 9 (ImageScaler's bias is per channel).
    *("ImageScaler", "Affine", "Scale"),
)


@field_rule(*_ELEMENTWISE_OPS)
@field_rule("Expand", "Clip", data_inputs=(0,))
@field_rule("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", data_inputs=(0,))
def elementwise(op: Op) -> Field:
    """Inputs that broadcast to the output merge; global where the shapes do not broadcast."""
    out = op.out_shape()
    if out is None:
        return None
    parts = []
    for index, field in op.fields.items():
        shape = op.in_shape(index)
        if shape is None or len(shape) > len(out):
            return None
        if any(s not in (1, o) for s, o in zip(shape, out[len(out) - len(shape) :], strict=True)):
            return None
        parts.append(aligned(field, shape, len(out)))
    if op.node.op_type == "Mul" and len(parts) > 1:
        parts = _without_gates(parts, out)
    return merge(parts, out)


def _without_gates(
    parts: list[tuple[Field, tuple[int, ...]]], out: Sequence[int]
) -> list[tuple[Field, tuple[int, ...]]]:
    """Drop factors broadcast over every spatial axis of another factor: they are gates."""
    spatial = {
        d.axis
        for field, shape in parts
        if field is not None
        for d in field
        if d.axis is not None and shape[d.axis] > 1 and out[d.axis] > 1
    }
    if not spatial:
        return parts
    kept = [(f, s) for f, s in parts if any(s[a] > 1 for a in spatial)]
    return kept or parts
