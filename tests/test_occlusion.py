"""Occlusion sensitivity (Zeiler & Fergus Fig. 7): grids, maps at planted features, the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import DIGIT_7, DIGITNET
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector, load_model, prepare
from onnxdeconv.analysis.occlusion import (
    default_size,
    default_stride,
    mean_fill,
    mid_grey,
    occluded_copies,
    occluder_starts,
    occlusion_maps,
    occlusion_projections,
    to_probabilities,
)
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.inputs import PRESETS, Preprocessing, load_input
from onnxdeconv.labels import resolve_label
from onnxdeconv.outputs import json_safe
from onnxdeconv.runtime import create_session

# The planted-feature image: dark, with a bright 6x6 square at rows 20-25, columns 8-13.
SIDE = 32
SQUARE = ((20, 26), (8, 14))


def blob_net(side: int = SIDE, weight: float = 100.0, bias: float = -1.0) -> onnx.ModelProto:
    """x[N,1,side,side] -> Conv(3x3 ones, pad 1, bias -4.5) -> Relu -> GAP -> Flatten -> Gemm.

    The conv fires only where more than half of a 3x3 window is bright (a pixel of 1), never on
    mid-grey (9 x 0.5 - 4.5 = 0). Class 0's logit is ``weight * mean(relu) + bias``, class 1's 0.
    """
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    initializers = {
        "w": np.ones((1, 1, 3, 3), np.float32),
        "b": np.array([-4.5], np.float32),
        "fc": np.array([[weight], [0.0]], np.float32),
        "fc_b": np.array([bias, 0.0], np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "blob",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def identity_net(side: int) -> onnx.ModelProto:
    """x[N,1,side,side] -> Conv 1x1 (weight 1) -> Relu -> GAP -> Flatten -> Gemm(2)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w"),
            numpy_helper.from_array(np.array([[1.0], [-1.0]], np.float32), "fc"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


@pytest.fixture(scope="module")
def planted() -> np.ndarray:
    image = np.zeros((1, 1, SIDE, SIDE), np.float32)
    (top, bottom), (left, right) = SQUARE
    image[0, 0, top:bottom, left:right] = 1.0
    return image


@pytest.fixture(scope="module")
def blob() -> Projector:
    return Projector(prepare(load_model(blob_net())), layer="relu", device="cpu", keep_outputs=True)


def occlusion_cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run(["occlusion", *map(str, args)], capsys)


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


# --- the grid of occluder positions --------------------------------------------------------


def test_occluder_starts_by_hand() -> None:
    assert occluder_starts(8, 4, 2) == [0, 2, 4]
    assert occluder_starts(10, 4, 3) == [0, 3, 6]  # 6 + 4 = 10: flush already
    assert occluder_starts(9, 4, 3) == [0, 3, 5]  # 3 + 4 = 7 < 9: a last one flush with the border
    assert occluder_starts(4, 4, 1) == [0]
    assert occluder_starts(6, 2, 10) == [0, 4]
    assert occluder_starts(28, 5, 2) == [*range(0, 23, 2), 23]
    with pytest.raises(InputError, match=r"larger than the image side \(8 px\).*8 px or smaller"):
        occluder_starts(8, 9, 1)


def test_default_size_and_stride() -> None:
    # A sixth of the shorter side, rounded half up; half of that, rounded down.
    assert default_size(28, 28) == 5  # 4.67
    assert default_size(224, 300) == 37  # 37.33
    assert default_size(9, 100) == 2  # 1.5
    assert default_size(2, 2) == 1
    assert (default_stride(5), default_stride(37), default_stride(1)) == (2, 18, 1)


def test_grid_of_an_8px_image_with_size_4_stride_2() -> None:
    """3x3 positions; the feature map is the image (1x1 conv) minus what the occluder covers."""
    image = (np.arange(64, dtype=np.float32) / 8).reshape(1, 1, 8, 8)
    result = occlusion_maps(
        prepare(load_model(identity_net(8))), image, layer="relu", size=4, stride=2, fill=0.0
    )
    assert result.rows == result.columns == [0, 2, 4]
    assert result.positions == [(y, x) for y in (0, 2, 4) for x in (0, 2, 4)]
    assert result.feature_map.shape == result.probability.shape == (3, 3)
    plane = image[0, 0].astype(np.float64)
    expected = np.array(
        [[plane.sum() - plane[y : y + 4, x : x + 4].sum() for x in (0, 2, 4)] for y in (0, 2, 4)]
    )
    np.testing.assert_allclose(result.feature_map, expected, rtol=1e-6)
    assert result.baseline_activation == pytest.approx(plane.sum())
    # logits [mean, -mean]: p(class 0) = sigmoid(2 * mean of the occluded image).
    np.testing.assert_allclose(
        result.probability, [[sigmoid(2 * t / 64) for t in row] for row in expected], rtol=1e-5
    )
    assert result.label == result.predicted == 0
    assert result.softmax_applied


# --- the maps at a planted feature ----------------------------------------------------------


def test_maps_are_lowest_where_the_occluder_covers_the_planted_square(
    blob: Projector, planted: np.ndarray
) -> None:
    result = occlusion_maps(blob, planted, size=8, stride=4, fill=0.5)
    starts = list(range(0, SIDE - 8 + 1, 4))
    assert result.rows == result.columns == starts
    (top, bottom), (left, right) = SQUARE
    covering = {(y, x) for y in starts for x in starts if y <= top and y + 8 >= bottom}
    covering = {(y, x) for y, x in covering if x <= left and x + 8 >= right}
    assert covering == {(20, 8)}

    # Unoccluded: 16 interior units of the square see 9 bright pixels (9 - 4.5), 16 edge units 6
    # (6 - 4.5); corners (4 bright) and everything outside stay at zero.
    assert result.baseline_activation == pytest.approx(16 * 4.5 + 16 * 1.5)
    assert result.baseline_probability == pytest.approx(sigmoid(100 * 96 / 1024 - 1), rel=1e-5)
    assert result.channel == 0 and result.strongest_value == pytest.approx(4.5)

    def cells(values: np.ndarray) -> set[tuple[int, int]]:
        where = np.argwhere(values == values.min())
        return {(result.rows[i], result.columns[j]) for i, j in where}

    assert cells(result.feature_map) == covering
    assert cells(result.probability) == covering
    i, j = result.index_of((20, 8))
    # Covered: only grey and dark pixels remain, and 9 x 0.5 - 4.5 = 0 everywhere.
    assert result.feature_map[i, j] == 0.0
    assert result.probability[i, j] == pytest.approx(sigmoid(-1.0), rel=1e-5)
    assert result.top_label[i, j] == 1 and result.label == 0
    # An occluder more than 2 px from the square shares no 3x3 window with it: no change.
    for (y, x), total in zip(result.positions, result.feature_map.ravel(), strict=True):
        apart = y + 8 <= top - 2 or y >= bottom + 2 or x + 8 <= left - 2 or x >= right + 2
        if apart:
            assert total == pytest.approx(96.0), (y, x)
            assert result.top_label.ravel()[result.positions.index((y, x))] == 0


def test_projections_with_and_without_the_occluder(blob: Projector, planted: np.ndarray) -> None:
    result = occlusion_maps(blob, planted, size=8, stride=4, fill=0.5)
    panel = occlusion_projections(blob, planted, result)
    assert panel.positions[0] is None and len(panel.positions) == 4
    assert panel.reasons == ["unoccluded", "covers the unit", "largest drop", "far from the unit"]
    # The strongest unit is the first interior one in row-major order; its 3x3 receptive field
    # is what the deconvnet of a ones kernel paints with the unit's value.
    first = panel.selections[0]
    assert first.position == (21, 9) and first.value == pytest.approx(4.5)
    expected = np.zeros((1, SIDE, SIDE), np.float32)
    expected[0, 20:23, 8:11] = 4.5
    np.testing.assert_allclose(panel.projections[0], expected, atol=1e-6)
    assert panel.boxes[0] == ((20, 23), (8, 11))
    # "covers the unit": the occluder holds the whole receptive field.
    y, x = panel.positions[1]  # type: ignore[misc]
    assert y <= 20 and y + 8 >= 23 and x <= 8 and x + 8 >= 11
    # Covering the square leaves the channel silent, so nothing projects.
    assert panel.positions[2] == (20, 8)
    assert panel.selections[2].value == 0.0
    assert not panel.projections[2].any()
    # Far away, the projection is the unoccluded one.
    np.testing.assert_allclose(panel.projections[3], expected, atol=1e-6)


def test_occluded_copies_channels_last_per_channel_fill() -> None:
    image = np.zeros((1, 4, 4, 3), np.float32)
    fill = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3)
    copies = occluded_copies(image, [(1, 2), (0, 0)], 2, fill)
    assert copies.shape == (2, 4, 4, 3) and copies.dtype == np.float32
    expected = np.zeros((2, 4, 4, 3), np.float32)
    expected[0, 1:3, 2:4] = [1, 2, 3]
    expected[1, 0:2, 0:2] = [1, 2, 3]
    np.testing.assert_array_equal(copies, expected)
    assert not image.any()


