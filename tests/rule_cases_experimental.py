"""Rule cases for the experimental ops of opsets 1 to 9 (merged into ``rule_cases``).

ImageScaler, Affine, Scale and Crop have no schema in the current ``onnx``, so these models are
built without shape inference, at the old opsets their exporters wrote (IR 3, weights listed as
graph inputs, opset 7 or 9), and go through the normal loading path, which converts opset 7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import rule_cases as rc
from onnx import TensorProto, helper, numpy_helper


def old_model(
    nodes: Sequence[onnx.NodeProto],
    x_shape: Sequence[int],
    inits: Mapping[str, Any] | None = None,
    *,
    opset: int = 7,
    out_rank: int = 4,
) -> onnx.ModelProto:
    """Input ``x`` float32 ``[N, *x_shape]``, output ``y``: an IR-3 export at ``opset``."""
    weights = [
        numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in (inits or {}).items()
    ]
    graph = helper.make_graph(
        list(nodes),
        "old_export",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape]),
            *(helper.make_tensor_value_info(w.name, TensorProto.FLOAT, w.dims) for w in weights),
        ],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, ["N", *(f"d{i}" for i in range(1, out_rank))]
            )
        ],
        initializer=weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2"
    )
    model.ir_version = 3
    return model


def _golden() -> dict[str, list[rc.GoldenCase]]:
    x = rc.arr([[[[1, -2, 3]], [[-4, 5, 6]]]])  # [1, 2, 1, 3]
    signal = rc.arr([[[[1, -2, 0.5]], [[3, 0, -1]]]])
    scaler = rc.node("ImageScaler", ["x"], ["y"], scale=2.0, bias=[10.0, -20.0])
    # ImageScaler (the mean pixel) before a 1x1 Conv with weights [3, -1]: s -> 2 * [3 s, -s].
    scaler_conv = old_model(
        [
            rc.node("ImageScaler", ["x"], ["scaled"], scale=2.0, bias=[-104.0, -117.0]),
            rc.node("Conv", ["scaled", "w"], ["y"]),
        ],
        (2, 1, 3),
        {"w": [[[[3.0]], [[-1.0]]]]},
    )
    one_channel = rc.arr([[[[1, 0, -2]]]])
    # Affine with a negative alpha then Relu: deconvnet rectifies first, then scales by alpha.
    affine_relu = old_model(
        [
            rc.node("Affine", ["x"], ["a"], alpha=-0.5, beta=3.0),
            rc.node("Relu", ["a"], ["y"]),
        ],
        (2, 1, 3),
        opset=9,
    )
    image = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    crop_borders = old_model(
        [rc.node("Crop", ["x"], ["y"], border=[1, 0, 0, 1])],  # left 1, bottom 1
        (1, 3, 4),
    )
    crop_scale = old_model(
        [rc.node("Crop", ["x"], ["y"], border=[2, 1, 5, 5], scale=[1, 2])],  # right, bottom unused
        (1, 3, 4),
        opset=9,
    )
    # Crop then a 2x2 Conv of ones: the Conv spreads each output over its window, the Crop puts
    # the window back at row 1, column 1 of the input.
    crop_conv = old_model(
        [
            rc.node("Crop", ["x"], ["c"], border=[1, 1, 0, 0]),
            rc.node("Conv", ["c", "ones"], ["y"]),
        ],
        (1, 3, 3),
        {"ones": np.ones((1, 1, 2, 2))},
    )
    return {
        "ImageScaler": [
            rc.GoldenCase(
                "imagescaler_alone", old_model([scaler], (2, 1, 3)), x, signal, 2 * signal
            ),
            rc.GoldenCase(
                "imagescaler_before_conv_opset7",
                scaler_conv,
                x,
                one_channel,
                rc.arr([[[[6, 0, -12]], [[-2, 0, 4]]]]),
            ),
        ],
        "Affine": [
            rc.GoldenCase(
                "affine_then_relu_deconvnet",
                affine_relu,
                x,
                signal,
                rc.arr([[[[-0.5, 0, -0.25]], [[-1.5, 0, 0]]]]),
            ),
            rc.GoldenCase(
                "affine_then_relu_gradient",
                affine_relu,
                x,
                signal,
                # relu passes where alpha x + beta > 0: every x but 6 (where it is 0).
                rc.arr([[[[-0.5, 1, -0.25]], [[-1.5, 0, 0]]]]),
                mode="gradient",
            ),
        ],
        "Scale": [
            rc.GoldenCase(
                "scale_alone",
                old_model([rc.node("Scale", ["x"], ["y"], scale=-3.0)], (2, 1, 3), opset=9),
                x,
                signal,
                -3 * signal,
            ),
        ],
        "Crop": [
            rc.GoldenCase(
                "crop_borders",
                crop_borders,
                image,
                rc.arr([[[[1, 2, 3], [4, 5, 6]]]]),
                rc.arr([[[[0, 1, 2, 3], [0, 4, 5, 6], [0, 0, 0, 0]]]]),
            ),
            rc.GoldenCase(
                "crop_scale",
                crop_scale,
                image,
                rc.arr([[[[7, 8]]]]),
                rc.arr([[[[0, 0, 0, 0], [0, 0, 7, 8], [0, 0, 0, 0]]]]),
            ),
            rc.GoldenCase(
                "crop_before_conv_opset7",
                crop_conv,
                np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3),
                rc.arr([[[[2]]]]),
                rc.arr([[[[0, 0, 0], [0, 2, 2], [0, 2, 2]]]]),
            ),
        ],
    }


def _adjoint() -> dict[str, list[rc.AdjointCase]]:
    conv = {"w": rc.rand(40, 4, 3, 3, 3)}
    scaler = old_model(
        [
            rc.node("ImageScaler", ["x"], ["s"], scale=0.017, bias=[-1.8, -2.0, -2.1]),
            rc.node("Conv", ["s", "w"], ["y"], pads=[1, 0, 0, 1]),
        ],
        (3, 5, 6),
        conv,
    )
    affine = old_model(
        [
            rc.node("Conv", ["x", "w"], ["c"], strides=[2, 1]),
            rc.node("Affine", ["c"], ["y"], alpha=1.5, beta=-0.25),
        ],
        (3, 6, 5),
        conv,
        opset=9,
    )
    scale = old_model(
        [rc.node("Scale", ["x"], ["s"], scale=0.5), rc.node("Conv", ["s", "w"], ["y"])],
        (3, 4, 4),
        conv,
        opset=9,
    )
    crop = old_model(
        [
            rc.node("Crop", ["x"], ["c"], border=[2, 1, 0, 3]),
            rc.node("Conv", ["c", "w"], ["y"], pads=[1, 1, 1, 1]),
        ],
        (3, 9, 7),
        conv,
    )
    crop_scale = old_model(
        [
            rc.node("Conv", ["x", "w"], ["c"]),
            rc.node("Crop", ["c"], ["y"], border=[1, 2, 0, 0], scale=[3, 2]),
        ],
        (3, 8, 6),
        conv,
        opset=9,
    )
    return {
        "ImageScaler": [rc.AdjointCase("imagescaler_before_conv", scaler, (3, 5, 6), affine=True)],
        "Affine": [rc.AdjointCase("affine_after_conv", affine, (3, 6, 5), affine=True)],
        "Scale": [rc.AdjointCase("scale_before_conv", scale, (3, 4, 4))],
        "Crop": [
            rc.AdjointCase("crop_before_conv", crop, (3, 9, 7)),
            rc.AdjointCase("crop_scale_after_conv", crop_scale, (3, 8, 6)),
        ],
    }


GOLDEN = _golden()
ADJOINT = _adjoint()
