"""Cast: the identity on the signal, including the Cast of an integer image input to float."""

from __future__ import annotations

import onnx

from onnxdeconv.deconv.rules import TransposeContext, transpose_rule
from onnxdeconv.graph.load import INTEGER_TYPES


@transpose_rule("Cast", "CastLike")
def cast(ctx: TransposeContext, signal: str) -> dict[int, str]:
    """Pass the signal through: the derivative of a change of float precision is 1.

    Only float tensors carry a signal, so an integer input on the path can only be the image
    input itself (say uint8 pixels that the graph casts to float). Its projection is then the
    float32 signal in the input's shape: what the pixels would have to change by, which no
    integer type could hold. ``CastLike`` reads only the type of its second input, which gets
    no signal.
    """
    if not ctx.on_path[0]:
        raise ctx.unsupported("only the data input (input 0) may depend on the image input")
    source = ctx.info[ctx.node.input[0]]
    if not source.is_float and source.elem_type not in INTEGER_TYPES:
        name = onnx.TensorProto.DataType.Name(source.elem_type)
        raise ctx.unsupported(f"a cast from {name} is not supported; only float or integer data")
    return {0: signal}