def test_mid_grey_through_the_preprocessing() -> None:
    # Caffe: BGR, 0-255, minus 104/117/123: pixel 128 becomes 24, 11, 5 in B, G, R order.
    caffe = mid_grey(PRESETS["caffe"], (3, 224, 224), np.dtype(np.float16))
    assert caffe.shape == (3, 1, 1) and caffe.dtype == np.float16
    np.testing.assert_array_equal(caffe.ravel(), [24, 11, 5])
    nhwc = mid_grey(PRESETS["imagenet"], (224, 224, 3), np.dtype(np.float32))
    assert nhwc.shape == (1, 1, 3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = [(128 / 255 - m) / s for m, s in zip(mean, std, strict=True)]
    np.testing.assert_allclose(nhwc.ravel(), expected, rtol=1e-6)
    # Two channels first (neither axis has 1 or 3 entries): the mean of each 4x4 plane.
    image = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    np.testing.assert_allclose(mean_fill(image).ravel(), [7.5, 23.5])


def test_probabilities_pass_through_and_logits_get_softmax() -> None:
    probabilities, applied = to_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]], np.float16))
    assert not applied
    np.testing.assert_allclose(probabilities, [[0.2, 0.8], [1.0, 0.0]], atol=1e-3)
    probabilities, applied = to_probabilities(np.array([[0.0, math.log(3.0)]]))
    assert applied
    np.testing.assert_allclose(probabilities, [[0.25, 0.75]])
    # Non-negative but not summing to one: scores, not a distribution.
    _, applied = to_probabilities(np.array([[0.5, 2.0]]))
    assert applied


