"""Rule cases for the linear and structural ops of real exports (merged by ``rule_cases``).

Pad, Slice, Split, Transpose, Tile, Expand, Resize, Upsample and ConvTranspose are linear: each
has golden values (hand-computed literals or a plain numpy loop written here) and adjoint cases.
LRN and InstanceNormalization are linearised at the forward pass: their golden values come from
central differences of a numpy forward pass, and ``test_linear_ops.py`` checks their adjoint
against the model that ``check/linearise/`` linearises.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import rule_cases as rc
from rule_cases import AdjointCase, GoldenCase, arr, batch1, node, one_node, rand

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------


def ref_conv_transpose_transpose(
    signal: np.ndarray,
    weight: np.ndarray,
    in_spatial: Sequence[int],
    strides: Sequence[int],
    pads_begin: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> np.ndarray:
    """Adjoint of ConvTranspose: input ``i`` of channel ``c`` wrote ``w[c, m, k] x`` onto output
    ``i * s + k * d - pad`` of channel ``g * M + m``; gather those outputs back."""
    k_rows = signal.shape[0]
    in_channels, per_group_out = weight.shape[:2]
    per_group_in = in_channels // group
    out_spatial = signal.shape[2:]
    result = np.zeros((k_rows, in_channels, *in_spatial), np.float64)
    for c in range(in_channels):
        g = c // per_group_in
        for m in range(per_group_out):
            for i in np.ndindex(*in_spatial):
                for k in np.ndindex(*weight.shape[2:]):
                    o = tuple(
                        a * s + b * d - p
                        for a, s, b, d, p in zip(i, strides, k, dilations, pads_begin, strict=True)
                    )
                    if rc.inside(o, out_spatial):
                        result[(slice(None), c, *i)] += (
                            weight[(c, m, *k)] * signal[(slice(None), g * per_group_out + m, *o)]
                        )
    return result.astype(np.float32)


def np_lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX LRN on ``[C, ...]`` in float64, written from the spec's formula."""
    channels = x.shape[0]
    out = np.empty_like(x)
    for c in range(channels):
        low = max(0, c - (size - 1) // 2)
        high = min(channels - 1, c + math.ceil((size - 1) / 2))
        square_sum = (x[low : high + 1] ** 2).sum(axis=0)
        out[c] = x[c] / (bias + alpha / size * square_sum) ** beta
    return out


def numeric_vjp(f: Any, x: np.ndarray, signal: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """``J(x)^T signal`` by central differences of ``<signal, f(x)>`` (float64)."""
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        out[index] = float((signal * (f(up) - f(down))).sum()) / (2 * step)
    return out


# --------------------------------------------------------------------------------------------
# Pad, Slice, Split, Transpose, Tile, Expand
# --------------------------------------------------------------------------------------------


def _pad_model(
    x_shape: tuple[int, ...], pads: list[int], opset: int = 13, value: float = 0.0, **attrs: Any
) -> onnx.ModelProto:
    if opset < 11:
        return rc.make_model(
            [node("Pad", ["x"], pads=pads, value=value, **attrs)], x_shape, opset=opset
        )
    inits = {"p": np.array(pads), "v": arr(value)}
    return one_node("Pad", x_shape, inits, ["p", "v"], **attrs)


def _golden_pad() -> list[GoldenCase]:
    s7 = batch1([[1, 2, 4, 8, 16, 32, 64]])
    return [
        # y = [0, x0, x1, x2, x3, 0, 0]: the transpose crops.
        GoldenCase(
            "pad_constant_1d",
            _pad_model((1, 4), [0, 0, 1, 0, 0, 2], value=5.0),
            rand(400, 1, 1, 4),
            signal=s7,
            expected=batch1([[2, 4, 8, 16]]),
        ),
        # Negative pads crop: y = [x1, x2, x3, 0, 0]; the transpose puts a zero back at x0.
        GoldenCase(
            "pad_negative_crops",
            _pad_model((1, 4), [0, 0, -1, 0, 0, 2]),
            rand(401, 1, 1, 4),
            signal=batch1([[1, 2, 4, 8, 16]]),
            expected=batch1([[0, 1, 2, 4]]),
        ),
        # reflect (2, 1): y = [x2, x1, x0, x1, x2, x3, x2].
        GoldenCase(
            "pad_reflect_1d",
            _pad_model((1, 4), [0, 0, 2, 0, 0, 1], mode="reflect"),
            rand(402, 1, 1, 4),
            signal=s7,
            expected=batch1([[4, 2 + 8, 1 + 16 + 64, 32]]),
        ),
        # edge (2, 1): y = [x0, x0, x0, x1, x2, x3, x3].
        GoldenCase(
            "pad_edge_1d",
            _pad_model((1, 4), [0, 0, 2, 0, 0, 1], mode="edge"),
            rand(403, 1, 1, 4),
            signal=s7,
            expected=batch1([[7, 8, 16, 96]]),
        ),
        # Opset 2 attribute, two axes: y[c, :, :] = x padded by one row on top, one column right.
        GoldenCase(
            "pad_attribute_opset10_2d",
            _pad_model((1, 2, 2), [0, 0, 1, 0, 0, 0, 0, 1], opset=10),
            rand(404, 1, 1, 2, 2),
            signal=batch1([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]),
            expected=batch1([[[4, 5], [7, 8]]]),
        ),
    ]


def _adjoint_pad() -> list[AdjointCase]:
    cases = []
    for mode, pads in [
        ("constant", [0, 0, 1, 2, 0, 0, 3, 0]),
        ("constant", [0, 1, -1, 2, 0, -1, 0, -2]),
        ("reflect", [0, 0, 2, 3, 0, 0, 1, 2]),
        ("edge", [0, 1, 4, 0, 0, 2, 0, 5]),
    ]:
        name = f"pad_{mode}_{'_'.join(str(p) for p in pads)}".replace("-", "m")
        cases.append(
            AdjointCase(name, _pad_model((3, 5, 4), pads, mode=mode), (3, 5, 4), affine=True)
        )
    cases.append(
        AdjointCase(
            "pad_reflect_opset10",
            _pad_model((2, 4, 5), [0, 0, 1, 2, 0, 0, 2, 1], opset=10, mode="reflect"),
            (2, 4, 5),
        )
    )
    cases.append(
        AdjointCase(
            "pad_wrap_opset19",
            rc.make_model(
                [node("Pad", ["x", "p"], mode="wrap")],
                (2, 4, 5),
                {"p": np.array([0, 0, 2, 3, 0, 0, 1, 6])},
                opset=19,
            ),
            (2, 4, 5),
        )
    )
    cases.append(
        AdjointCase(
            "pad_axes_opset18",
            rc.make_model(
                [node("Pad", ["x", "p", "", "a"], mode="edge")],
                (2, 4, 5),
                {"p": np.array([1, 2, 3, 0]), "a": np.array([-1, 2])},
                opset=18,
            ),
            (2, 4, 5),
        )
    )
    return cases


def _slice_model(
    x_shape: tuple[int, ...], starts: list[int], ends: list[int], axes: list[int], steps: list[int]
) -> onnx.ModelProto:
    inits = {"s": np.array(starts), "e": np.array(ends), "a": np.array(axes), "t": np.array(steps)}
    return one_node("Slice", x_shape, inits, ["s", "e", "a", "t"])


def _golden_slice() -> list[GoldenCase]:
    return [
        GoldenCase(
            "slice_step2_clamped_end",
            _slice_model((2, 6), [1], [100], [2], [2]),
            rand(410, 1, 2, 6),
            signal=batch1([[1, 2, 3], [4, 5, 6]]),
            expected=batch1([[0, 1, 0, 2, 0, 3], [0, 4, 0, 5, 0, 6]]),
        ),
        # Reversed: start -1, end far below 0, step -1 reads x5, x4, ..., x0.
        GoldenCase(
            "slice_reversed",
            _slice_model((1, 6), [-1], [I64_MIN], [-1], [-1]),
            rand(411, 1, 1, 6),
            signal=batch1([[1, 2, 3, 4, 5, 6]]),
            expected=batch1([[6, 5, 4, 3, 2, 1]]),
        ),
        # Step -2 from 4 down to (not including) 0: x4, x2.
        GoldenCase(
            "slice_step_minus2",
            _slice_model((1, 6), [4], [0], [2], [-2]),
            rand(412, 1, 1, 6),
            signal=batch1([[10, 20]]),
            expected=batch1([[0, 0, 20, 0, 10, 0]]),
        ),
        # Two axes, negative starts and ends: channel 1 only, columns 3 and 4.
        GoldenCase(
            "slice_two_axes_negative",
            _slice_model((2, 6), [-1, -3], [I64_MAX, -1], [1, 2], [1, 1]),
            rand(413, 1, 2, 6),
            signal=batch1([[7, 8]]),
            expected=batch1([[0, 0, 0, 0, 0, 0], [0, 0, 0, 7, 8, 0]]),
        ),
        # Opset 9: starts/ends/axes are attributes.
        GoldenCase(
            "slice_attribute_opset9",
            rc.make_model([node("Slice", ["x"], starts=[1], ends=[3], axes=[2])], (1, 4), opset=9),
            rand(414, 1, 1, 4),
            signal=batch1([[5, 6]]),
            expected=batch1([[0, 5, 6, 0]]),
        ),
    ]


def _adjoint_slice() -> list[AdjointCase]:
    shape = (3, 7, 6)
    specs = [
        ("hw_step2", [1, 0], [I64_MAX, 5], [2, 3], [2, 2]),
        ("negative_steps", [-2, 5, 2], [0, I64_MIN, 0], [1, 2, 3], [-1, -3, -1]),
        ("batch_full_range", [0, 1], [I64_MAX, 3], [0, -1], [1, 1]),
        ("clamped_start", [-100, 10], [3, -100], [2, 3], [1, -1]),
    ]
    return [
        AdjointCase(f"slice_{name}", _slice_model(shape, s, e, a, t), shape)
        for name, s, e, a, t in specs
    ]


def _golden_split() -> list[GoldenCase]:
    split = node("Split", ["x", "sizes"], ["a", "b"], axis=1)
    both = rc.make_model(
        [split, node("Concat", ["b", "a"], ["y"], axis=1)], (4, 2), {"sizes": np.array([1, 3])}
    )
    second_only = rc.make_model([split], (4, 2), {"sizes": np.array([1, 3])}, outputs=("a", "b"))
    num_outputs = rc.make_model(
        [node("Split", ["x"], ["a", "b", "c"], axis=-1, num_outputs=3), node("Add", ["c", "a"])],
        (1, 6),
        opset=18,
    )
    return [
        # y = [b (rows 1-3), a (row 0)]: the signal of y's last row goes back to x's first.
        GoldenCase(
            "split_both_parts",
            both,
            rand(420, 1, 4, 2),
            signal=batch1([[1, 2], [3, 4], [5, 6], [7, 8]]),
            expected=batch1([[7, 8], [1, 2], [3, 4], [5, 6]]),
        ),
        GoldenCase(
            "split_one_part_zeros_elsewhere",
            second_only,
            rand(421, 1, 4, 2),
            signal=batch1([[1, 2], [3, 4], [5, 6]]),
            expected=batch1([[0, 0], [1, 2], [3, 4], [5, 6]]),
            layer="b",
        ),
        # Opset 18 num_outputs=3 on 6 columns; y = c + a: b's columns get nothing.
        GoldenCase(
            "split_num_outputs_opset18",
            num_outputs,
            rand(422, 1, 1, 6),
            signal=batch1([[1, 2]]),
            expected=batch1([[1, 2, 0, 0, 1, 2]]),
        ),
    ]


def _adjoint_split() -> list[AdjointCase]:
    three = rc.make_model(
        [
            node("Split", ["x"], ["a", "b", "c"], axis=2, split=[1, 2, 3]),
            node("Concat", ["c", "a", "b"], ["y"], axis=2),
        ],
        (2, 6, 3),
        opset=11,
    )
    unused = rc.make_model(
        [node("Split", ["x", "sizes"], ["a", "b"], axis=1), node("Identity", ["b"], ["y"])],
        (5, 3),
        {"sizes": np.array([2, 3])},
    )
    return [
        AdjointCase("split_attribute_reordered", three, (2, 6, 3)),
        AdjointCase("split_one_part_used", unused, (5, 3)),
    ]


def _golden_transpose() -> list[GoldenCase]:
    signal = rand(430, 2, 3, 4, 2)
    return [
        # Forward y[n, h, w, c] = x[n, c, h, w] (NCHW -> NHWC); back: move c first again.
        GoldenCase(
            "transpose_nchw_to_nhwc",
            one_node("Transpose", (2, 3, 4), perm=[0, 2, 3, 1]),
            rand(431, 2, 2, 3, 4),
            signal=signal,
            expected=np.ascontiguousarray(signal.transpose(0, 3, 1, 2)),
        )
    ]


def _adjoint_transpose() -> list[AdjointCase]:
    return [
        AdjointCase(
            f"transpose_{''.join(map(str, perm))}",
            one_node("Transpose", (2, 3, 4), perm=perm),
            (2, 3, 4),
        )
        for perm in ([0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2])
    ]


def _golden_tile_expand() -> dict[str, list[GoldenCase]]:
    sig = rand(440, 1, 4, 6)
    expected = sig.reshape(1, 2, 2, 2, 3).sum(axis=(1, 3))  # [K, copy_h, h, copy_w, w]
    tile = one_node("Tile", (2, 3), {"r": np.array([1, 2, 2])}, ["r"])
    expand = one_node("Expand", (3, 1), {"s": np.array([1, 3, 4])}, ["s"])
    return {
        "Tile": [GoldenCase("tile_2x2", tile, rand(441, 1, 2, 3), sig, expected)],
        "Expand": [
            GoldenCase(
                "expand_last_axis",
                expand,
                rand(442, 1, 3, 1),
                signal=batch1([[1, 2, 3, 4], [0, 0, 0, 1], [-1, 1, -1, 1]]),
                expected=batch1([[10], [1], [0]]),
            )
        ],
    }


def _adjoint_tile_expand() -> dict[str, list[AdjointCase]]:
    return {
        "Tile": [
            AdjointCase(
                "tile_3d",
                one_node("Tile", (2, 3, 1), {"r": np.array([1, 3, 1, 4])}, ["r"]),
                (2, 3, 1),
            )
        ],
        "Expand": [
            AdjointCase(
                "expand_two_axes",
                one_node("Expand", (1, 3, 1), {"s": np.array([2, 3, 5])}, ["s"]),
                (1, 3, 1),
            )
        ],
    }


# --------------------------------------------------------------------------------------------
# Resize, Upsample
# --------------------------------------------------------------------------------------------


def _resize_scales(x_shape: tuple[int, ...], scales: list[float], **attrs: Any) -> onnx.ModelProto:
    inits = {"roi": np.zeros(0, np.float32), "sc": np.array(scales, np.float32)}
    return one_node("Resize", x_shape, inits, ["roi", "sc"], **attrs)


def _resize_sizes(x_shape: tuple[int, ...], sizes: list[int], **attrs: Any) -> onnx.ModelProto:
    # Opset 18 ``axes``: the sizes of the spatial axes only, whatever the batch.
    axes = list(range(len(x_shape) + 1 - len(sizes), len(x_shape) + 1))
    return rc.make_model(
        [node("Resize", ["x", "", "", "sz"], axes=axes, **attrs)],
        x_shape,
        {"sz": np.array(sizes)},
        opset=18,
    )


def _golden_resize() -> dict[str, list[GoldenCase]]:
    sig = rand(450, 1, 2, 4, 6)
    blocks = sig.reshape(1, 2, 2, 2, 3, 2).sum(axis=(3, 5))
    return {
        "Resize": [
            # Nearest x2: every input was copied onto a 2x2 block; the transpose sums it.
            GoldenCase(
                "resize_nearest_x2_asymmetric",
                _resize_scales(
                    (2, 2, 3),
                    [1, 1, 2, 2],
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                ),
                rand(451, 1, 2, 2, 3),
                sig,
                blocks,
            ),
            # align_corners 3 -> 5: y = [x0, (x0 + x1) / 2, x1, (x1 + x2) / 2, x2].
            GoldenCase(
                "resize_linear_align_corners",
                _resize_sizes(
                    (1, 3), [5], mode="linear", coordinate_transformation_mode="align_corners"
                ),
                rand(452, 1, 1, 3),
                signal=batch1([[1, 2, 4, 8, 16]]),
                expected=batch1([[1 + 1, 1 + 4 + 4, 4 + 16]]),
            ),
            # half_pixel 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1):
            # y = [x0, .75 x0 + .25 x1, .25 x0 + .75 x1, x1].
            GoldenCase(
                "resize_linear_half_pixel",
                _resize_scales((1, 2), [1, 1, 2], mode="linear"),
                rand(453, 1, 1, 2),
                signal=batch1([[1, 2, 4, 8]]),
                expected=batch1([[1 + 1.5 + 1, 0.5 + 3 + 8]]),
            ),
            # tf_half_pixel_for_nn 2 -> 3: sources 1/3, 1, 5/3 round to 0, 1, 2 -> clamped 1.
            GoldenCase(
                "resize_nearest_tf_half_pixel",
                _resize_sizes(
                    (1, 2),
                    [3],
                    mode="nearest",
                    coordinate_transformation_mode="tf_half_pixel_for_nn",
                ),
                rand(454, 1, 1, 2),
                signal=batch1([[1, 2, 4]]),
                expected=batch1([[1, 6]]),
            ),
        ],
        "Upsample": [
            # Opset 9 Upsample x1.5 on 4 (nearest, floor of o / 1.5): y = [x0 x0 x1 x2 x2 x3].
            GoldenCase(
                "upsample_nearest_opset9",
                rc.make_model(
                    [node("Upsample", ["x", "sc"], mode="nearest")],
                    (1, 4),
                    {"sc": arr([1, 1, 1.5])},
                    opset=9,
                ),
                rand(455, 1, 1, 4),
                signal=batch1([[1, 2, 4, 8, 16, 32]]),
                expected=batch1([[3, 4, 24, 32]]),
            )
        ],
    }


def _adjoint_resize() -> dict[str, list[AdjointCase]]:
    cases = []
    shape = (2, 5, 4)
    nearest_modes = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
    coordinate_modes = [
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
    ]
    for coords, rounding, scales in itertools.product(
        coordinate_modes, nearest_modes, [[1, 1, 2, 3], [1, 1, 1.7, 0.6]]
    ):
        cases.append(
            AdjointCase(
                f"resize_nearest_{coords}_{rounding}_{scales[2]}_{scales[3]}",
                _resize_scales(
                    shape,
                    scales,
                    mode="nearest",
                    coordinate_transformation_mode=coords,
                    nearest_mode=rounding,
                ),
                shape,
            )
        )
    for coords, scales in itertools.product(
        coordinate_modes[:4], [[1, 1, 2, 2], [1, 1, 2.5, 0.5], [1, 1, 0.7, 1.3]]
    ):
        cases.append(
            AdjointCase(
                f"resize_linear_{coords}_{scales[2]}_{scales[3]}",
                _resize_scales(shape, scales, mode="linear", coordinate_transformation_mode=coords),
                shape,
            )
        )
    for mode, coords in [("linear", "align_corners"), ("nearest", "half_pixel")]:
        cases.append(
            AdjointCase(
                f"resize_sizes_{mode}_{coords}",
                _resize_sizes(shape, [7, 3], mode=mode, coordinate_transformation_mode=coords),
                shape,
            )
        )
    cases.append(
        AdjointCase(
            "resize_nearest_ceil_scale1_axis",
            _resize_scales(
                shape,
                [1, 1, 1, 2],
                mode="nearest",
                coordinate_transformation_mode="tf_half_pixel_for_nn",
                nearest_mode="ceil",
            ),
            shape,
        )
    )
    cases.append(
        AdjointCase(
            "resize_channels_too",
            _resize_scales((3, 4, 4), [1, 2, 2, 2], mode="nearest"),
            (3, 4, 4),
        )
    )
    opset10 = [
        AdjointCase(
            f"resize_opset10_{mode}_{scale}",
            rc.make_model(
                [node("Resize", ["x", "sc"], mode=mode)],
                shape,
                {"sc": arr([1, 1, scale, 1 / scale])},
                opset=10,
            ),
            shape,
        )
        for mode, scale in itertools.product(["nearest", "linear"], [1.5, 2.0])
    ]
    upsample = [
        AdjointCase(
            f"upsample_opset9_{mode}",
            rc.make_model(
                [node("Upsample", ["x", "sc"], mode=mode)],
                shape,
                {"sc": arr([1, 1, 2.5, 1.5])},
                opset=9,
            ),
            shape,
        )
        for mode in ["nearest", "linear"]
    ]
    # Opset 7 (scales as an attribute): loading converts it to Resize at opset 13.
    upsample += [
        AdjointCase(
            f"upsample_opset7_{mode}",
            rc.make_model(
                [node("Upsample", ["x"], mode=mode, scales=[1.0, 1.0, 2.0, 3.0])], shape, opset=7
            ),
            shape,
        )
        for mode in ["nearest", "linear"]
    ]
    return {"Resize": cases + opset10, "Upsample": upsample}


# --------------------------------------------------------------------------------------------
# ConvTranspose
# --------------------------------------------------------------------------------------------


def _golden_conv_transpose() -> list[GoldenCase]:
    # 1-D, w = [1, 2, 3], stride 2, pads (1, 0) on 3 inputs: y has 2 * 2 + 3 - 1 = 6 elements,
    # input i wrote w[k] x[i] onto y[2 i + k - 1]; back: dx[i] = sum_k w[k] s[2 i + k - 1].
    w1 = arr([[[1, 2, 3]]])
    s = [1, 10, 100, 1000, 10_000, 100_000]
    cases = [
        GoldenCase(
            "convtranspose1d_stride2_pad_begin",
            one_node("ConvTranspose", (1, 3), {"w": w1}, ["w"], strides=[2], pads=[1, 0]),
            rand(460, 1, 1, 3),
            signal=batch1([s]),
            expected=batch1([[2 * 1 + 3 * 10, 10 + 200 + 3000, 1000 + 20_000 + 300_000]]),
        ),
        # Bias adds a constant: ignored.
        GoldenCase(
            "convtranspose1d_bias_output_padding",
            one_node(
                "ConvTranspose",
                (1, 2),
                {"w": w1, "b": arr([7])},
                ["w", "b"],
                strides=[2],
                output_padding=[1],
            ),
            rand(461, 1, 1, 2),
            signal=batch1([[1, 10, 100, 1000, 10_000, 100_000]]),  # the last one wrote nothing
            expected=batch1([[1 + 20 + 300, 100 + 2000 + 30_000]]),
        ),
    ]
    w2 = rand(462, 4, 3, 3, 2)  # [C_in, C_out / group, kh, kw], group 2 -> 6 outputs
    attrs = {"strides": [2, 3], "pads": [1, 0, 2, 1], "dilations": [2, 1], "group": 2}
    model = one_node("ConvTranspose", (4, 3, 4), {"w": w2}, ["w"], output_padding=[1, 2], **attrs)
    out_shape = model.graph.output[0].type.tensor_type.shape.dim
    sig = rand(463, 2, *[d.dim_value for d in out_shape[1:]])
    cases.append(
        GoldenCase(
            "convtranspose2d_group_dilated_asym_pads",
            model,
            rand(464, 1, 4, 3, 4),
            signal=sig,
            expected=ref_conv_transpose_transpose(sig, w2, (3, 4), (2, 3), (1, 0), (2, 1), group=2),
        )
    )
    return cases


def _adjoint_conv_transpose() -> list[AdjointCase]:
    w = rand(470, 4, 3, 3, 3)
    specs: list[tuple[str, dict[str, Any]]] = [
        ("plain", {}),
        ("s2_p1", {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("s2_asym_outpad", {"strides": [2, 3], "pads": [0, 2, 1, 0], "output_padding": [1, 2]}),
        ("same_upper", {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ("same_lower", {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
        ("valid", {"strides": [3, 2], "auto_pad": "VALID"}),
        ("output_shape_short", {"strides": [2, 2], "output_shape": [9, 10]}),
        ("output_shape_long", {"strides": [2, 2], "output_shape": [12, 11]}),
        ("dilated_group2", {"dilations": [2, 1], "group": 2, "pads": [2, 1, 0, 1]}),
    ]
    cases = []
    for name, attrs in specs:
        weight = w if attrs.get("group", 1) == 1 else w[:, :1]
        model = one_node("ConvTranspose", (4, 5, 5), {"w": weight}, ["w"], **attrs)
        cases.append(AdjointCase(f"convtranspose_{name}", model, (4, 5, 5)))
    cases.append(
        AdjointCase(
            "convtranspose1d_s3",
            one_node("ConvTranspose", (2, 4), {"w": rand(471, 2, 2, 4)}, ["w"], strides=[3]),
            (2, 4),
        )
    )
    return cases


# --------------------------------------------------------------------------------------------
# LRN, InstanceNormalization (linearised at the forward pass)
# --------------------------------------------------------------------------------------------


def _golden_lrn() -> list[GoldenCase]:
    cases = []
    for size, alpha, beta, bias in [(3, 0.5, 0.75, 1.0), (5, 2.0, 0.6, 2.0), (7, 1e-1, 0.75, 1.5)]:
        x = rand(480 + size, 2, 6, 2, 3)
        signal = rand(490 + size, 3, 6, 2, 3)
        images = (1, 0, 1)

        def forward(
            v: np.ndarray, s: int = size, a: float = alpha, b: float = beta, k: float = bias
        ) -> np.ndarray:
            return np_lrn(v, s, a, b, k)

        expected = np.stack(
            [numeric_vjp(forward, x[i], signal[k]) for k, i in enumerate(images)]
        ).astype(np.float32)
        model = one_node("LRN", (6, 2, 3), size=size, alpha=alpha, beta=beta, bias=bias)
        for mode in ("deconvnet", "gradient"):
            cases.append(
                GoldenCase(
                    f"lrn_size{size}_{mode}", model, x, signal, expected, mode=mode, images=images
                )
            )
    return cases


def _golden_instance_norm() -> list[GoldenCase]:
    x = rand(500, 2, 3, 4, 5)
    x[1] *= 3.0  # the other image has other statistics
    gamma, beta = arr([1.5, -0.5, 2.0]), arr([0.1, 0.2, 0.3])
    signal = rand(501, 3, 3, 4, 5)
    images = (1, 0, 1)
    eps = 0.01
    expected = np.stack(
        [
            signal[k]
            * (gamma / np.sqrt(x[i].astype(np.float64).var(axis=(1, 2)) + eps))[:, None, None]
            for k, i in enumerate(images)
        ]
    ).astype(np.float32)
    model = one_node(
        "InstanceNormalization", (3, 4, 5), {"g": gamma, "b": beta}, ["g", "b"], epsilon=eps
    )
    return [
        GoldenCase(f"instancenorm_{mode}", model, x, signal, expected, mode=mode, images=images)
        for mode in ("deconvnet", "guided")
    ]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

GOLDEN: dict[str, list[GoldenCase]] = {
    "Pad": _golden_pad(),
    "Slice": _golden_slice(),
    "Split": _golden_split(),
    "Transpose": _golden_transpose(),
    **_golden_tile_expand(),
    **_golden_resize(),
    "ConvTranspose": _golden_conv_transpose(),
    "LRN": _golden_lrn(),
    "InstanceNormalization": _golden_instance_norm(),
}

ADJOINT: dict[str, list[AdjointCase]] = {
    "Pad": _adjoint_pad(),
    "Slice": _adjoint_slice(),
    "Split": _adjoint_split(),
    "Transpose": _adjoint_transpose(),
    **_adjoint_tile_expand(),
    **_adjoint_resize(),
    "ConvTranspose": _adjoint_conv_transpose(),
}

NONLINEAR: dict[str, str] = {
    "LRN": "the forward map is not linear in the input; the rule is J(x0)^T at the forward "
    "input in every mode, checked against the frozen (linearised) model in test_linear_ops.py",
    "InstanceNormalization": "the forward map is not linear in the input (its statistics "
    "depend on it); the rule holds them at their forward values, checked against the frozen "
    "model in test_linear_ops.py",
}


# --------------------------------------------------------------------------------------------
# Chains: how exporters combine these ops (adjoint identity, gradient rule, no biases)
# --------------------------------------------------------------------------------------------


def _chains() -> list[AdjointCase]:
    nhwc = rc.make_model(
        [
            # tf2onnx: NHWC input, Transpose pair around an explicitly padded Conv, MatMul head.
            node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
            node("Pad", ["nchw", "p"], ["padded"]),
            node("Conv", ["padded", "w"], ["c"], strides=[2, 2]),
            node("Relu", ["c"], ["r"]),
            node("Transpose", ["r"], ["back"], perm=[0, 2, 3, 1]),
            node("Reshape", ["back", "flat"], ["f"]),
            node("MatMul", ["f", "fc"], ["y"]),
        ],
        (7, 6, 3),
        {
            "p": np.array([0, 0, 0, 1, 0, 0, 1, 2]),
            "w": rand(700, 4, 3, 3, 3),
            "flat": np.array([-1, 4 * 4 * 3]),
            "fc": rand(701, 48, 5),
        },
    )
    decoder = rc.make_model(
        [
            # U-Net-like: strided Conv down, ConvTranspose up, skip Concat, nearest Resize.
            node("Conv", ["x", "w1"], ["down"], strides=[2, 2], pads=[1, 1, 1, 1]),
            node("Relu", ["down"], ["r1"]),
            node(
                "ConvTranspose",
                ["r1", "wt"],
                ["up"],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                output_padding=[1, 1],
            ),
            node("Concat", ["up", "x"], ["cat"], axis=1),
            node("Resize", ["cat", "", "sc"], ["big"], mode="nearest"),
            node("Split", ["big", "parts"], ["a", "b"], axis=1),
            node("Slice", ["a", "st", "en", "ax"], ["sl"]),
            node("Conv", ["sl", "w2"], ["y"]),
        ],
        (2, 8, 6),
        {
            "w1": rand(702, 4, 2, 3, 3),
            "wt": rand(703, 4, 3, 3, 3),
            "sc": arr([1, 1, 2, 2]),
            "parts": np.array([3, 2]),
            "st": np.array([1, -9]),
            "en": np.array([15, I64_MAX]),
            "ax": np.array([2, 3]),
            "w2": rand(704, 2, 3, 1, 1),
        },
    )
    left = rc.make_model([node("MatMul", ["w", "x"])], (4, 5), {"w": rand(705, 3, 4)})
    right_3d = one_node("MatMul", (3, 5), {"w": rand(706, 1, 5, 2)}, ["w"])
    return [
        AdjointCase("chain_tf2onnx_nhwc", nhwc, (7, 6, 3)),
        AdjointCase("chain_decoder_resize_split_slice", decoder, (2, 8, 6)),
        AdjointCase("chain_matmul_weight_left", left, (4, 5)),
        AdjointCase("chain_matmul_weight_broadcast_right", right_3d, (3, 5)),
    ]


CHAINS: list[AdjointCase] = _chains()
