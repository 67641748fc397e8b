"""The fast forms of the deconv graph's transposes give what the previous forms gave.

A stride-1 Conv is transposed by a Conv where :func:`transpose_as_conv` applies; there, the
result must equal the ConvTranspose of :func:`transpose_window` (the previous form) up to float
summation order, and so must whole projections (through max pools whose windows hold tied
maxima).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector
from onnxdeconv.deconv.emitter import PROJECTION, SIGNAL, DeconvGraph
from onnxdeconv.deconv.rules import conv as conv_rules
from onnxdeconv.deconv.rules.spatial import Window, transpose_as_conv, transpose_window
from onnxdeconv.runtime import ForwardRunner

RELATIVE = 1e-5


def out_size(size: int, kernel: int, stride: int, begin: int, end: int, dilation: int) -> int:
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def transposed(
    signal: np.ndarray,
    weight: np.ndarray,
    window: Window,
    in_shape: tuple[int, ...],
    group: int,
    fast: bool,
) -> np.ndarray | None:
    """Run one transpose as a graph: the fast form, or the ConvTranspose form."""
    graph = DeconvGraph(signal.shape[1:], {})
    out_spatial = signal.shape[2:]
    tied = graph.const(weight, "w")
    if fast:
        result = transpose_as_conv(
            graph, SIGNAL, tied, weight.shape, window, in_shape, out_spatial, group
        )
        if result is None:
            return None
    else:
        result = transpose_window(graph, SIGNAL, tied, window, in_shape, out_spatial, group)
    model = graph.to_model(result, in_shape)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([PROJECTION], {SIGNAL: signal})[0])


CASES = [
    # (in channels, out channels, size, kernel, stride, pads begin, pads end, dilation, group)
    (4, 6, 13, 3, 1, 1, 1, 1, 1),
    (4, 6, 13, 3, 1, 0, 2, 1, 1),  # asymmetric
    (3, 5, 12, 4, 1, 1, 2, 1, 1),  # even kernel
    (4, 4, 12, 3, 1, 2, 2, 2, 1),  # dilation
    (4, 8, 12, 3, 1, 1, 1, 1, 2),  # groups
    (4, 4, 12, 3, 1, 1, 1, 1, 4),  # depthwise
    (6, 6, 11, 1, 1, 0, 0, 1, 1),  # 1x1 (fire modules)
    (3, 5, 9, 5, 1, 0, 0, 1, 1),  # no pads
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_transpose_as_conv_equals_conv_transpose(case: tuple[int, ...]) -> None:
    channels, maps, size, kernel, stride, begin, end, dilation, group = case
    rng = np.random.default_rng(sum(case))
    weight = rng.standard_normal((maps, channels // group, kernel, kernel)).astype(np.float32)
    out = out_size(size, kernel, stride, begin, end, dilation)
    window = Window((kernel,) * 2, (stride,) * 2, (dilation,) * 2, (begin,) * 2, (end,) * 2)
    signal = rng.standard_normal((3, maps, out, out)).astype(np.float32)
    in_shape = (channels, size, size)
    fast = transposed(signal, weight, window, in_shape, group, fast=True)
    slow = transposed(signal, weight, window, in_shape, group, fast=False)
    assert fast is not None and slow is not None
    assert fast.shape == slow.shape == (3, *in_shape)
    assert np.abs(fast - slow).max() <= RELATIVE * np.abs(slow).max()


def test_transpose_as_conv_declines_what_it_does_not_cover() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    graph = DeconvGraph((4, 5, 5), {})
    cases = [
        (Window((3, 3), (2, 2), (1, 1), (0, 0), (0, 0)), 1),  # strided: stays a ConvTranspose
        (Window((3, 3), (1, 2), (1, 1), (1, 1), (1, 1)), 1),  # strided along one axis
        (Window((3, 3), (1, 1), (1, 1), (3, 3), (3, 3)), 1),  # pads past the kernel
    ]
    for window, group in cases:
        channels = 2 * group
        in_shape = (channels, 11, 11)
        fast = transpose_as_conv(graph, SIGNAL, "w", weight.shape, window, in_shape, (5, 5), group)
        assert fast is None


# --------------------------------------------------------------------------------------------
# Whole projections through overlapping, padded, ceil-mode pools with ties, against the
# previous graphs
# --------------------------------------------------------------------------------------------

POOLS = [
    # (kernel, stride, pads, ceil_mode)
    (3, 2, (1, 1, 1, 1), 0),
    (3, 2, (0, 0, 0, 0), 1),
    (2, 2, (0, 0, 0, 0), 0),
    (3, 1, (1, 0, 0, 1), 0),
    (3, 3, (0, 0, 0, 0), 1),
    (2, 1, (0, 0, 0, 0), 0),
    (3, 3, (1, 1, 1, 1), 0),
    (2, 3, (1, 0, 1, 0), 1),
]


def pool_model(kernel: int, stride: int, pads: tuple[int, ...], ceil: int) -> onnx.ModelProto:
    """x [N, 3, 11, 13] -> Conv(4, 3x3, pad 1, constant weights) -> Relu -> MaxPool -> Conv(2).

    The convolutions have integer weights, so integer inputs give exact ties in the pool.
    """
    rng = np.random.default_rng(kernel * 100 + stride * 10 + ceil)
    first = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.float32)
    second = rng.integers(-2, 3, size=(2, 4, 2, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node(
            "MaxPool",
            ["relu"],
            ["pool"],
            name="pool",
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=list(pads),
            ceil_mode=ceil,
        ),
        helper.make_node("Conv", ["pool", "w2"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 11, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "h", "w"])],
        initializer=[numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def tied_inputs(count: int, seed: int) -> np.ndarray:
    """Small integers: many equal values, so that windows hold several maxima."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, size=(count, 3, 11, 13)).astype(np.float32)


