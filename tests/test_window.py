"""Windowed deconv graphs compute exactly what the dense graph computes, with less work.

The dense graph (``project_signal``) is the reference here: its rules have golden, adjoint and
captum tests of their own. The windowed graph must agree with it for every geometry a chain can
have (strides, asymmetric and ``auto_pad`` pads, dilation, groups, ceil-mode and padded pools,
windows that run past every border) and every rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rule_cases import to_float16

from onnxdeconv import Projector
from onnxdeconv.graph.load import load_model
from onnxdeconv.prepared import prepare


def chain_model(specs: list[tuple[str, dict[str, Any]]], shape: tuple[int, ...], seed: int = 0):
    """x -> the ops of ``specs`` in order; Conv specs carry ``out`` and ``kernel``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current, channels = "x", shape[0]
    for index, (op, attrs) in enumerate(specs):
        attrs = dict(attrs)
        name = f"{op.lower()}{index}"
        inputs = [current]
        if op == "Conv":
            out, kernel = attrs.pop("out"), attrs.pop("kernel")
            group = attrs.get("group", 1)
            weight = rng.normal(size=(out, channels // group, *kernel)).astype(np.float32)
            inits += [
                numpy_helper.from_array(weight, f"{name}_w"),
                numpy_helper.from_array(rng.normal(size=out).astype(np.float32), f"{name}_b"),
            ]
            inputs += [f"{name}_w", f"{name}_b"]
            channels = out
        elif op == "BatchNormalization":
            for part, value in (
                ("scale", rng.uniform(0.5, 2, channels)),
                ("bias", rng.normal(size=channels)),
                ("mean", rng.normal(size=channels)),
                ("var", rng.uniform(0.5, 2, channels)),
            ):
                inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_{part}"))
                inputs.append(f"{name}_{part}")
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        current = name
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def conv(out: int, kernel: tuple[int, ...], **attrs: Any) -> tuple[str, dict[str, Any]]:
    return "Conv", {"out": out, "kernel": list(kernel), "kernel_shape": list(kernel), **attrs}


def pool(kernel: tuple[int, ...], **attrs: Any) -> tuple[str, dict[str, Any]]:
    return "MaxPool", {"kernel_shape": list(kernel), **attrs}


RELU = ("Relu", {})
CHAINS = {
    "zfnet_like": (
        [
            conv(4, (5, 5), strides=[2, 2], pads=[1, 1, 1, 1]),
            RELU,
            pool((3, 3), strides=[2, 2], pads=[1, 1, 1, 1]),
            conv(6, (3, 3), strides=[2, 2]),
            RELU,
            pool((3, 3), strides=[2, 2], ceil_mode=1),
            conv(5, (3, 3), pads=[1, 1, 1, 1]),
            RELU,
        ],
        (3, 97, 89),
    ),
    "asymmetric_dilated_grouped": (
        [
            conv(6, (3, 2), strides=[2, 1], pads=[0, 1, 2, 0], dilations=[2, 1]),
            ("BatchNormalization", {}),
            RELU,
            conv(6, (3, 3), group=3, pads=[2, 1, 0, 1], dilations=[1, 2]),
            ("Identity", {}),
            RELU,
            pool((2, 3), strides=[2, 2], pads=[1, 0, 0, 2]),
        ],
        (3, 19, 23),
    ),
    "auto_pad_same": (
        [
            conv(4, (4, 4), strides=[3, 3], auto_pad="SAME_UPPER"),
            RELU,
            pool((2, 2), strides=[2, 2], auto_pad="SAME_LOWER"),
            conv(4, (3, 3), strides=[2, 2], auto_pad="SAME_LOWER"),
        ],
        (2, 29, 31),
    ),
    "one_dimensional": (
        [
            conv(4, (5,), strides=[2], pads=[2, 1]),
            RELU,
            pool((3,), strides=[2], pads=[1, 1]),
            conv(3, (3,), dilations=[2]),
            RELU,
        ],
        (2, 40),
    ),
}


def agree(projector: Projector, x: np.ndarray) -> None:
    """Project several selections per image, including border positions, both ways."""
    result = projector.forward(x)
    spatial = projector.layer_shape[1:]
    selections = []
    for image in range(len(x)):
        selections += projector.strongest(result, top=3, image=image)
        for corner in ([0] * len(spatial), [s - 1 for s in spatial]):
            selections += projector.strongest(
                result, channel=1, position=tuple(corner), image=image
            )
    windowed = projector.project(result, selections)
    dense = projector.project_signal(
        result, projector.signal(result, selections), [s.image for s in selections]
    )
    assert windowed.shape == dense.shape == (len(selections), *projector.input_shape)
    peak = float(np.abs(dense).max())
    assert peak > 0
    np.testing.assert_allclose(windowed, dense, rtol=0, atol=1e-6 * peak)


@pytest.mark.parametrize("mode", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_windowed_equals_dense(name: str, mode: str) -> None:
    specs, shape = CHAINS[name]
    model = chain_model(specs, shape)
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype(np.float32)
    prepared = prepare(load_model(model))
    windowed = 0
    for layer in prepared.candidates:
        if len(prepared.info[layer].per_sample) < 2:
            continue
        projector = Projector(prepared, layer=layer, rule=mode, device="cpu")  # type: ignore[arg-type]
        agree(projector, x)
        windowed += projector.windowed is not None
    assert windowed >= 2


def test_windowed_float16_model() -> None:
    specs, shape = CHAINS["zfnet_like"]
    model = to_float16(chain_model(specs, shape))
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype(np.float16)
    agree(Projector(model, rule="guided", device="cpu"), x)


def test_window_is_smaller_than_the_map() -> None:
    specs, shape = CHAINS["zfnet_like"]
    projector = Projector(chain_model(specs, shape), layer="relu7", device="cpu")
    assert projector.windowed is not None
    plan, _ = projector.windowed
    transposes = [n for n in plan.model.graph.node if n.op_type == "ConvTranspose"]
    # Window sizes by hand, from relu7 (1x1) back: conv6 (3x3, stride 1) -> 3; maxpool5 (3/2)
    # -> (3-1)*2+3 = 7; conv3 (3x3/2) -> (7-1)*2+3 = 15; maxpool2 (3/2) -> 31; conv0 (5x5/2)
    # -> (31-1)*2+5 = 65, under half of the 97x89 image.
    session_model = onnx.shape_inference.infer_shapes(plan.model)
    sizes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][2:]
        for v in session_model.graph.value_info
    }
    assert [sizes[n.output[0]] for n in transposes] == [[3, 3], [15, 15], [65, 65]]


def test_paths_that_are_not_chains_stay_dense() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="c", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="r"),
        helper.make_node("Add", ["r", "c"], ["y"], name="add"),
    ]
    w = np.random.default_rng(0).normal(size=(2, 2, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "fanout",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    model = onnx.shape_inference.infer_shapes(model)
    projector = Projector(model, layer="y", device="cpu")
    assert projector.windowed is None
    result = projector.forward(np.ones((1, 2, 8, 8), np.float32))
    picks = projector.strongest(result, top=2)
    assert projector.project(result, picks).shape == (2, 2, 8, 8)


def test_fixed_batch_model_runs_a_short_last_chunk() -> None:
    from helpers import conv_relu_pool_model

    x = np.random.default_rng(3).normal(size=(3, 3, 16, 16)).astype(np.float32)
    results = []
    for batch in (2, "N"):
        projector = Projector(conv_relu_pool_model(batch=batch), layer="pool", device="cpu")
        forward = projector.forward(x)
        picks = projector.strongest(forward, top=2, image=2)
        results.append((forward.activations, projector.project(forward, picks)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
