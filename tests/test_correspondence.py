from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import DIGITNET, ROOT
from helpers import conv_relu_pool_model, run
from onnx import TensorProto, helper

from onnxdeconv import InputError, load_model, prepare
from onnxdeconv.analysis.correspondence import (
    CSV_FIELDS,
    MASK_VALUE,
    boxes_by_part,
    consistency,
    correspondence_scores,
    fit_geometry,
    mask_box,
    parse_boxes,
    random_boxes,
    read_boxed_images,
    score,
    sign_hamming,
)
from onnxdeconv.analysis.layers import correspondence_layers
from onnxdeconv.inputs import PRESETS, fit_image
from onnxdeconv.outputs import json_safe
from onnxdeconv.runtime import ForwardRunner

EXAMPLES = ROOT / "models" / "examples"
BOXES = ROOT / "tests" / "data" / "correspondence_boxes.json"
RAW = PRESETS["raw"]


def relu_model(size: int = 8) -> onnx.ModelProto:
    """x [N, 1, size, size] -> Relu: its features are the input pixels themselves (raw preset)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def uniform(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


# --- the score ----------------------------------------------------------------------------


def test_consistency_hand_computed() -> None:
    eps = np.array(
        [
            [0.5, -1.0, 0.0, 2.0],  # signs + - 0 +
            [0.1, -3.0, 1.0, -0.2],  # signs + - + -
            [-2.0, 0.0, 0.0, 4.0],  # signs - 0 0 +
        ]
    )
    # H(1,2) = 2 (features 3, 4), H(1,3) = 2 (features 1, 2), H(2,3) = 4 (all four).
    # Ordered pairs i != j count each twice: Δ = 2 · (2 + 2 + 4) = 16.
    # Normalised: 16 / (3 · 2 pairs · 4 features) = 2/3.
    assert sign_hamming(eps).tolist() == [[0, 2, 2], [2, 0, 4], [2, 4, 0]]
    total, normalised = consistency(eps)
    assert total == 16
    assert normalised == pytest.approx(2 / 3)
    found = score(eps)
    # Pair fractions 0.5, 0.5, 1.0 around their mean 2/3: variance (1/36 + 1/36 + 1/9) / 3.
    assert found.pair_std == pytest.approx(math.sqrt(1 / 18))
    # Nonzero differences: 3 + 4 + 2 of 12.
    assert found.changed == pytest.approx(0.75)


def test_sign_of_zero_is_its_own_sign() -> None:
    # 0 vs 0 agree (also -0.0), 0 vs a tiny positive differs, + vs - differs.
    eps = np.array([[0.0, -0.0, 0.0, 1.0], [0.0, 0.0, 1e-30, -1.0]])
    assert sign_hamming(eps)[0, 1] == 2
    assert consistency(eps) == (4, 4 / (2 * 1 * 4))
    # Masks that change nothing agree everywhere.
    assert consistency(np.zeros((3, 5))) == (0, 0.0)
    # fp16 features: equal values give an exact zero, the smallest step a sign.
    a = np.array([[1.0, 1.0]], np.float16)
    b = np.array([[1.0, np.nextafter(np.float16(1.0), np.float16(2.0))]], np.float16)
    eps16 = np.concatenate([a - a, a.astype(np.float32) - b.astype(np.float32)])
    assert sign_hamming(eps16)[0, 1] == 1


def test_consistency_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    eps = rng.integers(-1, 2, size=(6, 257)).astype(np.float32) * rng.random((6, 257))
    brute = sum(
        int(np.sum(np.sign(eps[i]) != np.sign(eps[j])))
        for i in range(6)
        for j in range(6)
        if i != j
    )
    total, normalised = consistency(eps)
    assert total == brute
    assert normalised == pytest.approx(brute / (6 * 5 * 257))


def test_consistency_needs_two_images() -> None:
    with pytest.raises(InputError, match="at least 2 images"):
        consistency(np.ones((1, 4)))


# --- geometry and masks -------------------------------------------------------------------


def test_fit_geometry_by_hand() -> None:
    # 600 wide, 400 tall -> factor 224/400 = 0.56, resized 336x224, crop from x = (336-224)/2 = 56.
    wide = fit_geometry(400, 600, (224, 224))
    assert (wide.scale_x, wide.scale_y, wide.left, wide.top) == (0.56, 0.56, 56, 0)
    # x: 100·0.56 - 56 = 0, 200·0.56 - 56 = 56; y: 50·0.56 = 28, 150·0.56 = 84.
    assert wide.to_input((100, 50, 200, 150)) == (0, 28, 56, 84)
    # Half cut away by the crop: x 50·0.56 - 56 = -28 -> 0, 150·0.56 - 56 = 28.
    assert wide.to_input((50, 0, 150, 50)) == (0, 0, 28, 28)
    # Wholly left of the crop (x1 maps to 0).
    assert wide.to_input((0, 0, 100, 100)) is None
    # Tall: 300 wide, 600 tall -> 224x448, crop from y = 112: the lower half starts at
    # 300·448/600 - 112 = 112 and runs past the crop's end at 224.
    tall = fit_geometry(600, 300, (224, 224))
    assert (tall.top, tall.left) == (112, 0)
    assert tall.to_input((0, 300, 300, 600)) == (0, 112, 224, 224)
    # A box that shrinks below a pixel keeps one: 1 px at scale 0.5 from x 7 -> [3.5, 4) -> 4..5.
    half = fit_geometry(448, 448, (224, 224))
    assert half.to_input((7, 7, 8, 8)) == (4, 4, 5, 5)


@pytest.mark.parametrize(
    ("shape", "box", "expected"),
    [
        # Upscaled 2x (168 -> 336 wide, crop from x 56): a pixel edge at 40 lands at 80 - 56.
        ((112, 168), (40, 20, 80, 60), (24, 40, 104, 120)),
        # Downscaled 2x by area averaging (672 -> 336 wide, crop from x 56).
        ((448, 672), (200, 60, 300, 140), (44, 30, 94, 70)),
    ],
)
def test_fit_geometry_agrees_with_fit_image(
    shape: tuple[int, int], box: tuple[int, int, int, int], expected: tuple[int, ...]
) -> None:
    picture = np.zeros((*shape, 3), np.uint8)
    x0, y0, x1, y1 = box
    picture[y0:y1, x0:x1] = 255
    fitted = fit_image(picture, (224, 224))
    ys, xs = np.nonzero(fitted[..., 0] > 127)
    found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert found == expected
    assert fit_geometry(*shape, (224, 224)).to_input(box) == expected


def test_mask_changes_only_the_box() -> None:
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    masked = mask_box(picture, (3, 2, 7, 5))
    changed = np.any(masked != picture, axis=2)
    inside = np.zeros((10, 12), bool)
    inside[2:5, 3:7] = True
    assert not changed[~inside].any()
    assert (masked[inside] == MASK_VALUE).all()
    assert picture[2, 3, 0] != masked[2, 3, 0] or picture[2, 3, 0] == MASK_VALUE


def test_random_boxes_reproducible_and_inside() -> None:
    sizes = [(3, 4), (5, 2)]
    regions = [(0, 0, 20, 10), (6, 4, 12, 16)]
    first = random_boxes(sizes, regions, draws=50, seed=7)
    assert first.shape == (50, 2, 4)
    assert np.array_equal(first, random_boxes(sizes, regions, draws=50, seed=7))
    assert not np.array_equal(first, random_boxes(sizes, regions, draws=50, seed=8))
    for image, ((height, width), (rx0, ry0, rx1, ry1)) in enumerate(
        zip(sizes, regions, strict=True)
    ):
        boxes = first[:, image]
        assert (boxes[:, 2] - boxes[:, 0] == width).all()
        assert (boxes[:, 3] - boxes[:, 1] == height).all()
        assert (boxes[:, 0] >= rx0).all() and (boxes[:, 2] <= rx1).all()
        assert (boxes[:, 1] >= ry0).all() and (boxes[:, 3] <= ry1).all()
        # Uniform over the places: all five left edges 6..10 occur in 50 draws.
        if image == 1:
            assert set(boxes[:, 0].tolist()) == {6, 7, 8, 9, 10}


# --- the analysis on a model whose features are its input --------------------------------


def test_scores_on_pixels_by_hand() -> None:
    prepared = prepare(load_model(relu_model(8)))
    # Two bright images above the grey, one dark below it; the third is twice as large.
    images = [uniform(200), uniform(200), uniform(50, 16)]
    boxes = {"part": [(2, 2, 5, 4), (2, 2, 5, 4), (4, 4, 10, 8)]}
    result = correspondence_scores(prepared, images, boxes, None, RAW, random_draws=0)
    assert result.layers == ["y"] and result.features == {"y": 64}
    # The third box maps at scale 1/2 onto the same 3x2 input box as the others.
    assert result.boxes["part"].tolist() == [[2, 2, 5, 4]] * 3
    # ε = +72 (bright) or -78 (dark) on the 6 masked pixels, 0 elsewhere: H(1,2) = 0,
    # H(1,3) = H(2,3) = 6, Δ over ordered pairs = 2 · 12 = 24, normalised 24 / (6 · 64).
    found = result.part_scores["part"]["y"]
    assert found.total == 24
    assert found.normalised == pytest.approx(24 / 384)
    assert found.changed == pytest.approx(6 / 64)
    assert result.random_scores == {"y": []} and result.rows()[-1]["kind"] == "part"


def test_masking_changes_only_the_box_end_to_end() -> None:
    prepared = prepare(load_model(relu_model(8)))
    rng = np.random.default_rng(1)
    # Pixels never equal the grey, so every masked pixel changes.
    images = [rng.choice([10, 250], size=(8, 8, 1)).repeat(3, axis=2).astype(np.uint8)] * 2
    result = correspondence_scores(
        prepared, images, {"p": [(1, 1, 4, 3), (5, 5, 8, 8)]}, None, RAW, random_draws=0
    )
    # Image 1 changes 3x2 pixels, image 2 3x3: the mean fraction changed is (6 + 9) / 2 / 64.
    assert result.part_scores["p"]["y"].changed == pytest.approx(7.5 / 64)
    # The boxes do not overlap, so every changed feature differs in sign: H = 6 + 9.
    assert result.part_scores["p"]["y"].total == 2 * 15


def test_random_baseline_seeded_sizes_and_regions() -> None:
    prepared = prepare(load_model(relu_model(8)))
    images = [uniform(200), uniform(60), uniform(90)]
    boxes = {"small": [(0, 0, 2, 2)] * 3, "large": [(0, 0, 4, 6)] * 3}
    objects = [None, (4, 0, 8, 8), None]
    run_a = correspondence_scores(
        prepared, images, boxes, None, RAW, random_draws=6, seed=5, objects=objects
    )
    run_b = correspondence_scores(
        prepared, images, boxes, None, RAW, random_draws=6, seed=5, objects=objects
    )
    other = correspondence_scores(
        prepared, images, boxes, None, RAW, random_draws=6, seed=6, objects=objects
    )
    assert np.array_equal(run_a.random_boxes, run_b.random_boxes)
    assert run_a.random_scores == run_b.random_scores
    assert not np.array_equal(run_a.random_boxes, other.random_boxes)
    # The mean part size: height (2 + 6) / 2 = 4, width (2 + 4) / 2 = 3.
    sizes = run_a.random_boxes[..., 2:] - run_a.random_boxes[..., :2]
    assert (sizes == [3, 4]).all()
    # Image 2's random boxes stay in its object region x 4..8.
    assert (run_a.random_boxes[:, 1, 0] >= 4).all()
    assert run_a.regions.tolist() == [[0, 0, 8, 8], [4, 0, 8, 8], [0, 0, 8, 8]]
    mean, std = run_a.random_mean("y")
    values = [s.normalised for s in run_a.random_scores["y"]]
    assert (mean, std) == (pytest.approx(np.mean(values)), pytest.approx(np.std(values)))


def test_crop_moves_boxes() -> None:
    prepared = prepare(load_model(relu_model(8)))
    left_dark = np.concatenate([uniform(30, 16)[:, :8], uniform(220, 16)[:, 8:]], axis=1)
    images = [left_dark, uniform(220)]
    # The crop keeps the bright right half, resized to 8x8: box x 10..14 -> (10 - 8) / 1 = 2..6.
    result = correspondence_scores(
        prepared,
        images,
        {"p": [(10, 0, 14, 4), (2, 0, 6, 4)]},
        None,
        RAW,
        random_draws=0,
        crops=[(8, 0, 16, 8), None],
    )
    assert result.boxes["p"].tolist() == [[2, 0, 6, 4]] * 2
    assert (result.fitted[0] == 220).all()
    assert result.part_scores["p"]["y"].total == 0


def test_box_errors() -> None:
    prepared = prepare(load_model(relu_model(8)))
    images = [uniform(200, 16), uniform(100, 16)]
    with pytest.raises(InputError, match=r"box 'p' \[0, 0, 20, 4\] of 'b' is not inside"):
        correspondence_scores(
            prepared, images, {"p": [(0, 0, 4, 4), (0, 0, 20, 4)]}, None, RAW, names=["a", "b"]
        )
    wide = [np.zeros((8, 32, 3), np.uint8)] * 2
    with pytest.raises(InputError, match="outside the part of the image the model sees"):
        correspondence_scores(prepared, wide, {"p": [(0, 0, 4, 4)] * 2}, None, RAW)
    with pytest.raises(InputError, match="at least 2 images"):
        correspondence_scores(prepared, images[:1], {"p": [(0, 0, 4, 4)]}, None, RAW)


def test_boxes_by_part_and_parse() -> None:
    parsed = parse_boxes(
        {
            "images": {
                "a.png": {"eye": [1, 2, 3, 4], "nose": [0, 0, 1, 1]},
                "b.png": {"eye": [0, 0, 2.5, 2]},
            },
            "crops": {"a.png": [0, 0, 10, 10]},
        }
    )
    assert parsed.images["b.png"]["eye"] == (0.0, 0.0, 2.5, 2.0)
    assert parsed.crops == {"a.png": (0.0, 0.0, 10.0, 10.0)} and parsed.objects == {}
    entries = [parsed.images["a.png"], parsed.images["b.png"]]
    assert boxes_by_part(entries, ["a.png", "b.png"], ["eye"]) == {
        "eye": [(1.0, 2.0, 3.0, 4.0), (0.0, 0.0, 2.5, 2.0)]
    }
    with pytest.raises(InputError, match=r"image 'b\.png' has no box for part 'nose'"):
        boxes_by_part(entries, ["a.png", "b.png"])
    for bad, pattern in [
        ([], "must be a JSON object"),
        ({"images": {"a": {"eye": [1, 2, 3]}}}, "give four numbers"),
        ({"images": {"a": {"eye": [3, 2, 1, 4]}}}, "x0 < x1"),
        ({"images": {"a": {"eye": [0, 0, 1, 1]}}, "boxs": {}}, "unknown key"),
        ({"images": {"a": {"eye": [0, 0, 1, 1]}}, "crops": {"b": [0, 0, 1, 1]}}, "not under"),
    ]:
        with pytest.raises(InputError, match=pattern):
            parse_boxes(bad)


# --- layers --------------------------------------------------------------------------------


def test_default_layers_digitnet() -> None:
    prepared = prepare(load_model(DIGITNET))
    # conv3 feeds only its Relu, so the two deepest spatial maps are maxpool2 and relu3.
    assert correspondence_layers(prepared) == [
        prepared.resolve("maxpool2"),
        prepared.resolve("relu3"),
    ]


def test_layer_features_fixed_batch_pads_the_last_chunk() -> None:
    prepared = prepare(load_model(conv_relu_pool_model(channels=1, size=6, batch=2)))
    x = np.random.default_rng(0).normal(size=(3, 1, 6, 6)).astype(np.float32)
    runner = ForwardRunner(prepared, expose=["relu", "pool"], keep_outputs=False)
    values = runner.run(lambda a, b: x[a:b], ["relu", "pool"], count=3)
    features = {name: value.reshape(3, -1) for name, value in values.items()}
    assert features["relu"].shape == (3, 4 * 6 * 6) and features["pool"].shape == (3, 4 * 3 * 3)
    # Relu(Conv) by hand for the odd third input.
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in prepared.graph.initializer}
    padded = np.pad(x[2, 0], 1)
    conv = (
        np.array(
            [
                [
                    [(padded[r : r + 3, c : c + 3] * weights["w"][k, 0]).sum() for c in range(6)]
                    for r in range(6)
                ]
                for k in range(4)
            ]
        )
        + weights["b"][:, None, None]
    )
    assert np.allclose(features["relu"][2], np.maximum(conv, 0).ravel(), atol=1e-5)


# --- command line -------------------------------------------------------------------------


def write_digit_boxes(path: Path, drop: str | None = None) -> Path:
    images = {
        f"digit_{d}.png": {"top": [6, 2, 22, 10], "bottom": [6, 18, 22, 26]} for d in (3, 7, 8)
    }
    if drop:
        del images["digit_8.png"][drop]
    path.write_text(json.dumps({"images": images}))
    return path


def test_cli_digitnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boxes = write_digit_boxes(tmp_path / "boxes.json")
    out, report, table = tmp_path / "c.png", tmp_path / "c.json", tmp_path / "c.csv"
    digits = [EXAMPLES / f"digit_{d}.png" for d in (3, 7, 8)]
    code, stdout, err = run(
        [
            "correspondence",
            DIGITNET,
            "--images",
            *digits,
            "--boxes",
            boxes,
            "--random",
            "3",
            "--layers",
            "relu2,relu3",
            "-o",
            out,
            "--json",
            report,
            "--csv",
            table,
        ],
        capsys,
    )
    assert code == 0, err
    assert "running on " in err
    assert "Traceback" not in err
    data = json.loads(report.read_text())
    assert data["schema"] == "onnxdeconv.correspondence/1"
    assert data["images"] == ["digit_3.png", "digit_7.png", "digit_8.png"]
    assert data["parts"] == ["top", "bottom"] and data["pairs"] == "ordered"
    rows = data["table"]
    assert [(r["part"], r["alias"]) for r in rows] == [
        ("top", "relu2"),
        ("top", "relu3"),
        ("bottom", "relu2"),
        ("bottom", "relu3"),
        ("random", "relu2"),
        ("random", "relu3"),
    ]
    features = {"relu2": 32 * 14 * 14, "relu3": 32 * 7 * 7}
    for row in rows:
        assert row["features"] == features[row["alias"]] and row["ordered_pairs"] == 6
        assert row["normalised"] == pytest.approx(row["delta"] / (6 * row["features"]))
        assert 0 <= row["normalised"] <= 1
    # 28x28 digits are fed as they are: the boxes keep their coordinates.
    assert data["boxes_in_input_pixels"]["top"]["digit_7.png"] == [6, 2, 22, 10]
    with table.open() as handle:
        assert list(csv.DictReader(handle)) == [
            {k: "" if v is None else str(v) for k, v in row.items()} for row in rows
        ]
    lines = stdout.splitlines()
    assert lines[0].startswith("normalised Δ") and "6 ordered pairs of 3 images" in lines[0]
    assert re.match(r"top\s+\d\.\d{3} ± \d\.\d{3}", lines[2])
    assert lines[4].startswith("random")
    assert lines[-3:] == [str(out), str(report), str(table)]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 300


def test_cli_digitnet_folder_skips_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(EXAMPLES, folder)
    (folder / "digit_9.png").write_bytes(b"not a png")
    boxes = json.loads(write_digit_boxes(tmp_path / "b.json").read_text())
    boxes["images"]["digit_9.png"] = {"top": [0, 0, 4, 4], "bottom": [0, 4, 4, 8]}
    (folder / "boxes.json").write_text(json.dumps(boxes))
    # No --images: the images are looked up beside the boxes file.
    code, stdout, err = run(
        [
            "correspondence",
            DIGITNET,
            "--boxes",
            folder / "boxes.json",
            "--random",
            "0",
            "-o",
            tmp_path / "c.png",
        ],
        capsys,
    )
    assert code == 0, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "digit_9.png" in skipped[0]
    assert "6 ordered pairs of 3 images" in stdout
    assert not any(line.startswith("random") for line in stdout.splitlines())


def test_cli_squeezenet(
    squeezenet_path: Path, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "s.json"
    photos = [images_dir / name for name in ("cat.jpg", "kitten_224.png", "dogs.jpg")]
    code, _, err = run(
        [
            "correspondence",
            squeezenet_path,
            "--images",
            *photos,
            "--boxes",
            BOXES,
            "--preset",
            "caffe",
            "--random",
            "2",
            "-o",
            tmp_path / "s.png",
            "--json",
            report,
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(report.read_text())
    # Only the photos given: the boxes file's other entries are left out.
    assert data["images"] == ["cat.jpg", "kitten_224.png", "dogs.jpg#right_dog"]
    assert [layer["name"] for layer in data["layers"]] == ["fire9/concat_2", "conv10_2"]
    assert data["crops"]["cat.jpg"] == [315, 71, 435, 191]
    # The cat's crop (315, 71) is 120 px wide, fitted to 224 (x 224/120): its right eye
    # x 348..373 -> 61.6..108.3, y 109..134 -> 70.9..117.6.
    assert data["boxes_in_input_pixels"]["right_eye"]["cat.jpg"] == [62, 71, 108, 118]
    parts = [row for row in data["table"] if row["kind"] == "part"]
    assert len(parts) == 3 * 2
    for row in data["table"]:
        assert 0 < row["normalised"] < 1 and row["features"] in (512 * 13 * 13, 1000 * 13 * 13)
    assert "preprocessing: preset caffe" in err


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        ("missing_part", r"image 'digit_8.png' has no box for part 'bottom'"),
        ("outside", r"box 'top' \[6, 2, 40, 10\] of 'digit_7.png' is not inside the 28x28 image"),
        ("malformed", r"is not valid JSON \(Expecting .* at line 1 column \d+\): fix the file"),
        ("missing_file", r"boxes file '.*nothing.json' does not exist"),
        ("unknown_image", r"image '.*digit_3.png' has no entry in the boxes file"),
        ("unknown_layer", r"unknown layer 'relu9'"),
    ],
)
def test_cli_errors(
    edit: str, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boxes = write_digit_boxes(
        tmp_path / "b.json", drop="bottom" if edit == "missing_part" else None
    )
    extra: list[str | Path] = []
    if edit == "outside":
        data = json.loads(boxes.read_text())
        data["images"]["digit_7.png"]["top"] = [6, 2, 40, 10]
        boxes.write_text(json.dumps(data))
    elif edit == "malformed":
        boxes.write_text('{"images": {"digit_3.png" {}}}')
    elif edit == "missing_file":
        boxes = tmp_path / "nothing.json"
    elif edit == "unknown_image":
        data = json.loads(boxes.read_text())
        del data["images"]["digit_3.png"]
        boxes.write_text(json.dumps(data))
    elif edit == "unknown_layer":
        extra = ["--layers", "relu9"]
    out = tmp_path / "c.png"
    digits = [EXAMPLES / f"digit_{d}.png" for d in (3, 7, 8)]
    code, _, err = run(
        ["correspondence", DIGITNET, "--images", *digits, "--boxes", boxes, "-o", out, *extra],
        capsys,
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()


# --- library API ----------------------------------------------------------------------------


def test_library_call_on_digitnet_without_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(EXAMPLES, folder)
    (folder / "digit_9.png").write_bytes(b"not a png")
    boxes = json.loads(write_digit_boxes(tmp_path / "b.json").read_text())
    boxes["images"]["digit_9.png"] = {"top": [0, 0, 4, 4], "bottom": [0, 4, 4, 8]}
    boxes["crops"] = {"digit_3.png": [0, 0, 28, 28]}
    (folder / "boxes.json").write_text(json.dumps(boxes))
    read = read_boxed_images(folder / "boxes.json", parts=["bottom"])
    assert read.keys == ["digit_3.png", "digit_7.png", "digit_8.png"]
    assert [key for key, _ in read.skipped] == ["digit_9.png"]
    assert list(read.boxes) == ["bottom"] and read.crops[0] == (0.0, 0.0, 28.0, 28.0)
    prepared = prepare(load_model(DIGITNET))
    done: list[int] = []
    result = correspondence_scores(
        prepared,
        read.pictures,
        read.boxes,
        ["relu3"],
        PRESETS["raw"],
        random_draws=2,
        crops=read.crops,
        names=read.keys,
        progress=done.append,
    )
    # The originals, the part's masked copies and two random draws, three images each.
    assert done[-1] == 3 * (1 + 1 + 2)
    assert result.provider.endswith("ExecutionProvider")
    data = result.to_json()
    assert set(data) == {
        "schema",
        "model",
        "images",
        "parts",
        "layers",
        "pairs",
        "sign_of_zero",
        "mask_value",
        "crops",
        "random",
        "boxes_in_input_pixels",
        "table",
    }
    assert data["model"] == str(DIGITNET) and data["images"] == read.keys
    relu3 = prepared.resolve("relu3")
    assert data["layers"] == [{"name": relu3, "label": f"relu3 ({relu3}, 32x7x7)"}]
    assert data["crops"] == {"digit_3.png": [0.0, 0.0, 28.0, 28.0]}
    assert data["boxes_in_input_pixels"]["bottom"]["digit_8.png"] == [6, 18, 22, 26]
    rows = result.rows()
    assert [list(row) for row in rows] == [list(CSV_FIELDS)] * 2
    assert [row["kind"] for row in rows] == ["part", "random"]
    assert rows[0]["alias"] == "relu3" and rows[0]["ordered_pairs"] == 6
    found = result.part_scores["bottom"][relu3]
    assert rows[0]["vs_random"] == pytest.approx(found.normalised / result.random_mean(relu3)[0])
    json.dumps(json_safe(data), allow_nan=False)
    assert result.text_table().splitlines()[2].startswith("bottom")


def test_no_random_draws_leaves_no_nan_in_strict_json() -> None:
    prepared = prepare(load_model(relu_model(8)))
    images = [uniform(200), uniform(60)]
    result = correspondence_scores(prepared, images, {"p": [(0, 0, 2, 2)] * 2}, None, RAW, 0)
    assert math.isnan(result.random_mean("y")[0]) and result.rows()[0]["vs_random"] is None
    data = json.loads(json.dumps(json_safe(result.to_json()), allow_nan=False))
    assert data["random"] == {"draws": 0, "seed": 0, "regions": {}}
    assert data["images"] == ["image 0", "image 1"] and data["model"] is None