def test_resolve_label() -> None:
    labels = ["tench, Tinca tinca", "tabby, tabby cat", "tiger cat"]
    assert resolve_label("tabby", labels, 3) == 1
    assert resolve_label("TABBY CAT", labels, 3) == 1
    assert resolve_label("tiger cat", labels, 3) == 2
    assert resolve_label("2", labels, 3) == 2
    assert resolve_label(0, None, 3) == 0
    with pytest.raises(SelectionError, match=r"class 5 is out of range.*\(0\.\.2\)"):
        resolve_label("5", labels, 3)
    with pytest.raises(SelectionError, match=r"unknown class name 'tabbby': did you mean"):
        resolve_label("tabbby", labels, 3)
    with pytest.raises(SelectionError, match="a file of class names"):
        resolve_label("tabby", None, 3)


def test_projector_for_another_layer_is_refused(blob: Projector, planted: np.ndarray) -> None:
    with pytest.raises(SelectionError, match="the projector is for layer 'relu', not 'conv'"):
        occlusion_maps(blob, planted, layer="conv", size=8, stride=8)


# --- command line -------------------------------------------------------------------------


def test_cli_digitnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, err = occlusion_cli(
        [DIGITNET, DIGIT_7, "--label", "7", "--json", "d.json"], capsys
    )
    assert code == 0, err
    assert "running on " in err
    assert "Traceback" not in err
    picture = cv2.imread(str(tmp_path / "digit_7_occlusion.png"))
    assert picture is not None and picture.shape[1] > picture.shape[0]
    data = json.loads((tmp_path / "d.json").read_text())
    # 28 px: a 5 px occluder (28 / 6 rounded) at stride 2, and a last one flush with the border.
    assert data["size"] == 5 and data["stride"] == 2
    assert data["rows"] == data["columns"] == [*range(0, 23, 2), 23]
    assert data["label"] == 7 and data["label_name"] == "7" and data["predicted"] == 7
    assert data["layer_alias"] == "relu3" and data["softmax_applied"] is True
    # Mid-grey through the model's preprocessing: (128 / 255 - 0.1307) / 0.3081.
    assert data["fill"] == pytest.approx([(128 / 255 - 0.1307) / 0.3081], rel=1e-6)
    probability = np.array(data["probability"])
    assert probability.shape == (13, 13) and np.array(data["feature_map"]).shape == (13, 13)
    assert ((probability >= 0) & (probability <= 1)).all()
    assert data["baseline"]["probability"] > 0.99
    assert probability.min() < data["baseline"]["probability"]
    assert set(np.unique(data["top_label"])) <= set(range(10))
    lines = stdout.splitlines()
    assert lines[0].startswith("class 7 (7): p = ")
    assert lines[-2:] == ["digit_7_occlusion.png", "d.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "digit_7_occlusion.png"]


def test_cli_npy_input_uses_its_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model(DIGITNET)
    array = load_input(DIGIT_7, loaded, PRESETS["raw"]).array
    np.save(tmp_path / "seven.npy", array)
    code, _, err = occlusion_cli(
        [
            DIGITNET,
            tmp_path / "seven.npy",
            "--occluder",
            "14",
            "--stride",
            "14",
            "--projections",
            "0",
            "-o",
            tmp_path / "s.png",
            "--json",
            tmp_path / "s.json",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["fill"] == pytest.approx([float(array.astype(np.float64).mean())], rel=1e-6)
    assert data["rows"] == data["columns"] == [0, 14]
    assert (tmp_path / "s.png").is_file()


def test_cli_squeezenet_matches_a_plain_forward_pass(
    squeezenet_path: Path, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A coarse 4x4 grid keeps this short; the maps are checked against onnxruntime directly."""
    report = tmp_path / "dogs.json"
    labels = squeezenet_path.parent / "Labels.txt"
    args: list[object] = [squeezenet_path, images_dir / "dogs.jpg", "--preset", "caffe"]
    args += ["--labels", labels, "--label", "Tibetan terrier", "--occluder", "56", "--stride", "56"]
    args += ["-o", tmp_path / "dogs.png", "--json", report]
    code, stdout, err = occlusion_cli(args, capsys)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["label"] == 200 and data["label_name"].startswith("Tibetan terrier")
    assert data["softmax_applied"] is False  # the model ends in a softmax
    assert data["layer"] == "conv10_2" and data["rows"] == [0, 56, 112, 168]
    assert data["fill"] == [24.0, 11.0, 5.0]
    loaded = load_model(squeezenet_path)
    image = load_input(images_dir / "dogs.jpg", loaded, PRESETS["caffe"]).array
    session = create_session(loaded.model, "cpu")
    occluded = image.copy()
    occluded[0, :, 56:112, 112:168] = np.array([24, 11, 5], np.float16).reshape(3, 1, 1)
    plain = [session.run(None, {"data_0": x})[0].ravel()[200] for x in (image, occluded)]
    assert data["baseline"]["probability"] == pytest.approx(float(plain[0]), abs=2e-3)
    assert data["probability"][1][2] == pytest.approx(float(plain[1]), abs=2e-3)
    assert "Tibetan terrier" in stdout
    assert cv2.imread(str(tmp_path / "dogs.png")) is not None


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--occluder", "40"], r"the occluder \(40 px\) is larger than the image side \(28 px\)"),
        (["--label", "seven"], r"unknown class name 'seven'"),
        (["--label", "12"], r"class 12 is out of range: the model has 10 classes"),
        (["--labels", "missing.txt"], r"labels file 'missing.txt' does not exist"),
        (["--channel", "99"], r"channel 99 is out of range: layer .* has 32 channels"),
        (["--layer", "nope"], r"unknown layer 'nope'"),
        (["-o", "out.jpg"], r"must end in \.png"),
    ],
)
def test_cli_user_errors(
    args: list[str],
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = occlusion_cli([DIGITNET, DIGIT_7, *args], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_result_has_the_panel_and_strict_json(blob: Projector, planted: np.ndarray) -> None:
    result = occlusion_maps(blob, planted, size=8, stride=4, fill=0.5, projections=2)
    assert result.projections is not None
    assert result.projections.reasons == ["unoccluded", "covers the unit", "largest drop"]
    alone = occlusion_projections(blob, planted, result, count=2)
    np.testing.assert_array_equal(result.projections.projections, alone.projections)
    data = json.loads(json.dumps(json_safe(result.to_json(["blob", "none"])), allow_nan=False))
    for key in ("feature_map", "probability", "top_label", "top_probability", "fill", "baseline"):
        assert key in data
    assert data["label_name"] == "blob" and data["size"] == 8 and data["stride"] == 4
    maps = np.array(data["feature_map"] + data["probability"], np.float64)
    assert maps.shape == (2 * len(result.rows), len(result.columns)) and np.isfinite(maps).all()
    assert np.isfinite(list(data["baseline"].values())[:2]).all()


def test_label_by_name_and_mid_grey_from_the_preprocessing(planted: np.ndarray) -> None:
    prepared = prepare(load_model(blob_net()))
    grey = Preprocessing(scale=1 / 255, mean=(0.0,), std=(1.0,))
    result = occlusion_maps(
        prepared,
        planted,
        layer="relu",
        label="none",
        labels=["blob", "none"],
        size=8,
        stride=8,
        preprocessing=grey,
        device="cpu",
    )
    assert result.label == 1
    np.testing.assert_allclose(result.fill.ravel(), [128 / 255], rtol=1e-6)
    with pytest.raises(SelectionError, match="unknown class name 'dog'"):
        occlusion_maps(prepared, planted, label="dog", labels=["blob", "none"], size=8)


def test_help_names_the_occluder_and_the_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = occlusion_cli(["--help"], capsys)
    assert code == 0
    assert "--occluder" in out and "--size H,W" in out and "--input-size" not in out
