"""Rule cases for the quantized ops (merged into ``rule_cases`` by its ``_merge_extensions``).

The signal on an integer tensor is with respect to the value it stands for; rounding is taken
straight through within the integer range. Expectations are written by hand.
"""

from __future__ import annotations

import numpy as np
import onnx
import rule_cases as rc
from onnx import TensorProto, helper, numpy_helper


def _model(nodes: list[onnx.NodeProto], x_shape: tuple[int, ...], inits: dict) -> onnx.ModelProto:
    """Like ``rc.make_model``, but initializers keep their integer types (int8/uint8)."""
    graph = helper.make_graph(
        nodes,
        "quantize_case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    opsets = [helper.make_opsetid("", rc.OPSET)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


_QDQ = {"s": np.array(0.5, np.float32), "z": np.array(2, np.uint8)}


def _qdq(before: list[onnx.NodeProto], source: str = "x") -> list[onnx.NodeProto]:
    return [
        *before,
        rc.node("QuantizeLinear", [source, "s", "z"], ["q"]),
        rc.node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]


def _dynamic(
    op: str, weight: np.ndarray, scale: np.ndarray, x_shape: tuple[int, ...]
) -> onnx.ModelProto:
    """DynamicQuantizeLinear -> op -> Cast -> Mul(x_scale * w_scale), as quantize_dynamic writes."""
    nodes = [
        rc.node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        rc.node("Mul", ["xs", "ws"], ["scales"]),
        rc.node(op, ["xq", "w", "xz", "wz"], ["acc"]),
        rc.node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        rc.node("Mul", ["accf", "scales"], ["y"]),
    ]
    inits = {"w": weight, "ws": scale, "wz": np.zeros((), np.int8)}
    return _model(nodes, x_shape, inits)


def _golden() -> dict[str, list[rc.GoldenCase]]:
    # Levels round(x / 0.5) + 2 for x = [-2, -0.5, 1, 200]: 0 (saturated at 0? no: -4+2 = -2
    # saturates), 1, 4, 402 (saturates at 255). In range: only the middle two.
    x = rc.arr([[[-2, -0.5, 1, 200]]])
    signal = rc.arr([[[1, 2, 3, 4]]])
    straight = _model(_qdq([]), (1, 4), _QDQ)
    # After a Conv with zero point 0 the quantizer is the ReLU ORT removed: deconvnet relu(s).
    relu_qdq = {
        "s": np.array(0.5, np.float32),
        "z": np.array(0, np.uint8),
        "w": rc.arr([[[[1.0]]]]),
    }
    rectifier = _model(
        [
            rc.node("Conv", ["x", "w"], ["c"]),
            rc.node("QuantizeLinear", ["c", "s", "z"], ["q"]),
            rc.node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        (1, 1, 3),
        relu_qdq,
    )
    xr = rc.arr([[[[-1, 1, 2]]]])
    sr = rc.arr([[[[3, -4, 5]]]])
    per_axis = _model(
        [
            rc.node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
            rc.node("Conv", ["x", "w"], ["y"]),
        ],
        (1, 1, 2),
        {
            "wq": np.array([[[[3]]], [[[-2]]]], np.int8),
            "ws": rc.arr([0.5, 2.0]),
            "wz": np.array([1, 0], np.int8),
        },
    )
    conv_w = np.array([[[[2, -1]]]], np.int8)  # [M=1, C=1, 1, 2]
    matmul_w = np.array([[1, 2], [3, -1]], np.int8)
    x2 = rc.arr([[[[1.0, -1.0, 0.5]]]])
    return {
        "QuantizeLinear": [
            rc.GoldenCase("quantize_in_range_only", straight, x, signal, rc.arr([[[0, 2, 3, 0]]])),
            rc.GoldenCase(
                "quantize_rectifier_deconvnet", rectifier, xr, sr, rc.arr([[[[3, 0, 5]]]])
            ),
            rc.GoldenCase(
                "quantize_rectifier_gradient",
                rectifier,
                xr,
                sr,
                rc.arr([[[[0, -4, 5]]]]),
                mode="gradient",
            ),
            # Saturated at the top (200 / 0.5 = 400 > 255): Clip(x, 0, 127.5), whose deconvnet
            # rule reads no forward state; guided and gradient pass only inside (0, top].
            rc.GoldenCase(
                "quantize_rectifier_saturated_deconvnet",
                rectifier,
                rc.arr([[[[-1, 1, 200]]]]),
                rc.arr([[[[3, -4, 5]]]]),
                rc.arr([[[[3, 0, 5]]]]),
            ),
            rc.GoldenCase(
                "quantize_rectifier_saturated_guided",
                rectifier,
                rc.arr([[[[-1, 1, 200]]]]),
                rc.arr([[[[3, 4, 5]]]]),
                rc.arr([[[[0, 4, 0]]]]),
                mode="guided",
            ),
        ],
        "DequantizeLinear": [
            # The weights (3 - 1) * 0.5 and (-2 - 0) * 2 as a constant: y = [x, -4 x].
            rc.GoldenCase(
                "dequantize_per_axis_weight",
                per_axis,
                rc.arr([[[[1, 2]]]]),
                rc.arr([[[[1, 2]], [[1, 1]]]]),
                rc.arr([[[[1 - 4, 2 - 4]]]]),
            ),
        ],
        "DynamicQuantizeLinear": [
            # x -> Conv_{0.25 * [2, -1]} (width 3 -> 2); s^T: [0.5 s0, 0.5 s1 - 0.25 s0, -0.25 s1]
            rc.GoldenCase(
                "dynamic_conv_straight_through",
                _dynamic("ConvInteger", conv_w, np.array(0.25, np.float32), (1, 1, 3)),
                x2,
                rc.arr([[[[4, 8]]]]),
                rc.arr([[[[2, 3, -2]]]]),
            ),
        ],
        "ConvInteger": [
            rc.GoldenCase(
                "conv_integer_dequantized_weight",
                _dynamic("ConvInteger", conv_w, np.array(0.5, np.float32), (1, 1, 3)),
                x2,
                rc.arr([[[[1, 1]]]]),
                rc.arr([[[[1, 0.5, -0.5]]]]),
            ),
        ],
        "MatMulInteger": [
            # y = x @ (0.5 * W): s^T = 0.5 * W @ s = 0.5 * [1*2 + 2*1, 3*2 - 1*1]
            rc.GoldenCase(
                "matmul_integer_dequantized_weight",
                _dynamic("MatMulInteger", matmul_w, np.array(0.5, np.float32), (1, 2)),
                rc.arr([[[0.5, -1.0]]]),
                rc.arr([[[2, 1]]]),
                rc.arr([[[2, 2.5]]]),
            ),
        ],
    }


def _adjoint() -> dict[str, list[rc.AdjointCase]]:
    conv = rc.rand(40, 3, 2, 3, 3)
    quantized = np.clip(np.round(conv * 20), -127, 127).astype(np.int8)
    dq_conv = _model(
        [
            rc.node("DequantizeLinear", ["wq", "ws"], ["w"]),
            rc.node("Conv", ["x", "w"], ["y"], pads=[1, 0, 0, 1]),
        ],
        (2, 4, 5),
        {"wq": quantized, "ws": np.array(0.05, np.float32)},
    )
    return {
        "DequantizeLinear": [rc.AdjointCase("dequantized_conv_weight", dq_conv, (2, 4, 5))],
    }


GOLDEN = _golden()
ADJOINT = _adjoint()
NONLINEAR = {
    "QuantizeLinear": "rounding makes the forward map a staircase: <f(x), y> = <x, f^T y> "
    "holds only straight through, which the golden cases check",
    **dict.fromkeys(
        ("ConvInteger", "MatMulInteger"),
        "they follow DynamicQuantizeLinear, whose rounding of the input makes the map a "
        "staircase; the golden cases check the transpose (test_quantized.py checks a linear "
        "stack against autograd)",
    ),
    "DynamicQuantizeLinear": "its scale is a statistic of the tensor and rounding a staircase; "
    "the golden case checks the straight-through transpose",
}
