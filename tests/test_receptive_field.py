"""Receptive fields on the graphs exporters write: layouts, reshapes, padding, up- and downsampling.

Each expected field is worked out by hand in the comments: unit ``p`` of a map with field
``(size k, stride s, offset o)`` sees input pixels ``[o + p*s, o + p*s + k)``. A window op with
kernel ``K``, stride ``S``, dilation ``D`` and begin padding ``P`` gives ``k + D*(K-1)*s``,
``s*S`` and ``o - P*s``.

The models with only linear ops are also measured: an impulse at each input pixel (random over
the channels, zero elsewhere) shows which units it reaches, and every unit's box must hold every
pixel that reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import load_model, prepare
from onnxdeconv.graph.passes import infer_tensor_info
from onnxdeconv.graph.receptive_field import ReceptiveField, receptive_fields

RNG = np.random.default_rng(0)


def weight(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def build(
    nodes: list[onnx.NodeProto],
    input_shape: Sequence[int],
    initializers: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    """A model from ``x`` whose every node output is also a graph output (to measure it)."""
    graph = helper.make_graph(
        nodes,
        "fields",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output.extend(
        v for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT
    )
    return model


def fields_of(model: onnx.ModelProto) -> dict[str, ReceptiveField]:
    return prepare(load_model(model)).tensor_fields


def line(field: ReceptiveField) -> tuple[object, ...]:
    return field.size, field.stride, field.offset


def assert_holds_support(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Every pixel that reaches a unit lies in that unit's box (the model must be linear)."""
    prepared = prepare(load_model(model))
    per_sample = prepared.input_shape
    nhwc = per_sample[-1] in (1, 3) and per_sample[0] not in (1, 3)
    spatial = per_sample[:-1] if nhwc else per_sample[1:]
    channels = per_sample[-1] if nhwc else per_sample[0]
    pixels = list(np.ndindex(*spatial))
    impulses = np.zeros((len(pixels), *per_sample), np.float32)
    for row, pixel in enumerate(pixels):
        where = (row, *pixel, slice(None)) if nhwc else (row, slice(None), *pixel)
        impulses[where] = RNG.uniform(0.5, 1.5, size=channels)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = dict(zip(names, session.run(list(names), {"x": impulses}), strict=True))
    for name in names:
        field = prepared.tensor_fields[name]
        out = results[name]
        # Rows: the impulse's pixel; columns: the units.
        reach = np.abs(out.reshape(len(out), -1)) > 1e-6
        for flat, unit in enumerate(np.ndindex(*out.shape[1:])):
            reached = [int(r) for r in np.nonzero(reach[:, flat])[0]]
            if not len(reached):
                continue
            box = field.box(tuple(unit[1:]), channel=unit[0] if unit else None)
            assert box is not None, name
            for row in reached:
                inside = all(b <= p < e for p, (b, e) in zip(pixels[row], box, strict=True))
                assert inside, (name, unit, pixels[row], box)


# --- the dataclass --------------------------------------------------------------------------------


def test_box_of_an_nchw_field_built_by_hand_is_unchanged() -> None:
    field = ReceptiveField(size=(5, 3), stride=(2, 1), offset=(-2, 0))
    assert field.box((3, 4)) == ((4, 9), (4, 7))  # -2 + 3*2 = 4; 0 + 4*1 = 4
    assert field.describe() == "5x3 /2x1"  # per dim, in the input's order
    with pytest.raises(ValueError):
        field.box((1,))
    assert ReceptiveField(None, (1,), (0,)).box((0,)) is None


def test_box_follows_the_axes_of_an_nhwc_map() -> None:
    # A [N, H=6, W=6, C] map: H sits on axis 1 (the axis analyses call "channel").
    field = ReceptiveField((3, 3), (2, 2), (-1, -1), axes=(1, 2), units=(6, 6))
    # position is (w, c); with the row given as the channel, the box is one unit's.
    assert field.box((4, 7), channel=2) == ((3, 6), (7, 10))
    # Without it, every row: -1 .. -1 + 5*2 + 3 = 12.
    assert field.box((4, 7)) == ((-1, 12), (7, 10))
    # A dim squeezed away (axis None) has its single unit at position 0.
    squeezed = ReceptiveField((5, 3), (4, 2), (-2, 1), axes=(None, 2), units=(1, 9))
    assert squeezed.box((3,)) == ((-2, 3), (7, 10))


