"""The fast forms of the deconv graph's transposes give what the previous forms gave.

A Conv is transposed by Conv nodes where :func:`transpose_as_conv` applies (stride 1, or the
sub-pixel form of a strided ConvTranspose); everywhere it applies, the result must equal the
ConvTranspose of :func:`transpose_window` (the previous form) up to float summation order.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxdeconv.deconv.emitter import PROJECTION, SIGNAL, DeconvGraph
from onnxdeconv.deconv.rules.spatial import Window, transpose_as_conv, transpose_window

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
    if fast:
        result = transpose_as_conv(graph, SIGNAL, weight, window, in_shape, out_spatial, group)
        if result is None:
            return None
    else:
        tied = graph.const(weight, "w")
        result = transpose_window(graph, SIGNAL, tied, window, in_shape, out_spatial, group)
    model = graph.to_model(result, in_shape)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([PROJECTION], {SIGNAL: signal})[0])


CASES = [
    # (in channels, out channels, size, kernel, stride, pads begin, pads end, dilation, group)
    (3, 8, 17, 7, 2, 1, 1, 1, 1),  # ZFNet conv1 shape, odd size
    (4, 6, 16, 5, 2, 0, 0, 1, 1),
    (4, 6, 15, 3, 2, 1, 1, 1, 1),
    (3, 5, 14, 4, 2, 1, 2, 1, 1),  # kernel divisible by the stride, asymmetric pads
    (2, 4, 19, 3, 3, 0, 1, 1, 1),
    (2, 4, 20, 5, 3, 2, 2, 1, 1),
    (2, 3, 13, 2, 2, 0, 0, 1, 1),
    (4, 6, 13, 3, 1, 1, 1, 1, 1),
    (4, 6, 13, 3, 1, 0, 2, 1, 1),  # asymmetric, stride 1
    (4, 4, 12, 3, 1, 2, 2, 2, 1),  # dilation, stride 1
    (4, 8, 12, 3, 1, 1, 1, 1, 2),  # groups, stride 1
    (4, 4, 12, 3, 1, 1, 1, 1, 4),  # depthwise
    (6, 6, 11, 1, 1, 0, 0, 1, 1),  # 1x1 (fire modules)
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
        (Window((3, 3), (2, 2), (2, 2), (0, 0), (0, 0)), 1),  # dilated and strided
        (Window((3, 3), (2, 2), (1, 1), (0, 0), (0, 0)), 2),  # grouped and strided
        (Window((3, 3), (2, 1), (1, 1), (0, 0), (0, 0)), 1),  # unequal strides
        (Window((3, 3), (4, 4), (1, 1), (0, 0), (0, 0)), 1),  # stride past the kernel
        (Window((3, 3), (1, 1), (1, 1), (3, 3), (3, 3)), 1),  # pads past the kernel
    ]
    for window, group in cases:
        channels = 2 * group
        assert (
            transpose_as_conv(graph, SIGNAL, weight, window, (channels, 11, 11), (5, 5), group)
            is None
        )
