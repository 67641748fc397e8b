"""Cases for tests/test_rules.py: tiny models per transpose rule, with independent expectations.

Two tables keyed by op type drive the tests and the coverage meta-test:

* :data:`GOLDEN` -- a model, an input, a signal at the layer and the expected projection. The
  expectation is a hand-written literal or a plain numpy loop written here (never the library).
* :data:`ADJOINT` -- a model whose map from the input to the layer is linear (or linear given its
  switches / rectifier mask, or affine with ``affine=True``); the test checks
  ``<f(x), y> = <x, deconv(y)>``.

:data:`NONLINEAR` lists rules that are not adjoint-testable in every mode, with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
F32 = np.float32


# --------------------------------------------------------------------------------------------
# Model building
# --------------------------------------------------------------------------------------------


def node(
    op: str, inputs: Sequence[str], outputs: Sequence[str] = ("y",), name: str = "", **attrs: Any
) -> onnx.NodeProto:
    """A node named ``name`` (default: ``<op>_<first output>``)."""
    return helper.make_node(
        op, list(inputs), list(outputs), name=name or f"{op}_{outputs[0]}", **attrs
    )


def _tensor(name: str, value: Any) -> onnx.TensorProto:
    array = np.asarray(value)
    if array.dtype.kind == "f":
        array = array.astype(F32)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    return numpy_helper.from_array(array, name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    x_shape: Sequence[int],
    inits: Mapping[str, Any] | None = None,
    *,
    outputs: Sequence[str] = ("y",),
    batch: int | str = "N",
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Input ``x`` of shape ``[batch, *x_shape]`` float32, the given nodes and initializers."""
    graph = helper.make_graph(
        list(nodes),
        "rule_case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *x_shape])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[_tensor(k, v) for k, v in (inits or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rule_cases")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    # The checker wants output shapes: let shape inference fill them in.
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with a float16 input, outputs and float initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for value in [*out.graph.input, *out.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    for index, tensor in enumerate(out.graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            half = numpy_helper.to_array(tensor).astype(np.float16)
            out.graph.initializer[index].CopyFrom(numpy_helper.from_array(half, tensor.name))
    return onnx.shape_inference.infer_shapes(out, strict_mode=True)


def one_node(
    op: str,
    x_shape: Sequence[int],
    inits: Mapping[str, Any] | None = None,
    extra_inputs: Sequence[str] = (),
    **attrs: Any,
) -> onnx.ModelProto:
    """``y = op(x, *extra_inputs)``."""
    return make_model([node(op, ["x", *extra_inputs], ["y"], **attrs)], x_shape, inits)


def arr(value: Any) -> np.ndarray:
    """A float32 array."""
    return np.asarray(value, dtype=F32)


def rand(seed: int, *shape: int) -> np.ndarray:
    """Standard normal float32 data."""
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


# --------------------------------------------------------------------------------------------
# Independent references (plain loops over positions; no library code)
# --------------------------------------------------------------------------------------------


def window_positions(
    out_index: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads_begin: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(kernel offset, input position) pairs of one output's window, padding included."""
    pairs = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        position = tuple(
            o * s - p + k * d
            for o, s, p, k, d in zip(out_index, strides, pads_begin, offset, dilations, strict=True)
        )
        pairs.append((offset, position))
    return pairs


def inside(position: Sequence[int], size: Sequence[int]) -> bool:
    return all(0 <= p < n for p, n in zip(position, size, strict=True))


def ref_conv_transpose(
    signal: np.ndarray,
    weight: np.ndarray,
    in_spatial: Sequence[int],
    strides: Sequence[int],
    pads_begin: Sequence[int],
    dilations: Sequence[int] | None = None,
    group: int = 1,
) -> np.ndarray:
    """The adjoint of Conv: every output spreads ``signal * w`` back onto its window."""
    rank = len(in_spatial)
    dilations = dilations or [1] * rank
    k_rows, out_channels = signal.shape[:2]
    per_group_in = weight.shape[1]
    per_group_out = out_channels // group
    result = np.zeros((k_rows, per_group_in * group, *in_spatial), np.float64)
    kernel = weight.shape[2:]
    for m in range(out_channels):
        g = m // per_group_out
        for out_index in np.ndindex(*signal.shape[2:]):
            for offset, pos in window_positions(out_index, kernel, strides, pads_begin, dilations):
                if not inside(pos, in_spatial):
                    continue
                for c_local in range(per_group_in):
                    c = g * per_group_in + c_local
                    result[(slice(None), c, *pos)] += (
                        signal[(slice(None), m, *out_index)] * weight[(m, c_local, *offset)]
                    )
    return result.astype(F32)


def ref_maxpool_transpose(
    x: np.ndarray,
    signal: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads_begin: Sequence[int],
    dilations: Sequence[int] | None = None,
) -> np.ndarray:
    """Route each output's signal to the (first) maximum of its window, adding on collisions.

    ``x`` is one sample ``[C, *in]``; ``signal`` is ``[K, C, *out]`` (every row uses ``x``).
    """
    dilations = dilations or [1] * len(kernel)
    in_spatial = x.shape[1:]
    result = np.zeros((signal.shape[0], *x.shape), np.float64)
    for c in range(x.shape[0]):
        for out_index in np.ndindex(*signal.shape[2:]):
            best, where = -math.inf, None
            for _, pos in window_positions(out_index, kernel, strides, pads_begin, dilations):
                if inside(pos, in_spatial) and x[(c, *pos)] > best:
                    best, where = x[(c, *pos)], pos
            assert where is not None
            result[(slice(None), c, *where)] += signal[(slice(None), c, *out_index)]
    return result.astype(F32)


def ref_avgpool_transpose(
    signal: np.ndarray,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads_begin: Sequence[int],
    pads_end: Sequence[int],
    count_include_pad: int,
) -> np.ndarray:
    """Spread each output's signal over its window, divided by the window's element count.

    The count is that of ONNX Runtime and PyTorch: real elements only (``count_include_pad=0``),
    or the window clipped to the padded input (``1``), so a ceil-mode window that runs past the
    end padding counts only up to it.
    """
    result = np.zeros((*signal.shape[:2], *in_spatial), np.float64)
    for out_index in np.ndindex(*signal.shape[2:]):
        positions = [
            pos
            for _, pos in window_positions(
                out_index, kernel, strides, pads_begin, [1] * len(kernel)
            )
        ]
        real = [p for p in positions if inside(p, in_spatial)]
        if count_include_pad:
            count = sum(
                all(
                    -b <= q < n + e
                    for q, n, b, e in zip(p, in_spatial, pads_begin, pads_end, strict=True)
                )
                for p in positions
            )
        else:
            count = len(real)
        for pos in real:
            result[(slice(None), slice(None), *pos)] += (
                signal[(slice(None), slice(None), *out_index)] / count
            )
    return result.astype(F32)


# --------------------------------------------------------------------------------------------
# Case types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenCase:
    """Project ``signal`` at ``layer`` of ``model`` for inputs ``x``; expect ``expected``."""

    id: str
    model: onnx.ModelProto
    x: np.ndarray
    signal: np.ndarray
    expected: np.ndarray
    mode: str = "deconvnet"
    layer: str = "y"
    images: tuple[int, ...] | None = None


@dataclass(frozen=True)
class AdjointCase:
    """A model whose map x -> layer is linear (given switches/masks) or affine (``affine``)."""

    id: str
    model: onnx.ModelProto
    x_shape: tuple[int, ...]
    mode: str = "gradient"
    layer: str = "y"
    affine: bool = False


def batch1(*rows: Any) -> np.ndarray:
    """Literal arrays stacked as a batch (rows are per-sample arrays)."""
    return np.stack([arr(r) for r in rows])


# --------------------------------------------------------------------------------------------
# Golden cases
# --------------------------------------------------------------------------------------------


def _golden_conv() -> list[GoldenCase]:
    cases = []
    w = arr([[[[1, 2], [3, 4]]]])  # [M=1, C=1, 2, 2]
    model = one_node("Conv", (1, 3, 3), {"w": w}, ["w"])
    cases.append(
        GoldenCase(
            "conv_2x2_single_tap",
            model,
            rand(0, 1, 1, 3, 3),
            signal=batch1([[[1, 0], [0, 0]]]),
            expected=batch1([[[1, 2, 0], [3, 4, 0], [0, 0, 0]]]),
        )
    )
    cases.append(
        GoldenCase(
            "conv_2x2_overlap_adds",
            model,
            rand(1, 1, 1, 3, 3),
            signal=batch1([[[1, 1], [0, 0]]]),
            expected=batch1([[[1, 3, 2], [3, 7, 4], [0, 0, 0]]]),
        )
    )
    # Bias is ignored by the transpose.
    cases.append(
        GoldenCase(
            "conv_bias_ignored",
            one_node("Conv", (1, 3, 3), {"w": w, "b": arr([100.0])}, ["w", "b"]),
            rand(2, 1, 1, 3, 3),
            signal=batch1([[[0, 0], [0, 1]]]),
            expected=batch1([[[0, 0, 0], [0, 1, 2], [0, 3, 4]]]),
        )
    )
    # 1-D, stride 2, pads (1, 0): y0 = 2 x0 + 3 x1 (+ 1 * pad), y1 = x1 + 2 x2 + 3 x3.
    w1 = arr([[[1, 2, 3]]])
    cases.append(
        GoldenCase(
            "conv1d_stride2_pad_begin",
            one_node("Conv", (1, 5), {"w": w1}, ["w"], strides=[2], pads=[1, 0]),
            rand(3, 1, 1, 5),
            signal=batch1([[1, 10]]),
            expected=batch1([[2, 13, 20, 30, 0]]),
        )
    )
    # pads (0, 2): y = [x0+2x1+3x2, x2+2x3+3x4, x4 (+ pads)].
    cases.append(
        GoldenCase(
            "conv1d_stride2_pad_end",
            one_node("Conv", (1, 5), {"w": w1}, ["w"], strides=[2], pads=[0, 2]),
            rand(4, 1, 1, 5),
            signal=batch1([[1, 10, 100]]),
            expected=batch1([[1, 2, 13, 20, 130]]),
        )
    )
    # 2-D, stride 2, asymmetric pads, two groups, against the loop reference.
    w2 = rand(5, 4, 1, 3, 2)
    sig = rand(6, 2, 4, 4, 3)
    model = one_node(
        "Conv", (2, 6, 5), {"w": w2}, ["w"], strides=[2, 2], pads=[1, 0, 2, 1], group=2
    )
    cases.append(
        GoldenCase(
            "conv2d_stride2_asym_pads_group2",
            model,
            rand(7, 2, 2, 6, 5),
            signal=sig,
            expected=ref_conv_transpose(sig, w2, (6, 5), (2, 2), (1, 0), group=2),
        )
    )
    # Dilation 2, stride 1, symmetric pads, depthwise.
    w3 = rand(8, 3, 1, 2, 3)
    model = one_node(
        "Conv", (3, 5, 7), {"w": w3}, ["w"], dilations=[2, 2], pads=[1, 2, 1, 2], group=3
    )
    sig = rand(9, 1, 3, 5, 7)
    cases.append(
        GoldenCase(
            "conv2d_dilated_depthwise",
            model,
            rand(10, 1, 3, 5, 7),
            signal=sig,
            expected=ref_conv_transpose(sig, w3, (5, 7), (1, 1), (1, 2), (2, 2), group=3),
        )
    )
    return cases


def _golden_maxpool() -> list[GoldenCase]:
    cases = []
    # 3x3 stride 2 on 5x5: all four windows contain the centre maximum, so all four outputs
    # pick (2, 2); their signals must add (MaxUnpool would keep only one of them).
    x = np.arange(25, dtype=F32).reshape(1, 1, 5, 5) / 100
    x[0, 0, 2, 2] = 9
    model = one_node("MaxPool", (1, 5, 5), kernel_shape=[3, 3], strides=[2, 2])
    expected = np.zeros((1, 1, 5, 5), F32)
    expected[0, 0, 2, 2] = 1 + 2 + 3 + 4
    cases.append(
        GoldenCase(
            "maxpool_3x3s2_shared_max_adds",
            model,
            x,
            signal=batch1([[[1, 2], [3, 4]]]),
            expected=expected,
        )
    )
    # Two outputs share a maximum, the other two have their own.
    x2 = arr(
        [[[[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 5, 0, 7], [0, 0, 0, 0, 0], [0, 6, 0, 0, 0]]]]
    )
    expected2 = np.zeros((1, 1, 5, 5), F32)
    expected2[0, 0, 2, 2] = 1  # window (0, 0) only
    expected2[0, 0, 2, 4] = 2 + 4  # windows (0, 1) and (1, 1)
    expected2[0, 0, 4, 1] = 3  # window (1, 0)
    cases.append(
        GoldenCase(
            "maxpool_3x3s2_partly_shared",
            model,
            x2,
            signal=batch1([[[1, 2], [3, 4]]]),
            expected=expected2,
        )
    )
    # 1-D, kernel 3 stride 2 pads (1, 1), ceil_mode: windows [-1..1] [1..3] [3..5] [5..7];
    # maxima at 0, 2, 5, 5 (the last window is mostly padding and overhang).
    x3 = arr([[[3, 1, 4, 1, 5, 9]]])
    cases.append(
        GoldenCase(
            "maxpool1d_pads_ceil_mode",
            one_node("MaxPool", (1, 6), kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
            x3,
            signal=batch1([[1, 2, 3, 4]]),
            expected=batch1([[1, 0, 2, 0, 0, 7]]),
        )
    )
    # 2-D with pads, ceil mode and two images picked explicitly, against the loop reference.
    xs = rand(11, 2, 2, 6, 7)
    model = one_node(
        "MaxPool", (2, 6, 7), kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1
    )
    sig = rand(12, 3, 2, 3, 4)
    images = (1, 0, 1)
    expected3 = np.concatenate(
        [
            ref_maxpool_transpose(xs[i], sig[k : k + 1], (3, 2), (2, 2), (1, 0))
            for k, i in enumerate(images)
        ]
    )
    cases.append(
        GoldenCase(
            "maxpool2d_pads_ceil_images",
            model,
            xs,
            signal=sig,
            expected=expected3,
            images=images,
        )
    )
    # Dilations.
    xd = rand(13, 1, 1, 7, 7)
    sig = rand(14, 1, 1, 3, 3)
    cases.append(
        GoldenCase(
            "maxpool2d_dilated",
            one_node(
                "MaxPool",
                (1, 7, 7),
                kernel_shape=[3, 3],
                strides=[2, 2],
                dilations=[2, 2],
                pads=[1, 1, 1, 1],
            ),
            xd,
            signal=sig,
            expected=ref_maxpool_transpose(xd[0], sig, (3, 3), (2, 2), (1, 1), (2, 2)),
        )
    )
    return cases


def _golden_relu() -> list[GoldenCase]:
    x = arr([[[[-1, 2, 0], [3, -4, 1]]]])
    signal = batch1([[[5, 6, 9], [-7, 8, -2]]])
    model = one_node("Relu", (1, 2, 3))
    expected = {
        # relu(signal), whatever x was
        "deconvnet": batch1([[[5, 6, 9], [0, 8, 0]]]),
        # relu(signal) * (x > 0)
        "guided": batch1([[[0, 6, 0], [0, 0, 0]]]),
        # signal * (x > 0)
        "gradient": batch1([[[0, 6, 0], [-7, 0, -2]]]),
    }
    cases = [
        GoldenCase(f"relu_{mode}", model, x, signal, out, mode=mode)
        for mode, out in expected.items()
    ]
    # Masks follow the chosen images.
    x2 = np.stack([arr([[[1, -1]]]), arr([[[-1, 1]]])])  # [2, 1, 1, 2]
    signal2 = np.stack([arr([[[3, -5]]])] * 3)
    cases.append(
        GoldenCase(
            "relu_gradient_images",
            one_node("Relu", (1, 1, 2)),
            x2,
            signal2,
            np.stack([arr([[[0, -5]]]), arr([[[3, 0]]]), arr([[[0, -5]]])]),
            mode="gradient",
            images=(1, 0, 1),
        )
    )
    cases.append(
        GoldenCase(
            "relu_guided_images",
            one_node("Relu", (1, 1, 2)),
            x2,
            signal2,
            np.stack([arr([[[0, 0]]]), arr([[[3, 0]]]), arr([[[0, 0]]])]),
            mode="guided",
            images=(1, 0, 1),
        )
    )
    return cases


def _golden_average_pool() -> list[GoldenCase]:
    cases = []
    # 1-D, kernel 3 stride 1 pads (1, 1) on 4: windows hold 2, 3, 3, 2 real elements.
    attrs = {"kernel_shape": [3], "pads": [1, 1]}
    cases.append(
        GoldenCase(
            "avgpool1d_pads_exclude_pad",
            one_node("AveragePool", (1, 4), count_include_pad=0, **attrs),
            rand(20, 1, 1, 4),
            signal=batch1([[3, 3, 6, 3]]),
            # dx0 = 3/2 + 3/3, dx1 = 3/2 + 3/3 + 6/3, dx2 = 3/3 + 6/3 + 3/2, dx3 = 6/3 + 3/2
            expected=batch1([[2.5, 4.5, 4.5, 3.5]]),
        )
    )
    cases.append(
        GoldenCase(
            "avgpool1d_pads_include_pad",
            one_node("AveragePool", (1, 4), count_include_pad=1, **attrs),
            rand(21, 1, 1, 4),
            signal=batch1([[3, 3, 6, 3]]),
            expected=batch1([[2, 4, 4, 3]]),
        )
    )
    # 1-D ceil mode, kernel 2 stride 2 on 5: windows [0,1] [2,3] [4] (one element).
    for cip in (0, 1):
        cases.append(
            GoldenCase(
                f"avgpool1d_ceil_mode_cip{cip}",
                one_node(
                    "AveragePool",
                    (1, 5),
                    kernel_shape=[2],
                    strides=[2],
                    ceil_mode=1,
                    count_include_pad=cip,
                ),
                rand(22, 1, 1, 5),
                signal=batch1([[2, 4, 3]]),
                expected=batch1([[1, 1, 2, 2, 3]]),
            )
        )
    # 1-D ceil mode with an end pad, count_include_pad=1: the last window [4, pad, beyond]
    # counts 2 (clipped to the padded input), as measured on ONNX Runtime.
    cases.append(
        GoldenCase(
            "avgpool1d_ceil_pad_cip1",
            one_node(
                "AveragePool",
                (1, 5),
                kernel_shape=[3],
                strides=[2],
                pads=[0, 1],
                ceil_mode=1,
                count_include_pad=1,
            ),
            rand(23, 1, 1, 5),
            signal=batch1([[3, 6, 4]]),
            # windows [0..2] /3, [2..4] /3, [4, pad] /2
            expected=batch1([[1, 1, 3, 2, 4]]),
        )
    )
    # 2-D against the loop reference.
    for cip in (0, 1):
        sig = rand(24 + cip, 2, 2, 4, 3)
        cases.append(
            GoldenCase(
                f"avgpool2d_asym_pads_ceil_cip{cip}",
                one_node(
                    "AveragePool",
                    (2, 7, 5),
                    kernel_shape=[3, 2],
                    strides=[2, 2],
                    pads=[1, 0, 0, 1],
                    ceil_mode=1,
                    count_include_pad=cip,
                ),
                rand(26, 2, 2, 7, 5),
                signal=sig,
                expected=ref_avgpool_transpose(sig, (7, 5), (3, 2), (2, 2), (1, 0), (0, 1), cip),
            )
        )
    return cases


def _golden_global_average_pool() -> list[GoldenCase]:
    return [
        GoldenCase(
            "gap2d",
            one_node("GlobalAveragePool", (2, 2, 2)),
            rand(30, 1, 2, 2, 2),
            signal=batch1([[[4]], [[8]]]),
            expected=batch1([[[1, 1], [1, 1]], [[2, 2], [2, 2]]]),
        ),
        GoldenCase(
            "gap1d",
            one_node("GlobalAveragePool", (1, 3)),
            rand(31, 1, 1, 3),
            signal=batch1([[6]]),
            expected=batch1([[2, 2, 2]]),
        ),
    ]


def _golden_reduce_mean() -> list[GoldenCase]:
    # Mean over H and W of a 2x2 map: each of the 4 inputs gets a quarter of the signal.
    return [
        GoldenCase(
            "reducemean_hw_keepdims",
            one_node("ReduceMean", (2, 2, 2), axes=[2, 3], keepdims=1),
            rand(60, 1, 2, 2, 2),
            signal=batch1([[[4]], [[-8]]]),
            expected=batch1([[[1, 1], [1, 1]], [[-2, -2], [-2, -2]]]),
        ),
        GoldenCase(
            "reducemean_w_dropped",
            one_node("ReduceMean", (1, 2, 3), axes=[-1], keepdims=0),
            rand(61, 1, 1, 2, 3),
            signal=batch1([[3, 6]]),
            expected=batch1([[[1, 1, 1], [2, 2, 2]]]),
        ),
    ]


def _golden_batch_normalization() -> list[GoldenCase]:
    # slope = gamma / sqrt(var + eps) = [2 / 2, 6 / 3] = [1, 2]; mean and beta do not matter.
    inits = {"g": arr([2, 6]), "b": arr([10, -10]), "m": arr([5, 7]), "v": arr([3.75, 8.75])}
    model = one_node("BatchNormalization", (2, 1, 2), inits, ["g", "b", "m", "v"], epsilon=0.25)
    return [
        GoldenCase(
            "batchnorm",
            model,
            rand(32, 1, 2, 1, 2),
            signal=batch1([[[1, 2]], [[3, 4]]]),
            expected=batch1([[[1, 2]], [[6, 8]]]),
        )
    ]


def _gemm_model(b: np.ndarray, **attrs: Any) -> onnx.ModelProto:
    return make_model(
        [node("Flatten", ["x"], ["flat"]), node("Gemm", ["flat", "b", "c"], ["y"], **attrs)],
        (1, 2),
        {"b": b, "c": arr([100, 200, 300])},
    )


def _golden_gemm() -> list[GoldenCase]:
    b = arr([[1, 2, 3], [4, 5, 6]])
    # d/dA (alpha A B + C) applied to s = alpha * B s = 2 * [1 - 3, 4 - 6] = [-4, -4].
    return [
        GoldenCase(
            "gemm_alpha2",
            _gemm_model(b, alpha=2.0),
            rand(33, 1, 1, 2),
            signal=arr([[1, 0, -1]]),
            expected=arr([[[-4, -4]]]),
        ),
        GoldenCase(
            "gemm_transB",
            _gemm_model(b.T.copy(), transB=1),
            rand(34, 1, 1, 2),
            signal=arr([[1, 0, -1]]),
            expected=arr([[[-2, -2]]]),
        ),
    ]


def _golden_matmul() -> list[GoldenCase]:
    w = arr([[1, 2, 3], [4, 5, 6]])
    return [
        GoldenCase(
            "matmul",
            one_node("MatMul", (2, 2), {"w": w}, ["w"]),
            rand(35, 1, 2, 2),
            signal=batch1([[1, 0, -1], [0, 1, 0]]),
            expected=batch1([[-2, -2], [2, 5]]),
        )
    ]


def _golden_add() -> list[GoldenCase]:
    # y = x + mean(x): the mean branch spreads sum(s) / 4 back over the 2x2 map.
    model = make_model(
        [node("GlobalAveragePool", ["x"], ["mean"]), node("Add", ["x", "mean"], ["y"])],
        (1, 2, 2),
    )
    return [
        GoldenCase(
            "add_broadcast_two_paths",
            model,
            rand(36, 1, 1, 2, 2),
            signal=batch1([[[1, 2], [3, 6]]]),
            expected=batch1([[[4, 5], [6, 9]]]),
        ),
        GoldenCase(
            "add_constant",
            one_node("Add", (1, 2), {"c": arr([[[7, 8]]])}, ["c"]),
            rand(37, 1, 1, 2),
            signal=batch1([[1, -2]]),
            expected=batch1([[1, -2]]),
        ),
        GoldenCase(
            "add_same_tensor_twice",
            make_model([node("Add", ["x", "x"], ["y"])], (1, 2)),
            rand(38, 1, 1, 2),
            signal=batch1([[1, -2]]),
            expected=batch1([[2, -4]]),
        ),
    ]


def _golden_concat() -> list[GoldenCase]:
    const = arr([[[[9, 9], [9, 9]]]])  # batch 1, so the model has a fixed batch of 1
    signal = batch1([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    first = make_model(
        [node("Concat", ["x", "c"], ["y"], axis=1)], (1, 2, 2), {"c": const}, batch=1
    )
    second = make_model(
        [node("Concat", ["c", "x"], ["y"], axis=-3)], (1, 2, 2), {"c": const}, batch=1
    )
    twice = make_model([node("Concat", ["x", "x"], ["y"], axis=3)], (1, 1, 2))
    return [
        GoldenCase(
            "concat_constant_after", first, rand(39, 1, 1, 2, 2), signal, batch1([[[1, 2], [3, 4]]])
        ),
        GoldenCase(
            "concat_constant_before",
            second,
            rand(40, 1, 1, 2, 2),
            signal,
            batch1([[[5, 6], [7, 8]]]),
        ),
        GoldenCase(
            "concat_same_tensor_twice",
            twice,
            rand(41, 1, 1, 1, 2),
            batch1([[[1, 2, 30, 40]]]),
            batch1([[[31, 42]]]),
        ),
    ]


def _golden_reshapes() -> dict[str, list[GoldenCase]]:
    six = np.arange(6, dtype=F32)
    return {
        "Flatten": [
            GoldenCase(
                "flatten",
                one_node("Flatten", (2, 1, 2)),
                rand(42, 1, 2, 1, 2),
                arr([[1, 2, 3, 4]]),
                batch1([[[1, 2]], [[3, 4]]]),
            )
        ],
        "Reshape": [
            GoldenCase(
                "reshape",
                one_node("Reshape", (2, 3), {"s": np.array([0, 3, 2])}, ["s"]),
                rand(43, 1, 2, 3),
                six.reshape(1, 3, 2),
                six.reshape(1, 2, 3),
            )
        ],
        "Squeeze": [
            GoldenCase(
                "squeeze",
                one_node("Squeeze", (2, 1, 3), {"a": np.array([2])}, ["a"]),
                rand(44, 1, 2, 1, 3),
                six.reshape(1, 2, 3),
                six.reshape(1, 2, 1, 3),
            )
        ],
        "Unsqueeze": [
            GoldenCase(
                "unsqueeze",
                one_node("Unsqueeze", (2, 3), {"a": np.array([-1])}, ["a"]),
                rand(45, 1, 2, 3),
                six.reshape(1, 2, 3, 1),
                six.reshape(1, 2, 3),
            )
        ],
        "Identity": [
            GoldenCase(
                "identity",
                one_node("Identity", (1, 2)),
                rand(46, 1, 1, 2),
                batch1([[3, -4]]),
                batch1([[3, -4]]),
            )
        ],
        "Dropout": [
            GoldenCase(
                "dropout_with_mask",
                make_model(
                    [node("Dropout", ["x", "r"], ["y", "mask"])],
                    (1, 2),
                    {"r": arr(0.5)},
                    outputs=("y",),
                ),
                rand(47, 1, 1, 2),
                batch1([[3, -4]]),
                batch1([[3, -4]]),
            )
        ],
    }


def _build_golden() -> dict[str, list[GoldenCase]]:
    table = {
        "Conv": _golden_conv(),
        "MaxPool": _golden_maxpool(),
        "Relu": _golden_relu(),
        "AveragePool": _golden_average_pool(),
        "GlobalAveragePool": _golden_global_average_pool(),
        "ReduceMean": _golden_reduce_mean(),
        "BatchNormalization": _golden_batch_normalization(),
        "Gemm": _golden_gemm(),
        "MatMul": _golden_matmul(),
        "Add": _golden_add(),
        "Concat": _golden_concat(),
    }
    table.update(_golden_reshapes())
    return table


# --------------------------------------------------------------------------------------------
# Adjoint cases
# --------------------------------------------------------------------------------------------


def _conv_case(
    case_id: str, x_shape: Sequence[int], w_shape: Sequence[int], seed: int, **attrs: Any
) -> AdjointCase:
    w = rand(seed, *w_shape)
    return AdjointCase(case_id, one_node("Conv", x_shape, {"w": w}, ["w"], **attrs), tuple(x_shape))


def _adjoint_conv() -> list[AdjointCase]:
    cases = []
    channels = 4
    kernels = [(3, 3), (2, 3), (4, 2)]
    groups = [1, 2, channels]
    pads = {"zero": [0, 0, 0, 0], "sym": [1, 1, 1, 1], "asym": [0, 1, 2, 0]}
    seed = 100
    for index, (stride, (pad_id, pad), dilation) in enumerate(
        itertools.product([1, 2, 3], pads.items(), [1, 2])
    ):
        kernel, group = kernels[index % 3], groups[(index // 3) % 3]
        out_channels = 2 * group if group == channels else 6
        seed += 1
        cases.append(
            _conv_case(
                f"conv2d_s{stride}_{pad_id}_d{dilation}_k{kernel[0]}x{kernel[1]}_g{group}",
                (channels, 9, 11),
                (out_channels, channels // group, *kernel),
                seed,
                strides=[stride] * 2,
                pads=pad,
                dilations=[dilation] * 2,
                group=group,
            )
        )
    for auto_pad, stride, kernel in itertools.product(
        ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"], [1, 2, 3], [(2, 3), (4, 4)]
    ):
        seed += 1
        cases.append(
            _conv_case(
                f"conv2d_{auto_pad}_s{stride}_k{kernel[0]}x{kernel[1]}",
                (3, 7, 8),
                (5, 3, *kernel),
                seed,
                auto_pad=auto_pad,
                strides=[stride, stride],
            )
        )
    # ONNX Runtime refuses dilations together with SAME_* auto_pad, so these are not dilated.
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        seed += 1
        cases.append(
            _conv_case(
                f"conv2d_{auto_pad}_depthwise_x2",
                (2, 9, 7),
                (4, 1, 3, 2),
                seed,
                auto_pad=auto_pad,
                strides=[2, 3],
                group=2,
            )
        )
    conv1d = [
        ("conv1d_s1_k2", (3, 11), (4, 3, 2), {}),
        ("conv1d_s2_k5_asym", (3, 11), (4, 3, 5), {"strides": [2], "pads": [2, 0]}),
        ("conv1d_s3_k2_pad_end", (3, 11), (4, 3, 2), {"strides": [3], "pads": [0, 1]}),
        ("conv1d_depthwise_d2", (3, 13), (6, 1, 3), {"group": 3, "dilations": [2], "pads": [1, 1]}),
        ("conv1d_same_lower_s2", (2, 9), (2, 2, 4), {"auto_pad": "SAME_LOWER", "strides": [2]}),
        (
            "conv1d_same_upper_s3",
            (2, 10),
            (2, 1, 3),
            {"auto_pad": "SAME_UPPER", "strides": [3], "group": 2},
        ),
    ]
    for case_id, x_shape, w_shape, attrs in conv1d:
        seed += 1
        cases.append(_conv_case(case_id, x_shape, w_shape, seed, **attrs))
    cases.append(
        _conv_case(
            "conv3d_s2_asym",
            (2, 5, 6, 7),
            (3, 2, 2, 3, 2),
            seed + 1,
            strides=[2, 1, 2],
            pads=[1, 0, 1, 0, 1, 0],
        )
    )
    cases.append(
        _conv_case(
            "conv2d_1x1",
            (3, 5, 5),
            (2, 3, 1, 1),
            seed + 2,
        )
    )
    cases.append(
        _conv_case(
            "conv2d_k_equals_input",
            (2, 5, 4),
            (3, 2, 5, 4),
            seed + 3,
        )
    )
    cases.append(
        _conv_case(
            "conv2d_stride_gt_kernel_pads",
            (2, 10, 9),
            (3, 2, 2, 2),
            seed + 4,
            strides=[3, 4],
            pads=[1, 2, 1, 0],
        )
    )
    # With a bias the map is affine: compare against f(x) - f(0).
    bias_model = one_node(
        "Conv",
        (2, 6, 6),
        {"w": rand(seed + 5, 3, 2, 3, 3), "b": arr([1, -2, 3])},
        ["w", "b"],
        pads=[1, 1, 1, 1],
    )
    cases.append(AdjointCase("conv2d_bias_affine", bias_model, (2, 6, 6), affine=True))
    return cases


def _adjoint_average_pool() -> list[AdjointCase]:
    configs = [
        ("k3s2", (3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2]}),
        ("k3s2_pads", (3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (
            "k3x2_asym_pads",
            (3, 7, 8),
            {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1]},
        ),
        ("k3s2_ceil", (3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (
            "k3s2_pads_ceil",
            (3, 8, 8),
            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
        ),
        ("k2s2_ceil_odd", (2, 7, 5), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        ("k2s3_gaps", (2, 8, 9), {"kernel_shape": [2, 2], "strides": [3, 3]}),
        (
            "same_upper",
            (2, 7, 8),
            {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        ),
        (
            "same_lower",
            (2, 7, 8),
            {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
        ),
        ("valid", (2, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "VALID"}),
        (
            "1d_pads_ceil",
            (2, 11),
            {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1},
        ),
    ]
    cases = []
    for case_id, x_shape, attrs in configs:
        for cip in (0, 1):
            cases.append(
                AdjointCase(
                    f"avgpool_{case_id}_cip{cip}",
                    one_node("AveragePool", x_shape, count_include_pad=cip, **attrs),
                    x_shape,
                )
            )
    return cases


def _adjoint_max_pool() -> list[AdjointCase]:
    configs = [
        ("k3s2_overlap", (2, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}),
        ("k3s2_pads", (2, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("k3s2_ceil", (2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (
            "k2_asym_pads_ceil",
            (2, 7, 6),
            {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1},
        ),
        ("k3s1_dilated", (2, 9, 9), {"kernel_shape": [3, 3], "dilations": [2, 2]}),
        (
            "k2s2_dilated_pads",
            (2, 9, 8),
            {"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 3], "pads": [1, 1, 1, 1]},
        ),
        ("k2s3_gaps", (2, 8, 9), {"kernel_shape": [2, 2], "strides": [3, 3]}),
        (
            "same_upper",
            (2, 7, 8),
            {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        ),
        (
            "same_lower",
            (2, 7, 8),
            {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
        ),
        (
            "1d_pads_ceil",
            (3, 10),
            {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1},
        ),
        ("3d", (2, 4, 5, 5), {"kernel_shape": [2, 3, 3], "strides": [2, 2, 2]}),
    ]
    return [
        AdjointCase(f"maxpool_{case_id}", one_node("MaxPool", x_shape, **attrs), x_shape)
        for case_id, x_shape, attrs in configs
    ]


def _adjoint_small() -> dict[str, list[AdjointCase]]:
    bn = {"g": rand(200, 3), "b": rand(201, 3), "m": rand(202, 3), "v": np.abs(rand(203, 3)) + 0.1}
    fc = rand(204, 12, 5)
    conv_a, conv_b = rand(205, 4, 2, 3, 3), rand(206, 4, 2, 1, 1)
    two_convs = make_model(
        [
            node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
            node("Conv", ["x", "wb"], ["b"]),
            node("Add", ["a", "b"], ["y"]),
        ],
        (2, 5, 6),
        {"wa": conv_a, "wb": conv_b},
    )
    along_w = make_model(
        [
            node("AveragePool", ["x"], ["row_mean"], kernel_shape=[1, 6]),
            node("Add", ["row_mean", "x"], ["y"]),
        ],
        (2, 5, 6),
    )
    along_c = make_model(
        [node("Conv", ["x", "w"], ["one_channel"]), node("Add", ["x", "one_channel"], ["y"])],
        (3, 4, 5),
        {"w": rand(207, 1, 3, 1, 1)},
    )
    concat_conv = make_model(
        [
            node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
            node("Concat", ["a", "x"], ["y"], axis=1),
        ],
        (2, 5, 6),
        {"w": rand(208, 3, 2, 3, 3)},
    )
    concat_three = make_model(
        [node("Relu", ["x"], ["r"]), node("Concat", ["x", "r", "x"], ["y"], axis=2)],
        (2, 3, 4),
    )
    concat_const = make_model(
        [node("Concat", ["c", "x"], ["y"], axis=-1)],
        (2, 3, 4),
        {"c": rand(209, 1, 2, 3, 2)},
        batch=1,
    )
    return {
        "GlobalAveragePool": [
            AdjointCase("gap2d", one_node("GlobalAveragePool", (3, 5, 7)), (3, 5, 7)),
            AdjointCase("gap1d", one_node("GlobalAveragePool", (3, 5)), (3, 5)),
        ],
        "BatchNormalization": [
            AdjointCase(
                "batchnorm2d",
                one_node("BatchNormalization", (3, 4, 5), bn, ["g", "b", "m", "v"]),
                (3, 4, 5),
                affine=True,
            ),
            AdjointCase(
                "batchnorm1d_eps",
                one_node("BatchNormalization", (3, 6), bn, ["g", "b", "m", "v"], epsilon=0.3),
                (3, 6),
                affine=True,
            ),
        ],
        "Gemm": [
            AdjointCase(
                f"gemm_transB{t}_alpha{alpha}",
                make_model(
                    [
                        node("Flatten", ["x"], ["flat"]),
                        node("Gemm", ["flat", "b"], ["y"], transB=t, alpha=alpha),
                    ],
                    (3, 2, 2),
                    {"b": fc.T.copy() if t else fc},
                ),
                (3, 2, 2),
            )
            for t, alpha in [(0, 1.0), (1, 1.0), (0, 0.5), (1, -2.5)]
        ]
        + [
            AdjointCase(
                "gemm_bias_beta_affine",
                make_model(
                    [
                        node("Flatten", ["x"], ["flat"]),
                        node("Gemm", ["flat", "b", "c"], ["y"], beta=3.0, alpha=1.5),
                    ],
                    (3, 2, 2),
                    {"b": fc, "c": rand(210, 5)},
                ),
                (3, 2, 2),
                affine=True,
            )
        ],
        "MatMul": [
            AdjointCase(
                "matmul_rank3", one_node("MatMul", (2, 5), {"w": rand(211, 5, 4)}, ["w"]), (2, 5)
            ),
            AdjointCase(
                "matmul_rank4",
                one_node("MatMul", (3, 4, 5), {"w": rand(212, 5, 2)}, ["w"]),
                (3, 4, 5),
            ),
        ],
        "Add": [
            AdjointCase("add_two_convs", two_convs, (2, 5, 6)),
            AdjointCase("add_broadcast_w", along_w, (2, 5, 6)),
            AdjointCase("add_broadcast_c", along_c, (3, 4, 5)),
            AdjointCase(
                "add_same_tensor_twice",
                make_model([node("Add", ["x", "x"], ["y"])], (2, 3)),
                (2, 3),
            ),
            AdjointCase(
                "add_constant_affine",
                one_node("Add", (2, 3), {"c": rand(213, 2, 3)}, ["c"]),
                (2, 3),
                affine=True,
            ),
        ],
        "Concat": [
            AdjointCase("concat_conv_and_input", concat_conv, (2, 5, 6)),
            AdjointCase("concat_three_axis2", concat_three, (2, 3, 4)),
            AdjointCase("concat_constant_affine", concat_const, (2, 3, 4), affine=True),
        ],
        "Flatten": [
            AdjointCase("flatten", one_node("Flatten", (2, 3, 4)), (2, 3, 4)),
            AdjointCase(
                "flatten_axis2_one_channel", one_node("Flatten", (1, 3, 4), axis=2), (1, 3, 4)
            ),
        ],
        "Reshape": [
            AdjointCase(
                "reshape_copy_batch",
                one_node("Reshape", (2, 3, 4), {"s": np.array([0, 4, -1])}, ["s"]),
                (2, 3, 4),
            ),
            AdjointCase(
                "reshape_minus_one_batch",
                one_node("Reshape", (2, 3, 4), {"s": np.array([-1, 6, 2, 2])}, ["s"]),
                (2, 3, 4),
            ),
        ],
        "Squeeze": [
            AdjointCase(
                "squeeze",
                one_node("Squeeze", (2, 1, 3, 1), {"a": np.array([2, -1])}, ["a"]),
                (2, 1, 3, 1),
            ),
        ],
        "Unsqueeze": [
            AdjointCase(
                "unsqueeze", one_node("Unsqueeze", (2, 3), {"a": np.array([1, 4])}, ["a"]), (2, 3)
            ),
        ],
        "Identity": [AdjointCase("identity", one_node("Identity", (2, 3)), (2, 3))],
        "Dropout": [AdjointCase("dropout", one_node("Dropout", (2, 3)), (2, 3))],
        "Relu": [
            AdjointCase(
                "relu_gradient_mask", one_node("Relu", (3, 4, 5)), (3, 4, 5), mode="gradient"
            ),
        ],
    }


def _adjoint_chain() -> list[AdjointCase]:
    """Positively homogeneous, piecewise linear nets: f(x) = J(x) x holds for the gradient rule."""
    bn = {
        "g": rand(300, 4),
        "beta": np.zeros(4, F32),
        "m": np.zeros(4, F32),
        "v": np.abs(rand(301, 4)) + 0.5,
    }
    inits = {"w1": rand(302, 4, 3, 3, 3), "w2": rand(303, 6, 2, 2, 2), "fc": rand(304, 6, 5), **bn}
    nodes = [
        node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 0, 1, 1]),
        node("BatchNormalization", ["c1", "g", "beta", "m", "v"], ["bn"]),
        node("Relu", ["bn"], ["r1"]),
        node(
            "MaxPool",
            ["r1"],
            ["p1"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        ),
        node("Conv", ["p1", "w2"], ["c2"], group=2, auto_pad="SAME_UPPER"),
        node("Relu", ["c2"], ["r2"]),
        node("Identity", ["r2"], ["r2i"]),
        node("Add", ["r2i", "c2"], ["s"]),
        node("GlobalAveragePool", ["s"], ["g2"]),
        node("Flatten", ["g2"], ["f"]),
        node("Gemm", ["f", "fc"], ["y"]),
    ]
    model = make_model(nodes, (3, 13, 12), inits)
    return [
        AdjointCase("chain_to_gemm", model, (3, 13, 12)),
        AdjointCase("chain_to_pool", model, (3, 13, 12), layer="p1"),
    ]


def _build_adjoint() -> dict[str, list[AdjointCase]]:
    table = {
        "Conv": _adjoint_conv(),
        "AveragePool": _adjoint_average_pool(),
        "MaxPool": _adjoint_max_pool(),
    }
    table.update(_adjoint_small())
    table["ReduceMean"] = [
        AdjointCase(f"reducemean_{name}", one_node("ReduceMean", (3, 4, 5), **attrs), (3, 4, 5))
        for name, attrs in [
            ("hw", {"axes": [2, 3], "keepdims": 1}),
            ("hw_dropped", {"axes": [-2, -1], "keepdims": 0}),
            ("channels", {"axes": [1], "keepdims": 1}),
        ]
    ]
    return table


GOLDEN: dict[str, list[GoldenCase]] = _build_golden()
ADJOINT: dict[str, list[AdjointCase]] = _build_adjoint()
#: Multi-op nets checked with the adjoint identity (not keyed by op, not counted for coverage).
CHAINS: list[AdjointCase] = _adjoint_chain()

#: Rules whose projection is not linear in the signal in some mode, so only golden cases cover
#: those modes; the linear mode has an adjoint case in ADJOINT.
NONLINEAR: dict[str, str] = {
    "Relu": "deconvnet passes relu(signal) and guided relu(signal) * (x > 0): neither is linear "
    "in the signal; the gradient mode (signal * (x > 0)) is covered by ADJOINT",
}


def _merge_extensions() -> None:
    """Add the tables of the ``rule_cases_*.py`` modules next to this one (one per rule family)."""
    import importlib
    import pathlib

    for path in sorted(pathlib.Path(__file__).parent.glob("rule_cases_*.py")):
        module = importlib.import_module(path.stem)
        for table, extra in (
            (GOLDEN, getattr(module, "GOLDEN", {})),
            (ADJOINT, getattr(module, "ADJOINT", {})),
            (NONLINEAR, getattr(module, "NONLINEAR", {})),
        ):
            clash = set(table) & set(extra)
            if clash:
                raise ValueError(f"{path.name} redefines cases for {sorted(clash)}")
            table.update(extra)
        CHAINS.extend(getattr(module, "CHAINS", []))


def missing_coverage(rules: Sequence[str] | set[str]) -> list[str]:
    """Problems with the coverage of ``rules`` by the tables; empty when every rule is covered."""
    problems = []
    for op in sorted(set(rules)):
        if not GOLDEN.get(op):
            problems.append(f"{op}: no golden case")
        if not ADJOINT.get(op) and op not in NONLINEAR:
            problems.append(f"{op}: no adjoint case and not listed in NONLINEAR")
    for table_name, table in (("GOLDEN", GOLDEN), ("ADJOINT", ADJOINT), ("NONLINEAR", NONLINEAR)):
        for op in sorted(set(table) - set(rules)):
            problems.append(f"{op}: in {table_name} but has no rule")
    return problems


#: Ceil-mode pools whose last window would start in the end padding. ONNX Runtime drops that
#: window (as the ONNX spec says from opset 22 on), but ONNX shape inference below opset 22 still
#: counts it, so the layer shape the library infers is one larger than what the forward pass makes.
PHANTOM_WINDOW: list[AdjointCase] = [
    AdjointCase(
        f"{op.lower()}_1d_ceil_window_in_end_pad",
        one_node(op, (2, 11), kernel_shape=[3], strides=[2], pads=[1, 2], ceil_mode=1),
        (2, 11),
    )
    for op in ("AveragePool", "MaxPool")
]


def all_golden() -> list[GoldenCase]:
    return [case for cases in GOLDEN.values() for case in cases]


def all_adjoint() -> list[AdjointCase]:
    return [case for cases in ADJOINT.values() for case in cases] + CHAINS


_merge_extensions()