# --- NHWC models (Keras via tf2onnx) ------------------------------------------------------------


def nhwc_model() -> onnx.ModelProto:
    """x[N,12,12,3] -> Transpose to NCHW -> Conv 3x3/2 p1 -> Transpose back -> MatMul (Dense)."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["conv"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["nhwc", "dense"], ["dense_out"]),
        helper.make_node("ReduceMean", ["nhwc"], ["mean"], axes=[1, 2], keepdims=0),
    ]
    return build(nodes, (12, 12, 3), {"w": weight(4, 3, 3, 3), "dense": weight(4, 5)}, 13)


def test_nhwc_transpose_pair_keeps_the_field() -> None:
    fields = fields_of(nhwc_model())
    # The NHWC input: H, W on axes 1, 2; every pixel sees itself.
    assert line(fields["x"]) == ((1, 1), (1, 1), (0, 0)) and fields["x"].axes == (1, 2)
    assert fields["nchw"].axes == (2, 3)
    # Conv 3x3/2 pad 1: size 1 + 2 = 3, stride 2, offset -1.
    assert line(fields["conv"]) == ((3, 3), (2, 2), (-1, -1))
    # Back to NHWC: the same field, on axes 1 and 2 of the [N, 6, 6, 4] map.
    assert line(fields["nhwc"]) == ((3, 3), (2, 2), (-1, -1))
    assert fields["nhwc"].axes == (1, 2) and fields["nhwc"].units == (6, 6)
    # Dense on the last (channel) axis mixes channels only: the field stays.
    assert line(fields["dense_out"]) == ((3, 3), (2, 2), (-1, -1))
    assert fields["dense_out"].axes == (1, 2)
    # Unit (h=2, w=4): rows -1 + 4 .. +3, columns -1 + 8 .. +3.
    assert fields["dense_out"].box((4, 0), channel=2) == ((3, 6), (7, 10))
    # Averaging over H and W mixes every position.
    assert fields["mean"].size is None and fields["mean"].describe() == "global"


def test_nhwc_fields_hold_the_measured_support() -> None:
    assert_holds_support(nhwc_model(), ["nchw", "conv", "nhwc", "dense_out"])


def test_keras_nhwc_export_has_local_fields_up_to_its_flatten() -> None:
    from conftest import ROOT

    prepared = prepare(load_model(ROOT / "tests" / "data" / "keras_nhwc.onnx"))
    rows = {layer.alias: layer.receptive_field for layer in prepared.layers()}
    # tf2onnx writes TF's SAME as explicit pads, the odd pixel at the end (pads 0, 0, 1, 1):
    # conv1 3x3/2: 3 /2 offset 0; maxpool1 3x3/2: 3 + 2*2 = 7 /4 offset 0; conv2 3x3 pad 1:
    # 7 + 2*4 = 15 /4 offset -4. The NHWC input and the map transposed back keep them.
    # `layers` shows each map channels first; the tensors' own axes are in tensor_fields.
    assert rows["add1"].axes == (2, 3) and line(rows["add1"]) == ((1, 1), (1, 1), (0, 0))
    assert prepared.tensor_fields[prepared.aliases["add1"]].axes == (1, 2)
    assert line(rows["conv1"]) == ((3, 3), (2, 2), (0, 0))
    assert line(rows["maxpool1"]) == ((7, 7), (4, 4), (0, 0))
    assert line(rows["conv2"]) == ((15, 15), (4, 4), (-4, -4))
    assert line(rows["transpose2"]) == line(rows["conv2"]) and rows["transpose2"].axes == (2, 3)
    assert prepared.tensor_fields[prepared.aliases["transpose2"]].axes == (1, 2)
    assert rows["reshape1"].size is None  # Flatten of an 8x8 map


# --- reshapes: ShuffleNet's channel shuffle, Flatten ------------------------------------------


def shuffle_model() -> onnx.ModelProto:
    """Conv 3x3/2 p1 -> [N,8,6,6] -> [N,2,4,6,6] -> swap groups -> [N,8,6,6] -> Conv 3x3 p1."""
    shapes = {
        "grouped": np.array([0, 2, 4, 6, 6], np.int64),
        "merged": np.array([0, 8, 6, 6], np.int64),
        "rows": np.array([0, 8, 36], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c1", "grouped"], ["g"]),
        helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "merged"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c2", "rows"], ["hw"]),
        helper.make_node("Flatten", ["c2"], ["flat"]),
    ]
    inits = {"w1": weight(8, 3, 3, 3), "w2": weight(8, 8, 3, 3), **shapes}
    return build(nodes, (3, 12, 12), inits, 13)


def test_channel_shuffle_keeps_the_spatial_axes() -> None:
    fields = fields_of(shuffle_model())
    # c1: 3x3/2 pad 1 -> size 3, stride 2, offset -1.
    assert line(fields["c1"]) == ((3, 3), (2, 2), (-1, -1))
    # [N,8,6,6] -> [N,2,4,6,6]: H and W move to axes 3, 4; the transpose keeps them there.
    assert fields["g"].axes == (3, 4) and fields["t"].axes == (3, 4)
    assert line(fields["shuffled"]) == line(fields["c1"]) and fields["shuffled"].axes == (2, 3)
    # c2: 3x3 pad 1 on a stride-2 field: 3 + 2*2 = 7, stride 2, -1 - 1*2 = -3.
    assert line(fields["c2"]) == ((7, 7), (2, 2), (-3, -3))
    # H and W merged into one axis, and the Flatten, mix positions.
    assert fields["hw"].size is None and fields["flat"].size is None


def test_channel_shuffle_fields_hold_the_measured_support() -> None:
    assert_holds_support(shuffle_model(), ["c1", "g", "t", "shuffled", "c2"])


def test_flatten_and_global_pool_of_a_one_by_one_map_keep_its_field() -> None:
    # Conv 5x5 valid on 5x5 -> a 1x1 map whose unit sees [0, 5): nothing is mixed after it.
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1),
    ]
    fields = fields_of(build(nodes, (1, 5, 5), {"w": weight(4, 1, 5, 5), "fc": weight(3, 4)}))
    for name in ("c", "gap", "flat", "logits"):
        assert line(fields[name]) == ((5, 5), (1, 1), (0, 0)), name
    assert fields["flat"].box(()) == ((0, 5), (0, 5))


def test_gemm_reduce_and_global_pool_of_a_map_are_global() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalMaxPool", ["c"], ["gmp"]),
        helper.make_node("ReduceMax", ["c"], ["rmax"], axes=[3], keepdims=1),
        helper.make_node("ReduceMean", ["c"], ["rchan"], axes=[1], keepdims=1),
        helper.make_node("Flatten", ["c"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1),
        helper.make_node("MatMul", ["c", "across_w"], ["mixed"]),
    ]
    inits = {"w": weight(2, 1, 3, 3), "fc": weight(3, 2 * 6 * 6), "across_w": weight(6, 4)}
    fields = fields_of(build(nodes, (1, 6, 6), inits, 13))
    for name in ("gmp", "rmax", "flat", "logits", "mixed"):
        assert fields[name].size is None, name
    # Averaging over channels leaves each position's field: 3x3 /1 offset -1.
    assert line(fields["rchan"]) == ((3, 3), (1, 1), (-1, -1))


# --- SAME padding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "auto_pad", "offset"),
    [
        # out = ceil(12/2) = 6; total pad = max(0, 5*2 + 3 - 12) = 1: the odd pixel at the end
        # (SAME_UPPER: begin 0) or at the beginning (SAME_LOWER: begin 1).
        (12, "SAME_UPPER", 0),
        (12, "SAME_LOWER", -1),
        # out = ceil(11/2) = 6; total = 10 + 3 - 11 = 2: one pixel on each side.
        (11, "SAME_UPPER", -1),
        (11, "SAME_LOWER", -1),
    ],
)
def test_same_padding_stride_two_is_exact(size: int, auto_pad: str, offset: int) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], auto_pad=auto_pad),
        # MaxPool 2x2/2 SAME on 6: total = 2*2 + 2 - 6 = 0: no padding, offset unchanged.
        helper.make_node(
            "AveragePool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], auto_pad=auto_pad
        ),
    ]
    model = build(nodes, (1, size, size), {"w": weight(2, 1, 3, 3)})
    fields = fields_of(model)
    assert line(fields["c"]) == ((3, 3), (2, 2), (offset, offset))
    # Pool: 3 + 1*2 = 5, stride 4.
    assert line(fields["p"]) == ((5, 5), (4, 4), (offset, offset))
    assert_holds_support(model, ["c", "p"])


# --- Pad, Slice, Split, Concat ------------------------------------------------------------------


def test_pad_and_slice_shift_the_offset_in_old_and_new_opsets() -> None:
    for opset in (9, 13):
        pads = [0, 0, 2, 1, 0, 0, 0, 0]  # H: 2 before, W: 1 before
        if opset == 9:
            pad = helper.make_node("Pad", ["x"], ["padded"], pads=pads)
            cut = helper.make_node(
                "Slice", ["c"], ["s"], starts=[1, 2], ends=[100, 100], axes=[2, 3]
            )
            inits: dict[str, np.ndarray] = {}
        else:
            pad = helper.make_node("Pad", ["x", "pads"], ["padded"])
            cut = helper.make_node("Slice", ["c", "starts", "ends", "axes", "steps"], ["s"])
            inits = {
                "pads": np.array(pads, np.int64),
                "starts": np.array([1, 2], np.int64),
                "ends": np.array([100, 100], np.int64),
                "axes": np.array([2, 3], np.int64),
                "steps": np.array([1, 2], np.int64),
            }
        nodes = [pad, helper.make_node("Conv", ["padded", "w"], ["c"]), cut]
        model = build(nodes, (1, 8, 8), {"w": weight(2, 1, 3, 3), **inits}, opset)
        fields = fields_of(model)
        # Padded unit p holds input p - 2 (rows), p - 1 (columns).
        assert line(fields["padded"]) == ((1, 1), (1, 1), (-2, -1))
        assert line(fields["c"]) == ((3, 3), (1, 1), (-2, -1))
        # Slice from row 1 and column 2 (step 2 in opset 13): offsets -2+1, -1+2; stride x2.
        step = 1 if opset == 9 else 2
        assert line(fields["s"]) == ((3, 3), (1, step), (-1, 1)), opset
        assert_holds_support(model, ["padded", "c", "s"])


def test_split_along_height_and_concat_back() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["c"], ["top", "bottom"], axis=2),
        helper.make_node("Concat", ["bottom", "top"], ["swapped"], axis=2),
        helper.make_node("Concat", ["top", "bottom"], ["joined"], axis=2),
        helper.make_node("Concat", ["c", "c"], ["channels"], axis=1),
    ]
    model = build(nodes, (1, 8, 8), {"w": weight(2, 1, 3, 3)}, 13)
    fields = fields_of(model)
    # c: 3 /2 offset -1, 4x4 units; the bottom half starts at unit 2: -1 + 2*2 = 3.
    assert line(fields["top"]) == ((3, 3), (2, 2), (-1, -1))
    assert line(fields["bottom"]) == ((3, 3), (2, 2), (3, -1))
    # Put back in order, the halves are the original line again.
    assert line(fields["joined"]) == line(fields["c"])
    assert line(fields["channels"]) == line(fields["c"])
    # Swapped: unit q < 2 sees 3 + 2q, unit q >= 2 sees -1 + 2(q-2) = 2q - 5. The stride-2
    # line holding both starts at min(3, -5) = -5 and ends at max(3, -5) + 3 = 6: size 11.
    assert line(fields["swapped"]) == ((11, 3), (2, 2), (-5, -1))
    assert_holds_support(model, ["top", "bottom", "swapped", "joined", "channels"])


# --- upsampling: a U-Net-like path ---------------------------------------------------------------


def unet_model(upsample: str) -> onnx.ModelProto:
    """Conv 3x3 p1 -> AvgPool 2/2 -> Conv 3x3 p1 -> up x2 -> Concat(skip) -> Conv 3x3 p1."""
    inits: dict[str, np.ndarray] = {
        "w1": weight(2, 1, 3, 3),
        "w2": weight(2, 2, 3, 3),
        "w3": weight(4, 4, 3, 3),
    }
    if upsample == "convtranspose":
        inits["wt"] = weight(2, 2, 2, 2)
        up = helper.make_node("ConvTranspose", ["c2", "wt"], ["up"], strides=[2, 2])
    else:
        inits["scales"] = np.array([1, 1, 2, 2], np.float32)
        mode = {
            "nearest": {"mode": "nearest", "nearest_mode": "floor"},
            "linear": {"mode": "linear"},
        }
        transform = "asymmetric" if upsample == "nearest" else "half_pixel"
        up = helper.make_node(
            "Resize",
            ["c2", "", "scales"],
            ["up"],
            coordinate_transformation_mode=transform,
            **mode[upsample],
        )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        up,
        helper.make_node("Concat", ["up", "c1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["c3"], pads=[1, 1, 1, 1]),
    ]
    return build(nodes, (1, 16, 16), inits, 13)


@pytest.mark.parametrize(
    ("upsample", "up", "cat", "c3"),
    [
        # c2 is (8, /2, -3): c1 (3, /1, -1), p1 3 + 1 = 4 /2 -1, c2 4 + 2*2 = 8 /2 -1 - 2 = -3.
        # ConvTranspose k2/2 and nearest x2 (floor): output q reads input unit floor(q/2), seen
        # at -3 + 2*floor(q/2) .. +8. At stride 1 that begins at -3 - q + 2*floor(q/2) >= -4
        # (odd q) and ends at 5 - q + 2*floor(q/2) <= 5 (even q): offset -4, size 9.
        # The skip c1 (3, /1, -1) lies inside; c3 adds 2: size 11, offset -5.
        ("convtranspose", ((9, 9), (1, 1), (-4, -4)), ((9, 9), (1, 1), (-4, -4)), (11, -5)),
        ("nearest", ((9, 9), (1, 1), (-4, -4)), ((9, 9), (1, 1), (-4, -4)), (11, -5)),
        # Linear, half pixel: x = (q + 0.5)/2 - 0.5 reads floor(x) and floor(x) + 1: for q = 2m
        # units m-1, m (begin -3 + 2(m-1) - 2m = -5, end -3 + 2m + 8 - 2m = 5); for q = 2m+1
        # units m, m+1 (begin -4, end -3 + 2(m+1) + 8 - (2m+1) = 6): offset -5, size 11.
        ("linear", ((11, 11), (1, 1), (-5, -5)), ((11, 11), (1, 1), (-5, -5)), (13, -6)),
    ],
)
def test_unet_down_and_up_path(
    upsample: str,
    up: tuple[object, ...],
    cat: tuple[object, ...],
    c3: tuple[int, int],
) -> None:
    model = unet_model(upsample)
    fields = fields_of(model)
    assert line(fields["c2"]) == ((8, 8), (2, 2), (-3, -3))
    assert line(fields["up"]) == up
    assert line(fields["cat"]) == cat
    assert line(fields["c3"]) == ((c3[0],) * 2, (1, 1), (c3[1],) * 2)
    assert_holds_support(model, ["c1", "p1", "c2", "up", "cat", "c3"])


def test_upsampling_past_the_input_grid_rounds_to_a_containing_field() -> None:
    # ConvTranspose k2/2 on the 4x4 input itself: unit q sees pixel floor(q/2), stride 1/2.
    # A whole stride of 1 drifts half a pixel per unit from the true line q/2, so over the 8
    # units the field grows: begins floor(q/2) - q >= -4 (q = 7), ends floor(q/2) + 1 - q <= 1.
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["up"], strides=[2, 2])]
    model = build(nodes, (1, 4, 4), {"wt": weight(1, 2, 2, 2)}, 13)
    fields = fields_of(model)
    assert line(fields["up"]) == ((5, 5), (1, 1), (-4, -4))
    assert_holds_support(model, ["up"])


def test_yolo_like_resize_concat_on_a_deeper_map() -> None:
    # Conv 3x3/2 p1 twice: (3, /2, -1) then 3 + 2*2 = 7, /4, -1 - 2 = -3.
    # Nearest x2 (asymmetric, floor) back to stride 2: begin -3 + 4*floor(q/2) - 2q >= -5,
    # end +7 <= 4: offset -5, size 9. Concat with the stride-2 map (3, -1): it lies inside.
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node(
            "Resize",
            ["c2", "", "scales"],
            ["up"],
            mode="nearest",
            nearest_mode="floor",
            coordinate_transformation_mode="asymmetric",
        ),
        helper.make_node("Concat", ["up", "c1"], ["cat"], axis=1),
    ]
    inits = {
        "w1": weight(2, 1, 3, 3),
        "w2": weight(2, 2, 3, 3),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    model = build(nodes, (1, 16, 16), inits, 13)
    fields = fields_of(model)
    assert line(fields["c2"]) == ((7, 7), (4, 4), (-3, -3))
    assert line(fields["up"]) == ((9, 9), (2, 2), (-5, -5))
    assert line(fields["cat"]) == ((9, 9), (2, 2), (-5, -5))
    assert_holds_support(model, ["c2", "up", "cat"])


# --- gates, elementwise, constants ---------------------------------------------------------------


def test_squeeze_excitation_gate_keeps_the_gated_field() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["squeezed"]),
        helper.make_node("Sigmoid", ["squeezed"], ["gate"]),
        helper.make_node("Mul", ["c", "gate"], ["excited"]),
        helper.make_node("Add", ["c", "squeezed"], ["plus_context"]),
    ]
    fields = fields_of(build(nodes, (1, 6, 6), {"w": weight(2, 1, 3, 3)}))
    assert fields["gate"].size is None
    # deconvnet and guided projections never enter the gate: the field is the map's own.
    assert line(fields["excited"]) == ((3, 3), (1, 1), (-1, -1))
    # A sum has no gate: the signal reaches the whole image through the pooled term.
    assert fields["plus_context"].size is None


def test_receptive_fields_read_constants_given_apart_from_the_graph() -> None:
    # Pad's pads come as an input whose value is not in the graph (e.g. folded by the caller).
    nodes = [helper.make_node("Pad", ["x", "pads"], ["padded"])]
    graph = helper.make_graph(
        nodes,
        "pad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("pads", TensorProto.INT64, [8]),
        ],
        [helper.make_tensor_value_info("padded", TensorProto.FLOAT, [1, 1, 7, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    info = infer_tensor_info(model)
    unknown = receptive_fields(model.graph, "x", info)
    assert unknown["padded"].size is None
    pads = np.array([0, 0, 3, 1, 0, 0, 0, 0], np.int64)
    known = receptive_fields(model.graph, "x", info, {"pads": pads})
    assert line(known["padded"]) == ((1, 1), (1, 1), (-3, -1))


# --- the zoo ------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["shufflenet", "unet", "yolo", "mobilenetv3"])
def test_zoo_maps_have_local_fields(net: str) -> None:
    from conftest import ROOT

    prepared = prepare(load_model(ROOT / "tests" / "data" / "zoo" / f"{net}-dynamo.onnx"))
    for layer in prepared.layers():
        if len(layer.shape) == 3 and layer.shape[1] > 1:  # a [C, H, W] map of several units
            assert layer.receptive_field.size is not None, (net, layer.alias)


def resampling_model(kind: str) -> onnx.ModelProto:
    """Conv 3x3/2 p1 on 16x16 (an 8x8 map, field 3 /2 -1), then one resampling op."""
    inits: dict[str, np.ndarray] = {"w": weight(2, 1, 3, 3)}
    opset = 18
    name, attrs = kind.split(":") if ":" in kind else (kind, "")
    if name == "resize":
        # attrs: mode/transform/target, target "x<scale>" or "s<size>"
        mode, transform, target = attrs.split("/")
        inputs = ["c", ""]
        if target.startswith("x"):
            inits["scales"] = np.array([1, 1, float(target[1:]), float(target[1:])], np.float32)
            inputs.append("scales")
        else:
            inits["sizes"] = np.array([int(target[1:])] * 2, np.int64)
            inputs += ["", "sizes"]
        extra: dict[str, Any] = {"antialias": 1} if mode.endswith("+aa") else {}
        if target.startswith("s"):
            extra["axes"] = [2, 3]
        op = helper.make_node(
            "Resize",
            inputs,
            ["out"],
            mode=mode.removesuffix("+aa"),
            coordinate_transformation_mode=transform,
            **extra,
        )
    elif name == "upsample":
        opset = 9
        inits["scales"] = np.array([1, 1, 2, 3], np.float32)
        op = helper.make_node("Upsample", ["c", "scales"], ["out"], mode=attrs)
    elif name == "convtranspose":
        stride, kernel, dilation, pad, out_pad = (int(v) for v in attrs.split("/"))
        inits["wt"] = weight(2, 2, kernel, kernel)
        op = helper.make_node(
            "ConvTranspose",
            ["c", "wt"],
            ["out"],
            strides=[stride, stride],
            dilations=[dilation, dilation],
            pads=[pad, pad, pad + 1, pad + 1],
            output_padding=[out_pad, out_pad],
        )
    elif name == "convtranspose_same":
        inits["wt"] = weight(2, 2, 3, 3)
        op = helper.make_node("ConvTranspose", ["c", "wt"], ["out"], strides=[2, 2], auto_pad=attrs)
    elif name == "depthtospace":
        op = helper.make_node("DepthToSpace", ["c4"], ["out"], blocksize=2)
    else:
        op = helper.make_node("SpaceToDepth", ["c4"], ["out"], blocksize=2)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c", "c"], ["c4"], axis=1),
        op,
    ]
    return build(nodes, (1, 16, 16), inits, opset)


@pytest.mark.parametrize(
    "kind",
    [
        "resize:nearest/asymmetric/x2",
        "resize:nearest/half_pixel/x3",
        "resize:nearest/tf_half_pixel_for_nn/s13",
        "resize:linear/align_corners/s13",
        "resize:linear/pytorch_half_pixel/x0.5",
        "resize:linear+aa/half_pixel/s5",
        "resize:cubic/half_pixel/x2",
        "resize:cubic+aa/half_pixel/x0.5",
        "resize:linear/half_pixel_symmetric/s11",
        "upsample:nearest",
        "upsample:linear",
        "convtranspose:2/3/1/1/1",
        "convtranspose:3/2/2/0/0",
        "convtranspose:1/3/1/1/0",
        "convtranspose_same:SAME_UPPER",
        "convtranspose_same:SAME_LOWER",
        "depthtospace",
        "spacetodepth",
    ],
)
def test_resampling_fields_hold_the_measured_support(kind: str) -> None:
    model = resampling_model(kind)
    field = fields_of(model)["out"]
    assert field.size is not None
    assert_holds_support(model, ["out"])
