"""Rule cases for Cast and CastLike (merged into ``rule_cases`` by its ``_merge_extensions``).

A cast changes the precision, never the value's meaning, so its transpose is the identity; a
uint8 image input cast to float projects to a float32 array in the input's shape.
"""

from __future__ import annotations

import numpy as np
import onnx
import rule_cases as rc
from onnx import TensorProto, helper


def uint8_model(nodes: list[onnx.NodeProto], x_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Input ``x`` uint8 ``[N, *x_shape]`` (like an image decoded from a file), output ``y``."""
    graph = helper.make_graph(
        nodes,
        "uint8_case",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(np.array([[[[2.0]]]], np.float32), "w2")],
    )
    opsets = [helper.make_opsetid("", rc.OPSET)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _golden() -> dict[str, list[rc.GoldenCase]]:
    pixels = np.array([[[[0, 17, 255]], [[3, 128, 9]]]], np.uint8)  # [1, 2, 1, 3]
    signal = rc.arr([[[[1.5, -2, 0]], [[4, 0.25, -1]]]])
    to_float = rc.node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)
    # y = Conv_{w=2}(Cast(x)) on one channel: the projection is 2 * signal, in float32.
    scaled = uint8_model(
        [
            rc.node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            rc.node("Conv", ["xf", "w2"], ["y"]),
        ],
        (1, 1, 3),
    )
    # x -> float16 -> Relu -> float32: deconvnet passes relu(signal) through both casts.
    half_relu = rc.make_model(
        [
            rc.node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            rc.node("Relu", ["h"], ["r"]),
            rc.node("Cast", ["r"], ["y"], to=TensorProto.FLOAT),
        ],
        (1, 3),
    )
    x = rc.arr([[[1, -1, 2]]])
    like_half = rc.make_model(
        [rc.node("CastLike", ["x", "half"], ["y"])],
        (1, 3),
        {"half": np.zeros(1, np.float16)},
        opset=15,
    )
    # CastLike whose type source is also on the path: that input only lends its type, so the
    # gradient reaches x through input 0 alone (r = Relu(x) would gate it by x > 0).
    like_on_path = rc.make_model(
        [rc.node("Relu", ["x"], ["r"]), rc.node("CastLike", ["x", "r"], ["y"])], (1, 3), opset=15
    )
    return {
        "Cast": [
            rc.GoldenCase(
                "cast_uint8_input", uint8_model([to_float], (2, 1, 3)), pixels, signal, signal
            ),
            rc.GoldenCase(
                "cast_uint8_then_conv",
                scaled,
                np.array([[[[7, 0, 200]]]], np.uint8),
                rc.arr([[[[1, -3, 0.5]]]]),
                rc.arr([[[[2, -6, 1]]]]),
            ),
            rc.GoldenCase(
                "cast_float16_round_trip_relu",
                half_relu,
                x,
                rc.arr([[[1, -2, 3]]]),
                rc.arr([[[1, 0, 3]]]),
            ),
        ],
        "CastLike": [
            rc.GoldenCase(
                "castlike_float16", like_half, x, rc.arr([[[1, -2, 3]]]), rc.arr([[[1, -2, 3]]])
            ),
            rc.GoldenCase(
                "castlike_type_source_on_path",
                like_on_path,
                x,
                rc.arr([[[1, -2, 3]]]),
                rc.arr([[[1, -2, 3]]]),
                mode="gradient",
            ),
        ],
    }


def _adjoint() -> dict[str, list[rc.AdjointCase]]:
    # Through double precision and back: exactly linear, and exact in float32.
    double_trip = rc.make_model(
        [
            rc.node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
            rc.node("Cast", ["d"], ["f"], to=TensorProto.FLOAT),
            rc.node("Conv", ["f", "w"], ["y"], pads=[1, 0, 0, 1]),
        ],
        (2, 4, 5),
        {"w": rc.rand(0, 3, 2, 2, 2)},
    )
    like = rc.make_model(
        [
            rc.node("Conv", ["x", "w"], ["c"], strides=[2, 1]),
            rc.node("CastLike", ["c", "like"], ["y"]),
        ],
        (2, 5, 4),
        {"w": rc.rand(1, 3, 2, 3, 3), "like": np.zeros(1, np.float32)},
        opset=15,
    )
    return {
        "Cast": [rc.AdjointCase("cast_double_round_trip", double_trip, (2, 4, 5))],
        "CastLike": [rc.AdjointCase("castlike_after_conv", like, (2, 5, 4))],
    }


GOLDEN = _golden()
ADJOINT = _adjoint()
