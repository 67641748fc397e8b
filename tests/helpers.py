"""Small ONNX models built in code, and an in-process CLI runner, for tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv.cli.main import main


def conv_relu_pool_model(
    channels: int = 3, size: int = 16, batch: int | str = "N", seed: int = 0
) -> onnx.ModelProto:
    """x -> Conv(4, 3x3, pad 1) -> Relu -> MaxPool(3x3/2, pad 1) -> Flatten -> Gemm(5)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(4, channels, 3, 3)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    pooled = (size + 1) // 2
    fc = rng.normal(size=(5, 4 * pooled * pooled)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node(
            "MaxPool",
            ["relu"],
            ["pool"],
            name="pool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(fc, "fc"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def save_with_external_data(model: onnx.ModelProto, path: Path, location: str) -> None:
    """Save ``model`` at ``path`` with every initializer in the data file ``location`` beside it."""
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["onnxdeconv", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err
