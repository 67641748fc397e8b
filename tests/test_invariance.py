from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGITNET, ROOT
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import load_model, prepare
from onnxdeconv.analysis.invariance import (
    CSV_COLUMNS,
    class_output,
    invariance_curves,
    model_image_size,
    probabilities,
    read_pictures,
    sweep,
    sweep_transforms,
    transform_image,
)
from onnxdeconv.analysis.layers import invariance_layers
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.inputs import PRESETS, load_input, preprocessing_from_metadata, read_image
from onnxdeconv.labels import read_labels, resolve_label
from onnxdeconv.outputs import OutputPaths, json_safe
from onnxdeconv.outputs.invariance import write_invariance

RAW = PRESETS["raw"]
DIGITS = ROOT / "models" / "examples"
GEMM_W = np.array([[0.02, -0.01, 0.03], [-0.01, 0.02, 0.0]], np.float32)
GEMM_B = np.array([0.5, -0.25], np.float32)


def pooled_net(channels: int = 3, size: int = 20) -> onnx.ModelProto:
    """x -> Relu -> GlobalAveragePool -> Flatten -> Gemm(2): bottom layer = the image itself.

    On raw (0..255) pixels the Relu is the identity, and the pooled layer is the mean colour, which
    no permutation of the pixels changes.
    """
    weight = GEMM_W[:, :channels]
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(GEMM_B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def blob(size: int = 32, sigma: float = 2.0) -> np.ndarray:
    """A Gaussian spot (peak 255) in the centre of a black RGB image; zero far from the centre."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    spot = np.round(255 * np.exp(-(x**2 + y**2) / (2 * sigma**2))).astype(np.uint8)
    return np.repeat(spot[..., None], 3, axis=2)


# -- transforms, checked by hand ------------------------------------------------------------------


@pytest.mark.parametrize("shift", [3, -2])
def test_translate_moves_a_pixel_down_by_the_amount(shift: int) -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    image[5, 7] = (255, 128, 9)
    moved = transform_image(image, "translate", shift, border="replicate")
    expected = np.zeros_like(image)
    expected[5 + shift, 7] = (255, 128, 9)
    np.testing.assert_array_equal(moved, expected)


def test_rotate_moves_corners_counter_clockwise() -> None:
    image = np.zeros((9, 9), np.uint8)
    image[0, 0] = 200  # top-left
    image[0, 8] = 100  # top-right
    quarter = transform_image(image, "rotate", 90)
    # Counter-clockwise on screen: top-left goes to bottom-left, top-right to top-left.
    assert quarter[8, 0] == 200 and quarter[0, 0] == 100
    assert np.count_nonzero(quarter) == 2
    half = transform_image(image, "rotate", 180)
    assert half[8, 8] == 200 and half[8, 0] == 100
    np.testing.assert_array_equal(transform_image(image, "rotate", 270), np.rot90(image, -1))
    np.testing.assert_array_equal(transform_image(image, "rotate", 360), image)


def test_scale_two_doubles_a_square() -> None:
    image = np.zeros((32, 32), np.uint8)
    image[14:18, 14:18] = 255  # side 4 about the centre 15.5
    for factor, side in ((2.0, 8), (0.5, 2)):
        scaled = transform_image(image, "scale", factor, border="replicate")
        rows, columns = np.nonzero(scaled > 127)
        assert rows.max() - rows.min() + 1 == side
        assert columns.max() - columns.min() + 1 == side
        assert (rows.min() + rows.max()) / 2 == 15.5


def test_border_is_not_black() -> None:
    image = np.full((10, 10, 3), 180, np.uint8)
    for border in ("reflect", "replicate"):
        for kind, amount in (("translate", 4), ("scale", 0.6), ("rotate", 30)):
            out = transform_image(image, kind, amount, border=border)  # type: ignore[arg-type]
            assert out.min() == 180, (border, kind)


def test_sweeps() -> None:
    np.testing.assert_array_equal(sweep("translate", 224), np.arange(-60, 61, 10))
    np.testing.assert_allclose(sweep("scale", 224), np.arange(6, 17) / 10)
    np.testing.assert_array_equal(sweep("rotate", 224), np.arange(0, 361, 15))
    # 28 px: ±60/224 of the height is ±7.5 px, rounded to 8.
    assert sweep("translate", 28)[[0, -1]].tolist() == [-8, 8]
    # Four steps over -6..6 miss the identity, which is always added.
    np.testing.assert_array_equal(sweep("translate", 28, 4, -6, 6), [-6, -2, 0, 2, 6])
    with pytest.raises(InputError, match="above 0"):
        sweep("scale", 28, 3, -1, 2)
    with pytest.raises(InputError, match="unknown transform"):
        sweep("shear", 28)  # type: ignore[arg-type]


# -- curves on constructed models -----------------------------------------------------------------


def test_identity_gives_zero_distance_and_the_original_probability() -> None:
    model = prepare(load_model(pooled_net()))
    image = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    for kind, identity in (("translate", 0.0), ("scale", 1.0), ("rotate", 0.0)):
        curves = invariance_curves(model, [image], RAW, kind, [identity], ["relu", "pool"])
        np.testing.assert_array_equal(curves.distances, 0.0)
    # By hand: the pooled layer is the mean colour, the logits W·mean + b.
    mean = image.reshape(-1, 3).mean(axis=0)
    expected = softmax(GEMM_W.astype(np.float64) @ mean + GEMM_B)
    assert curves.labels.tolist() == [int(expected.argmax())]
    assert curves.original_probabilities[0] == pytest.approx(expected.max(), rel=1e-5)
    assert curves.probabilities[0, 0] == pytest.approx(expected.max(), rel=1e-5)
    np.testing.assert_allclose(curves.norms[0], [np.linalg.norm(image), np.linalg.norm(mean)], 1e-5)


def test_distance_grows_with_the_shift_of_a_spot_and_pooling_ignores_it() -> None:
    model = prepare(load_model(pooled_net(size=32)))
    spot = blob()
    shifts = np.arange(-5, 6)
    curves = invariance_curves(
        model, [spot], RAW, "translate", shifts, ["relu", "pool"], label=1, border="replicate"
    )
    # The spot is zero near the border, so an integer shift is a roll; the bottom layer is the
    # image itself. ||g(y - k) - g(y)|| grows with |k| as the spot's autocorrelation falls.
    image = spot.astype(np.float64)
    expected = [np.linalg.norm(np.roll(image, k, axis=0) - image) for k in shifts]
    np.testing.assert_allclose(curves.distances[0, :, 0], expected, rtol=1e-6)
    right = curves.distances[0, 5:, 0]
    left = curves.distances[0, 5::-1, 0]
    assert np.all(np.diff(right) > 0) and np.all(np.diff(left) > 0)
    # The mean colour does not move (float32 pooling: a relative error of a few 1e-7).
    assert np.all(curves.relative_distances[0, :, 1] < 1e-5)
    np.testing.assert_allclose(curves.probabilities[0], curves.original_probabilities[0], 1e-5)
    assert curves.labels.tolist() == [1]


def test_pooled_layer_is_invariant_to_right_angle_rotations() -> None:
    model = prepare(load_model(pooled_net()))
    image = np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    curves = invariance_curves(model, [image], RAW, "rotate", [45, 90, 180, 270], ["relu", "pool"])
    # A right-angle turn of a square image about its centre permutes the pixels (no border pixel
    # comes in), so the mean colour is the same up to float32 summation order: the error of a sum
    # of 400 terms is below 400 · 2^-24 ≈ 2.4e-5 of it.
    assert np.all(curves.relative_distances[0, 1:, 1] < 2.4e-5)
    # At 45 degrees the corners come from the reflected border: the mean changes.
    assert curves.relative_distances[0, 0, 1] > 1e-3
    # The bottom layer sees the permutation itself: np.rot90 turns counter-clockwise too.
    pixels = image.astype(np.float64)
    expected = [np.linalg.norm(np.rot90(pixels, k) - pixels) for k in (1, 2, 3)]
    np.testing.assert_allclose(curves.distances[0, 1:, 0], expected, rtol=1e-6)


def test_labels_per_image_and_out_of_range() -> None:
    model = prepare(load_model(pooled_net()))
    images = [np.full((20, 20, 3), v, np.uint8) for v in (10, 200)]
    curves = invariance_curves(model, images, RAW, "scale", [1.0], ["pool"], label=[0, 1])
    assert curves.labels.tolist() == [0, 1]
    with pytest.raises(InputError, match="out of range"):
        invariance_curves(model, images, RAW, "scale", [1.0], ["pool"], label=2)
    with pytest.raises(InputError, match="one per image"):
        invariance_curves(model, images, RAW, "scale", [1.0], ["pool"], label=[0])
    # The class output itself may be a chosen layer.
    curves = invariance_curves(model, images[:1], RAW, "rotate", [0, 90], ["logits"])
    assert curves.distances.shape == (1, 2, 1) and curves.distances[0, 0, 0] == 0.0


# -- real models ----------------------------------------------------------------------------------


def test_digitnet_layers_output_and_probability() -> None:
    loaded = load_model(DIGITNET)
    model = prepare(loaded)
    aliases = {name: alias for alias, name in model.aliases.items()}
    assert [aliases[n] for n in invariance_layers(model)] == ["relu1", "relu3", "relu4"]
    assert class_output(model).kind == "logits"
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    digit = DIGITS / "digit_7.png"
    curves = invariance_curves(model, [read_image(digit)], preprocessing, "rotate", [0, 180])
    # A plain session on the original model, and a softmax by hand.
    session = ort.InferenceSession(
        loaded.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = load_input(digit, loaded, preprocessing).array
    logits = session.run(None, {loaded.input_name: x})[0][0].astype(np.float64)
    expected = softmax(logits)
    assert curves.labels.tolist() == [7] == [int(expected.argmax())]
    assert curves.original_probabilities[0] == pytest.approx(expected[7], rel=1e-5)
    assert curves.probabilities[0, 0] == pytest.approx(expected[7], rel=1e-5)
    assert curves.distances[0, 0].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(probabilities(logits[None], "logits")[0], expected, rtol=1e-12)


def test_squeezenet_layers_and_softmax_output(squeezenet_path: Path) -> None:
    model = prepare(load_model(squeezenet_path))
    aliases = {name: alias for alias, name in model.aliases.items()}
    assert [aliases[n] for n in invariance_layers(model)] == [
        "relu1",
        "relu26",
        "globalaveragepool1",
    ]
    assert class_output(model).kind == "softmax"


# -- labels ---------------------------------------------------------------------------------------


def test_read_labels_and_resolve(tmp_path: Path) -> None:
    indexed = tmp_path / "indexed.txt"
    indexed.write_text("1,tabby, tabby cat\n0,tench, Tinca tinca\n2,tiger cat\n")
    names = read_labels(indexed)
    assert names == ["tench, Tinca tinca", "tabby, tabby cat", "tiger cat"]
    plain = tmp_path / "plain.txt"
    plain.write_text("zero\none\n\n")
    assert read_labels(plain) == ["zero", "one"]
    assert resolve_label("2", None) == 2
    assert resolve_label("Tabby Cat", names) == 1
    assert resolve_label("tiger cat", names) == 2
    with pytest.raises(SelectionError, match="unknown class name 'tabbby'"):
        resolve_label("tabbby", names)
    with pytest.raises(SelectionError, match="several classes"):
        resolve_label("cat", ["cat, a", "cat, b"])
    with pytest.raises(SelectionError, match="a file of class names"):
        resolve_label("tabby", None)


# -- command line ---------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_digitnet_all_transforms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, table = tmp_path / "inv.png", tmp_path / "inv.csv"
    args = ["invariance", DIGITNET, DIGITS / "digit_3.png", DIGITS / "digit_7.png"]
    code, stdout, err = run([*args, "--steps", "5", "-o", out, "--csv", table], capsys)
    assert code == 0, err
    assert "running on " in err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_rows(table)
    assert list(rows[0]) == [
        "image",
        "transform",
        "parameter",
        "layer",
        "tensor",
        "distance",
        "relative_distance",
        "probability",
        "label",
    ]
    # Five steps: shifts -8,-4,0,4,8; factors 0.6,0.85,1.1,1.35,1.6 plus 1; turns 0..360 by 90.
    amounts = {"translate": 5, "scale": 6, "rotate": 5}
    assert len(rows) == 2 * 3 * sum(amounts.values())
    assert {r["layer"] for r in rows} == {"relu1", "relu3", "relu4"}
    assert {(r["image"], r["label"]) for r in rows} == {("digit_3.png", "3"), ("digit_7.png", "7")}
    for row in rows:
        identity = (row["transform"], float(row["parameter"])) in {
            ("translate", 0.0),
            ("scale", 1.0),
            ("rotate", 0.0),
            ("rotate", 360.0),
        }
        assert (float(row["distance"]) == 0.0) == identity, row
    assert "translate" in stdout and str(out) in stdout


def test_cli_squeezenet_one_transform_by_label_name(
    tmp_path: Path, squeezenet_path: Path, images_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "sq.csv"
    labels = squeezenet_path.parent / "Labels.txt"
    photos = [images_dir / "kitten_224.png", images_dir / "dogs.jpg"]
    args = ["invariance", squeezenet_path, *photos, "--preset", "caffe", "--transform", "rotate"]
    args += ["--steps", "3", "--label", "tabby", "--labels", labels, "--csv", table]
    args += ["-o", tmp_path / "sq.png"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    rows = read_rows(table)
    assert len(rows) == 2 * 3 * 3  # images x {0, 180, 360} x default layers
    assert {r["label"] for r in rows} == {"281"}  # "281,tabby, tabby cat" in Labels.txt
    assert {r["layer"] for r in rows} == {"relu1", "relu26", "globalaveragepool1"}
    loaded = load_model(squeezenet_path)
    session = ort.InferenceSession(
        loaded.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for photo in photos:
        x = load_input(photo, loaded, PRESETS["caffe"]).array
        expected = float(session.run(None, {loaded.input_name: x})[0].reshape(-1)[281])
        at_zero = [r for r in rows if r["image"] == photo.name and r["parameter"] == "0"]
        assert float(at_zero[0]["probability"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert (tmp_path / "sq.png").is_file()


def test_cli_skips_an_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    table = tmp_path / "out.csv"
    args = ["invariance", DIGITNET, bad, DIGITS / "digit_7.png", "--transform", "scale"]
    code, _, err = run([*args, "--steps", "2", "--csv", table, "-o", tmp_path / "o.png"], capsys)
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert {r["image"] for r in read_rows(table)} == {"digit_7.png"}
    code, _, err = run(["invariance", DIGITNET, bad, "-o", tmp_path / "p.png"], capsys)
    assert code == 2 and "none of the 1 images" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--transform", "shear"], "--transform"),
        (["--layers", "relu9"], "unknown layer 'relu9'"),
        (["--range", "0,90"], "--range needs exactly one --transform"),
        (["--label", "cat"], "unknown class name"),
        (["-o", "out.jpg"], "must end in .png"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["invariance", DIGITNET, DIGITS / "digit_7.png", *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not list(tmp_path.iterdir())


# -- library API ----------------------------------------------------------------------------------


def test_library_sweeps_on_digitnet_without_the_cli(tmp_path: Path) -> None:
    loaded = load_model(DIGITNET)
    prepared = prepare(loaded)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    (tmp_path / "broken.png").write_text("not an image")
    shutil.copy(DIGITS / "digit_3.png", tmp_path / "digit_3.png")
    read = read_pictures([tmp_path, DIGITS / "digit_7.png"], model_image_size(prepared))
    assert read.names == ["digit_3.png", "digit_7.png"]
    assert [path.name for path, _ in read.skipped] == ["broken.png"]
    results = sweep_transforms(prepared, read.pictures, preprocessing, ["rotate", "scale"], steps=3)
    assert [curves.kind for curves in results] == ["rotate", "scale"]
    rotate = results[0]
    np.testing.assert_array_equal(rotate.amounts, [0, 180, 360])
    assert [rotate.aliases[name] for name in rotate.layers] == ["relu1", "relu3", "relu4"]
    data = rotate.to_json(read.names)
    assert set(data) == {
        "transform",
        "unit",
        "identity",
        "amounts",
        "layers",
        "aliases",
        "images",
        "labels",
        "distances",
        "relative_distances",
        "norms",
        "probabilities",
        "original_probabilities",
    }
    assert data["images"] == read.names and data["labels"] == [3, 7]
    assert np.array(data["distances"]).shape == (2, 3, 3)
    # The identity (turn 0) moves nothing.
    assert data["distances"][0][0] == [0.0, 0.0, 0.0]
    json.dumps(json_safe(data), allow_nan=False)
    rows = rotate.rows(read.names)
    assert len(rows) == 2 * 3 * 3 and rows[0][:5] == (
        "digit_3.png",
        "rotate",
        "0",
        "relu1",
        rotate.layers[0],
    )
    assert "relu1" in rotate.summary() and rotate.summary().startswith("rotate")


def test_zero_norm_layer_gives_null_in_strict_json_and_an_empty_csv_cell() -> None:
    prepared = prepare(load_model(pooled_net()))
    black = np.zeros((20, 20, 3), np.uint8)
    curves = invariance_curves(prepared, [black], RAW, "rotate", [0, 90], ["relu"])
    assert curves.norms[0, 0] == 0.0 and np.isnan(curves.relative_distances).all()
    text = json.dumps(json_safe(curves.to_json()), allow_nan=False)
    assert json.loads(text)["relative_distances"] == [[[None], [None]]]
    assert [row[6] for row in curves.rows(["black"])] == [None, None]
    with pytest.raises(SelectionError, match="no layers given"):
        invariance_curves(prepared, [black], RAW, "rotate", [0], [" "])


def test_write_invariance_writes_the_figure_and_a_csv_row_per_image_amount_and_layer(
    tmp_path: Path,
) -> None:
    loaded = load_model(DIGITNET)
    prepared = prepare(loaded)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    pictures = [DIGITS / "digit_3.png", DIGITS / "digit_7.png"]
    read = read_pictures(pictures, model_image_size(prepared))
    results = sweep_transforms(prepared, read.pictures, preprocessing, ["rotate", "scale"], steps=3)
    paths = OutputPaths(tmp_path / "inv.png", csv=tmp_path / "inv.csv")
    summary = write_invariance(
        results, read.names, paths, prepared=prepared, picture=read.pictures[0], model_name="m"
    )
    assert summary.splitlines() == [curves.summary() for curves in results]
    assert paths.output.read_bytes().startswith(b"\x89PNG")
    assert paths.csv is not None
    rows = read_rows(paths.csv)
    assert tuple(rows[0]) == CSV_COLUMNS
    # Per transform: 2 images x its amounts x 3 layers (relu1, relu3, relu4).
    kinds = [kind for curves in results for kind in [curves.kind] * 2 * len(curves.amounts) * 3]
    assert [row["transform"] for row in rows] == kinds and len(kinds) == 2 * (3 + 4) * 3
    assert {row["image"] for row in rows} == {"digit_3.png", "digit_7.png"}
    assert {row["layer"] for row in rows} == {"relu1", "relu3", "relu4"}
    # Without --csv only the figure is written.
    write_invariance(
        results,
        read.names,
        OutputPaths(tmp_path / "alone.png"),
        prepared=prepared,
        picture=read.pictures[0],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.png", "inv.csv", "inv.png"]