def tied_windows(
    prepared: Any, x: np.ndarray, kernel: int, stride: int, pads: tuple[int, ...], ceil: int
) -> int:
    """How many pooling windows of ``x``'s forward pass hold their maximum more than once."""
    relu = ForwardRunner(prepared, expose=["relu"], device="cpu").run(x, ["relu"])["relu"]
    padded = np.pad(
        relu,
        ((0, 0), (0, 0), (pads[0], pads[2] + stride), (pads[1], pads[3] + stride)),
        constant_values=-np.inf,
    )
    # The pool's own windows only, not those that the extra end padding adds.
    out_h, out_w = prepared.info["pool"].shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :out_h, :out_w]
    flat = windows.reshape(*windows.shape[:4], kernel * kernel)
    best = flat.max(axis=-1, keepdims=True)
    return int(((flat == best).sum(axis=-1) > 1).sum())


@pytest.mark.parametrize("pool", POOLS, ids=[str(p) for p in POOLS])
def test_projections_equal_the_previous_graphs(
    pool: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = pool_model(*pool)
    x = tied_inputs(2, sum(pool[:2]) + 1)
    projections = []
    for previous in (False, True):
        if previous:
            monkeypatch.setattr(conv_rules, "transpose_as_conv", lambda *args: None)
        projector = Projector(model, layer="y", device="cpu")
        if not previous:
            assert any(node.op_type == "Conv" for node in projector.plan.model.graph.node)
        else:
            assert all(node.op_type != "Conv" for node in projector.plan.model.graph.node)
        forward = projector.forward(x)
        picks = [p for image in (0, 1) for p in projector.strongest(forward, top=2, image=image)]
        projections.append(projector.project(forward, picks))
    new, old = projections
    assert tied_windows(projector.prepared, x, *pool) > 0
    assert np.abs(old).max() > 0
    assert np.abs(new - old).max() <= RELATIVE * np.abs(old).max()
