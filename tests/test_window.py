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
import onnxruntime as ort
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
    signs = projector.signs(result, selections).reshape(-1, *[1] * len(projector.input_shape))
    dense = signs * projector.project_signal(
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


# --- max-pool ties on flat images ---------------------------------------------------------------

TIES_CHAIN = [
    conv(4, (3, 3), pads=[1, 1, 1, 1]),
    RELU,
    pool((3, 3), strides=[2, 2], pads=[1, 1, 1, 1]),
    conv(6, (3, 3), pads=[1, 1, 1, 1]),
    RELU,
    pool((3, 3), strides=[2, 2], pads=[1, 1, 1, 1]),
    conv(5, (3, 3), pads=[1, 1, 1, 1]),
    RELU,
]


def text_on_white(height: int = 40, width: int = 56) -> np.ndarray:
    """A white page with a few black strokes: large flat areas, as a scanned text line has."""
    page = np.ones((1, 1, height, width), np.float32)
    page[0, 0, 10:30, 8:10] = 0.0  # a vertical stroke
    page[0, 0, 19:21, 8:24] = 0.0  # a horizontal one
    page[0, 0, 10:30, 30:32] = 0.0
    page[0, 0, 10:12, 30:44] = 0.0
    return page


def host(value: np.ndarray | ort.OrtValue) -> np.ndarray:
    return np.asarray(value.numpy() if isinstance(value, ort.OrtValue) else value)


def tied_windows(values: np.ndarray) -> int:
    """How many 3x3/2 windows (padding 1) of a [1, C, H, W] map hold their maximum twice."""
    padded = np.pad(values[0], ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]
    peaks = windows.max(axis=(-2, -1), keepdims=True)
    return int(((windows == peaks).sum(axis=(-2, -1)) > 1).sum())


def test_ort_breaks_max_pool_ties_at_the_first_maximum_of_the_window() -> None:
    # What docs/rules.md says the switches follow (ONNX Runtime on the CPU).
    model = chain_model([pool((3, 3), strides=[2, 2], pads=[1, 1, 1, 1])], (1, 5, 5))
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 2.0  # both in the window of output (1, 1)
    projector = Projector(model, layer="maxpool0", device="cpu")
    forward = projector.forward(x)
    (switches,) = [host(v) for k, v in forward.forward_values.items() if k.endswith("switches")]
    assert switches[0, 0, 1, 1] == 1 * 5 + 2  # (1, 2) comes before (2, 1) in row-major order
    assert switches[0, 0, 0, 0] == 0  # all zeros: the first element of the window


@pytest.mark.parametrize("rule", ["deconvnet", "gradient"])
def test_max_pool_ties_give_stable_projections_windowed_and_dense(rule: str) -> None:
    model = chain_model(TIES_CHAIN, (1, 40, 56), seed=2)
    x = text_on_white()
    prepared = prepare(load_model(model))
    first_relu = Projector(prepared, layer="relu1", device="cpu")
    second_relu = Projector(prepared, layer="relu4", device="cpu")
    # The test means something only if the pools do see ties.
    assert tied_windows(first_relu.forward(x).activations) > 1000  # of 2240
    assert tied_windows(second_relu.forward(x).activations) > 300  # of 840
    windowed = 0
    for layer in prepared.candidates:
        if len(prepared.info[layer].per_sample) < 2:
            continue
        runs = []
        for _ in range(2):  # fresh sessions each time
            projector = Projector(prepared, layer=layer, rule=rule, device="cpu")  # type: ignore[arg-type]
            forward = projector.forward(x)
            spatial = projector.layer_shape[1:]
            picks = projector.strongest(forward, top=3)
            # Positions inside the flat page: a corner and the middle of the blank right side.
            for where in ((0, 0), (spatial[0] // 2, spatial[1] - 2)):
                picks += projector.strongest(forward, channel=1, position=where)
            by_window = projector.project(forward, picks)
            signal = projector.signal(forward, picks)
            signs = projector.signs(forward, picks).reshape(-1, 1, 1, 1)
            dense = signs * projector.project_signal(forward, signal, [p.image for p in picks])
            peak = float(np.abs(dense).max())
            assert peak > 0
            np.testing.assert_allclose(by_window, dense, rtol=0, atol=1e-6 * peak)
            runs.append((forward, by_window, dense))
        (first, window1, dense1), (second, window2, dense2) = runs
        for name, value in first.forward_values.items():
            np.testing.assert_array_equal(
                host(second.forward_values[name]), host(value), err_msg=name
            )
        np.testing.assert_array_equal(window1, window2)
        np.testing.assert_array_equal(dense1, dense2)
        windowed += projector.windowed is not None
    assert windowed >= 4


# --- crops, not pastes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_crops_pasted_equal_the_dense_projections(name: str) -> None:
    """Each crop lies where its unit's receptive field does, and pasted, equals the dense graph."""
    specs, shape = CHAINS[name]
    x = np.random.default_rng(4).normal(size=(2, *shape)).astype(np.float32)
    prepared = prepare(load_model(chain_model(specs, shape)))
    cropped = 0
    for layer in prepared.candidates:
        projector = Projector(prepared, layer=layer, rule="guided", device="cpu")
        spatial = projector.layer_shape[1:]
        if not spatial:
            continue
        forward = projector.forward(x)
        picks = projector.strongest(forward, top=2, image=1)
        for corner in ([0] * len(spatial), [s - 1 for s in spatial]):  # windows past the borders
            picks += projector.strongest(forward, channel=0, position=tuple(corner))
        crops = projector.project_crops(forward, picks)
        signs = projector.signs(forward, picks).reshape(-1, *[1] * len(shape))
        dense = signs * projector.project_signal(
            forward, projector.signal(forward, picks), [p.image for p in picks]
        )
        peak = float(np.abs(dense).max())
        np.testing.assert_allclose(crops.paste(), dense, rtol=0, atol=1e-6 * peak)
        assert crops.offsets.shape == (len(picks), len(shape))
        plan = projector.windowed[0] if projector.windowed else None
        if plan is None or plan.crop is None:
            assert crops.crops.shape[1:] == shape and not crops.offsets.any()
            continue
        cropped += 1
        field = prepared.receptive_fields[layer]
        for row, pick in enumerate(picks):
            box = field.box(pick.position)
            assert box is not None
            # The crop is the unit's receptive field, borders included (zero past them).
            assert [
                (int(o), int(o) + s)
                for o, s in zip(crops.offsets[row, 1:], crops.crops.shape[2:], strict=True)
            ] == [tuple(b) for b in box]
            full_box = ((0, shape[0]), *box)
            expected = np.zeros([end - begin for begin, end in full_box], np.float32)
            inside = tuple(
                slice(max(begin, 0), min(end, size))
                for (begin, end), size in zip(full_box, shape, strict=True)
            )
            where = tuple(
                slice(s.start - begin, s.stop - begin)
                for s, (begin, _) in zip(inside, full_box, strict=True)
            )
            expected[where] = dense[(row, *inside)]
            np.testing.assert_allclose(crops.cut(row, box), expected, rtol=0, atol=1e-6 * peak)
    assert cropped >= 1
