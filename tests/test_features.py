"""`onnxdeconv features` and `merge`: exact top-k, shards, resume, receptive-field crops, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGITNET, ROOT
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import OnnxDeconvError, Projector, load_model, prepare
from onnxdeconv.analysis.features import (
    EMPTY,
    FeaturesState,
    MaximaRunner,
    PendingUpdates,
    StateMismatchError,
    crop_padded,
    unit_box,
)
from onnxdeconv.analysis.layers import feature_layers
from onnxdeconv.cli import parse
from onnxdeconv.engines import file_meta, folder_images, merge_states, mine_features
from onnxdeconv.errors import InputError
from onnxdeconv.graph.passes import instrument, with_input_shape
from onnxdeconv.inputs import load_input, preprocessing_from_metadata

EXAMPLES = ROOT / "models" / "examples"


def assert_user_error(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


# --- top-k bookkeeping ----------------------------------------------------------------------


def brute_force(activations: np.ndarray, k: int) -> list[list[tuple[int, tuple[int, ...], float]]]:
    """Per channel: every image's maximum (first in row-major order), all sorted, first k."""
    count, channels = activations.shape[:2]
    result = []
    for c in range(channels):
        rows = []
        for n in range(count):
            fmap = activations[n, c]
            best, where = -np.inf, None
            for index in np.ndindex(fmap.shape):
                if fmap[index] > best:
                    best, where = float(fmap[index]), index
            rows.append((n, where, best))
        rows.sort(key=lambda r: (-r[2], r[0]))
        result.append(rows[:k])
    return result


def as_lists(state: FeaturesState, layer: str) -> list[list[tuple[int, tuple[int, ...], float]]]:
    top = state.layers[layer]
    return [
        [(e.image, e.position, e.value) for e in top.entries(r)] for r in range(len(top.channels))
    ]


def test_topk_by_hand() -> None:
    # Channel 0: image maxima 3 (at 0,1), 5 (at 1,0, the first of two fives), 3 (at 1,1).
    # Ranked by value, ties by image id: image 1 (5), image 0 (3), image 2 (3).
    activations = np.array([[[[1, 3], [2, 0]]], [[[0, 1], [5, 5]]], [[[0, 0], [0, 3]]]], np.float32)
    state = FeaturesState(2, ["a", "b", "c"])
    state.update({"L": activations[2:]}, [2])
    state.update({"L": activations[:2]}, [0, 1])
    top = state.layers["L"]
    assert top.images.tolist() == [[1, 0]]
    assert top.values.tolist() == [[5.0, 3.0]]
    assert top.positions.tolist() == [[[1, 0], [0, 1]]]


def test_topk_with_fewer_images_than_k() -> None:
    state = FeaturesState(4, ["a", "b"])
    state.update({"L": np.array([[[[2.0]]], [[[7.0]]]], np.float32)}, [0, 1])
    top = state.layers["L"]
    assert top.images.tolist() == [[1, 0, EMPTY, EMPTY]]
    assert [e.image for e in top.entries(0)] == [1, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_in_random_batches_equals_sorting_all(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, k = 60, 7
    # Small integers: many ties, both between images and between positions of one map.
    activations = rng.integers(-3, 6, size=(count, 5, 3, 4)).astype(np.float32)
    order = rng.permutation(count)
    state = FeaturesState(k, [f"img{i}" for i in range(count)])
    start = 0
    while start < count:
        size = int(rng.integers(1, 9))
        ids = order[start : start + size]
        state.update({"L": activations[ids]}, ids.tolist())
        start += size
    assert as_lists(state, "L") == brute_force(activations, k)
    assert state.processed == count and state.seen.all()


def test_maxima_alone_rank_alike_and_positions_come_later() -> None:
    # The stream records values only; the position of a winner is found when it is projected.
    rng = np.random.default_rng(4)
    count, k = 50, 5
    activations = rng.integers(0, 7, size=(count, 4, 3, 3)).astype(np.float32)
    state = FeaturesState(k, [f"img{i}" for i in range(count)])
    for ids in np.array_split(rng.permutation(count), 7):
        state.update_maxima({"L": activations[ids].max(axis=(2, 3))}, ids.tolist())
    layer = state.layers["L"]
    assert layer.rank == 0
    expected = brute_force(activations, k)
    assert [[(e.image, e.value) for e in layer.entries(r)] for r in range(4)] == [
        [(n, v) for n, _, v in rows] for rows in expected
    ]
    positioned = FeaturesState(k, state.images)
    positioned.add_layer("L", range(4), rank=2)
    for ids in np.array_split(np.arange(count), 3):
        positioned.update_maxima({"L": activations[ids].max(axis=(2, 3))}, ids.tolist())
    top = positioned.layers["L"]
    assert all(e.position is None for r in range(4) for e in top.entries(r))
    for row in range(4):
        for slot, entry in enumerate(top.entries(row)):
            fmap = activations[entry.image, row]
            top.locate(row, slot, np.unravel_index(int(fmap.argmax()), fmap.shape))
    assert as_lists(positioned, "L") == expected


def test_counting_an_image_twice_is_refused() -> None:
    state = FeaturesState(3, ["a", "b"])
    state.update({"L": np.zeros((1, 2, 2, 2), np.float32)}, [0])
    with pytest.raises(ValueError, match="already counted"):
        state.update({"L": np.zeros((1, 2, 2, 2), np.float32)}, [0])
    with pytest.raises(ValueError, match="already counted"):
        state.update({"L": np.zeros((2, 2, 2, 2), np.float32)}, [1, 1])
    assert state.processed == 1


def test_pending_updates_count_like_direct_ones() -> None:
    rng = np.random.default_rng(8)
    maxima = rng.integers(0, 5, size=(70, 3)).astype(np.float32)
    names = [str(i) for i in range(70)]
    direct, queued = FeaturesState(4, names), FeaturesState(4, names)
    pending = PendingUpdates(queued, images=16)
    for ids in np.array_split(np.arange(70), 10):
        direct.update_maxima({"L": maxima[ids]}, ids.tolist())
        pending.add({"L": maxima[ids]}, ids.tolist())
    assert queued.processed == 63  # three groups of 3 x 7 images counted, 7 waiting
    pending.flush()
    assert_same_state(queued, direct)


def test_merged_shards_equal_one_run_and_survive_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    count, k = 45, 9
    activations = {
        "a": rng.integers(0, 4, size=(count, 6, 5, 5)).astype(np.float32),
        "b": rng.normal(size=(count, 3, 2, 7)).astype(np.float32),
    }
    names = [f"{i:03d}.png" for i in range(count)]
    whole = FeaturesState(k, names)
    whole.skip(0, "unreadable")
    whole.update({n: a[1:] for n, a in activations.items()}, range(1, count))
    shards = []
    for index in range(3):
        shard = FeaturesState(k, names)
        ids = [i for i in range(index, count, 3) if i != 0]
        if index == 0:
            shard.skip(0, "unreadable")
        for part in np.array_split(np.asarray(ids), 2):
            shard.update({n: a[part] for n, a in activations.items()}, part.tolist())
        shard.save(tmp_path / f"s{index}.npz")
        shards.append(FeaturesState.load(tmp_path / f"s{index}.npz"))
    merged = shards[2].merge(shards[0]).merge(shards[1])
    for name in activations:
        for field in ("values", "images", "positions", "channels"):
            np.testing.assert_array_equal(
                getattr(merged.layers[name], field), getattr(whole.layers[name], field)
            )
    assert merged.seen.all() and merged.skipped == {0: "unreadable"} and merged.counted == 44
    readable = json.loads((tmp_path / "s0.json").read_text())
    assert readable["images"] == names and readable["processed"] == 15


def test_merging_overlapping_states_is_refused() -> None:
    state = FeaturesState(2, ["a", "b"])
    state.update({"L": np.ones((1, 1, 2, 2), np.float32)}, [1])
    with pytest.raises(OnnxDeconvError, match="in both states"):
        state.merge(state)


# --- the streaming graph ----------------------------------------------------------------------


def layer_activations(model_path: Path, layer: str, batch: np.ndarray) -> np.ndarray:
    """The layer's full feature maps from ORT, with the tensor exposed as an output."""
    loaded = load_model(model_path)
    prepared = prepare(loaded)
    sized = with_input_shape(loaded.model, loaded.input_name, (1, *prepared.input_shape))
    exposed, _ = instrument(sized, [layer], [], prepared.info, batch=1)
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run([layer], {loaded.input_name: batch[i : i + 1]})[0] for i in range(len(batch))]
    )


def test_maxima_graph_matches_the_full_feature_maps() -> None:
    prepared = prepare(load_model(DIGITNET))
    layer = prepared.resolve("relu2")
    chosen = [3, 0, 7]
    runner = MaximaRunner(prepared, {prepared.resolve("relu1"): [1], layer: chosen}, device="cpu")
    batch = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype(np.float32)
    maxima = runner(batch)
    full = layer_activations(DIGITNET, layer, batch)[:, chosen]
    np.testing.assert_allclose(maxima[layer], full.max(axis=(2, 3)), rtol=1e-6)
    runner.chunk = 2  # as for a model whose batch is fixed at 2: 2 + 2 + 1 padded
    chunked = runner(batch)
    for name, values in maxima.items():
        np.testing.assert_allclose(chunked[name], values, rtol=1e-6)


def test_maxima_graph_on_fp16_squeezenet_with_fixed_batch(squeezenet_path: Path) -> None:
    prepared = prepare(load_model(squeezenet_path))
    assert prepared.loaded.input_shape[0] == 1
    layer = prepared.resolve("relu13")
    runner = MaximaRunner(prepared, {layer: list(range(0, 128, 9))}, device="cpu")
    assert runner.chunk is None  # the cut graph runs at any batch
    batch = (np.random.default_rng(1).normal(size=(3, 3, 224, 224)) * 60).astype(np.float16)
    maxima = runner(batch)
    full = layer_activations(squeezenet_path, layer, batch)[:, ::9].astype(np.float32)
    np.testing.assert_allclose(maxima[layer], full.max(axis=(2, 3)), rtol=1e-3)


def test_default_layers_are_the_deepest_rectified_per_resolution(squeezenet_path: Path) -> None:
    digit = prepare(load_model(DIGITNET))
    assert feature_layers(digit) == [digit.resolve(a) for a in ("relu1", "relu2", "relu3")]
    squeeze = prepare(load_model(squeezenet_path))
    expected = ["conv1_2", "fire3/expand3x3_2", "fire5/expand3x3_2", "conv10_2"]
    assert feature_layers(squeeze) == expected


# --- receptive-field crops against a measured receptive field ----------------------------------


def crop_by_hand() -> None:
    picture = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(crop_padded(picture, ((1, 3), (2, 4)), -1), [[6, 7], [10, 11]])
    np.testing.assert_array_equal(
        crop_padded(picture, ((-1, 2), (3, 6)), -1), [[-1, -1, -1], [3, -1, -1], [7, -1, -1]]
    )


def test_crop_padded_by_hand() -> None:
    crop_by_hand()
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[1, 1] = 200
    patch = crop_padded(colour, ((1, 4), (1, 3)), 128)
    assert patch.shape == (3, 2, 3)
    assert patch[0, 0].tolist() == [200] * 3
    assert (patch[1:] == 128).all() and (patch[0, 1] == 128).all()


def measured_support(session: ort.InferenceSession, name: str, size: int, layer: str) -> np.ndarray:
    """For each input pixel, the layer's response to an impulse there minus its response to zero.

    With non-negative weights and no bias every path adds, and each max pool passes the impulse,
    so a unit changes exactly when the pixel is inside its receptive field.
    """
    impulses = np.zeros((size * size + 1, 1, size, size), np.float32)
    for pixel in range(size * size):
        impulses[pixel + 1, 0, pixel // size, pixel % size] = 1.0
    out = session.run([layer], {name: impulses})[0]
    return np.asarray(out[1:] != out[:1]).reshape(size, size, *out.shape[1:])


def support_box(changed: np.ndarray) -> tuple[tuple[int, int], ...]:
    rows, columns = np.nonzero(changed)
    return (int(rows.min()), int(rows.max()) + 1), (int(columns.min()), int(columns.max()) + 1)


def clip(box: tuple[tuple[int, int], ...], size: int) -> tuple[tuple[int, int], ...]:
    return tuple((max(b, 0), min(e, size)) for b, e in box)


def positive_pool_net(size: int = 23) -> onnx.ModelProto:
    """x -> Conv 3x3 p1 -> Relu -> MaxPool 3x3/2 p1 -> Conv 3x3/2 p0 -> Relu -> Conv 2x2 d2 p1."""
    rng = np.random.default_rng(3)
    w1 = np.abs(rng.normal(size=(2, 1, 3, 3))).astype(np.float32) + 0.1
    w2 = np.abs(rng.normal(size=(3, 2, 3, 3))).astype(np.float32) + 0.1
    w3 = np.abs(rng.normal(size=(2, 3, 2, 2))).astype(np.float32) + 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], dilations=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c3"], ["r3"]),
    ]
    graph = helper.make_graph(
        nodes,
        "positive",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, size, size])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", None, None, None])
            for n in ("r1", "p1", "r2", "r3")
        ],
        initializer=[
            numpy_helper.from_array(w, n) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def assert_boxes_match(model: onnx.ModelProto, layers: list[str], size: int) -> tuple[int, int]:
    """Compare every unit's box with its measured support; return (units, units matched exactly).

    Every edge of the box that lies inside the image is exactly where the support ends. Past the
    border the box may be larger than the support: a padded (missing) unit of a deeper strided
    layer would have seen the pixels just inside the border, which no real unit below reaches.
    """
    prepared = prepare(load_model(model))
    name = prepared.loaded.input_name
    free = with_input_shape(model, name, ("N", 1, size, size))
    exposed, _ = instrument(free, layers, [], prepared.info)
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = np.repeat(np.arange(size)[:, None], size, axis=1)
    units = exact = 0
    for layer in layers:
        changed = measured_support(session, name, size, layer)
        field = prepared.receptive_fields[layer]
        for position in np.ndindex(*changed.shape[3:]):
            measured = support_box(changed[:, :, 0, position[0], position[1]])
            box = unit_box(field, position, (size, size))
            for (begin, end), (low, high) in zip(box, measured, strict=True):
                assert begin <= low and high <= end, (layer, position, box, measured)
                assert begin < 0 or low == begin, (layer, position, box, measured)
                assert end > size or high == end, (layer, position, box, measured)
            exact += clip(box, size) == measured
            # The crop of a picture of row numbers has the box's shape and holds those rows.
            crop = crop_padded(rows, box, -1)
            assert crop.shape == tuple(e - b for b, e in box)
            inside = crop[crop >= 0]
            assert (inside.min(), inside.max() + 1) == clip(box, size)[0]
            units += 1
    return units, exact


def test_receptive_field_box_equals_measured_support_small_net() -> None:
    units, exact = assert_boxes_match(positive_pool_net(), ["r1", "p1", "r2", "r3"], 23)
    assert units == 23 * 23 + 12 * 12 + 5 * 5 + 5 * 5
    # Only r3 (dilated, padded, above a stride-4 layer) is wider than its support at the border.
    assert exact == units - 5 * 5 + 3 * 3  # r3: only its 3x3 interior units are exact


def digitnet_with_positive_weights() -> onnx.ModelProto:
    model = onnx.load(str(DIGITNET))
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    biases = {n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2}
    for tensor in model.graph.initializer:
        if tensor.name in convs | biases:
            values = numpy_helper.to_array(tensor)
            values = np.abs(values) + 0.01 if tensor.name in convs else np.zeros_like(values)
            tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
    return model


def test_receptive_field_box_equals_measured_support_digitnet() -> None:
    model = digitnet_with_positive_weights()
    prepared = prepare(load_model(model))
    aliases = ("relu1", "maxpool1", "relu2", "maxpool2", "relu3")
    units, exact = assert_boxes_match(model, [prepared.resolve(a) for a in aliases], 28)
    assert units == 28 * 28 + 14 * 14 * 2 + 7 * 7 * 2
    assert exact == units  # DigitNet pads only where no pixel is lost: every box is exact


def test_trained_digitnet_units_see_only_their_box() -> None:
    prepared = prepare(load_model(DIGITNET))
    layer = prepared.resolve("relu3")
    session = ort.InferenceSession(str(DIGITNET), providers=["CPUExecutionProvider"])
    exposed, _ = instrument(
        with_input_shape(prepared.loaded.model, "image", ("N", 1, 28, 28)),
        [layer],
        [],
        prepared.info,
    )
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    base = np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)
    pushed = np.repeat(base, 28 * 28 + 1, axis=0)
    for pixel in range(28 * 28):
        pushed[pixel + 1, 0, pixel // 28, pixel % 28] += 5.0
    out = session.run([layer], {"image": pushed})[0]
    changed = (np.abs(out[1:] - out[:1]) > 1e-6).reshape(28, 28, *out.shape[1:])
    field = prepared.receptive_fields[layer]
    for position in np.ndindex(7, 7):
        seen = changed[:, :, :, position[0], position[1]].any(axis=2)
        if not seen.any():
            continue
        (top, bottom), (left, right) = clip(unit_box(field, position, (28, 28)), 28)
        outside = seen.copy()
        outside[top:bottom, left:right] = False
        assert not outside.any(), position


# --- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three example digits, flipped and shifted: 18 images in two subfolders."""
    folder = tmp_path_factory.mktemp("digits")
    for path in sorted(EXAMPLES.glob("*.png")):
        digit = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        variants = {
            "plain": digit,
            "flip_lr": digit[:, ::-1],
            "flip_ud": digit[::-1],
            "shift_right": np.roll(digit, 4, axis=1),
            "shift_down": np.roll(digit, 3, axis=0),
            "turned": np.rot90(digit).copy(),
        }
        for name, picture in variants.items():
            sub = folder / ("plain" if name == "plain" else "varied")
            sub.mkdir(exist_ok=True)
            cv2.imwrite(str(sub / f"{path.stem}_{name}.png"), picture)
    return folder


def independent_topk(folder: Path, layer_alias: str, channels: list[int], k: int) -> list:
    """Top-k from whole feature maps of every image, sorted in Python."""
    loaded = load_model(DIGITNET)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    files = sorted(p for p in folder.rglob("*.png"))
    batch = np.concatenate([load_input(p, loaded, preprocessing).array for p in files])
    projector = Projector(loaded, layer_alias)
    maps = projector.forward(batch).activations[:, channels]
    result = []
    for rows in brute_force(maps, k):
        result.append([(str(files[n].relative_to(folder)), list(w), v) for n, w, v in rows])
    return result


def read_entries(path: Path) -> list:
    report = json.loads(path.read_text())
    return [
        [(e["image"], e["position"], e["value"]) for e in channel["entries"]]
        for channel in report["channels"]
    ]


def test_cli_writes_pictures_and_json(
    digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["features", DIGITNET, digit_folder, "--layers", "relu2,relu3", "--channels", "0-5"]
    code, stdout, err = run([*args, "--per-page", "4", "-o", out], capsys)
    assert code == 0, err
    assert "running on " in err
    written = stdout.split()
    for name in ("relu2_page1.png", "relu2_page2.png", "relu3_page1.png", "relu2.json"):
        assert str(out / name) in written
        assert (out / name).stat().st_size > 0
    picture = cv2.imread(str(out / "relu3_page1.png"))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 300
    assert "img/s" in err
    for alias in ("relu2", "relu3"):
        report = json.loads((out / f"{alias}.json").read_text())
        assert report["counted"] == 18 and report["skipped_images"] == []
        assert [c["channel"] for c in report["channels"]] == list(range(6))
        expected = independent_topk(digit_folder, alias, list(range(6)), 9)
        for got, want in zip(read_entries(out / f"{alias}.json"), expected, strict=True):
            assert [(i, p) for i, p, _ in got] == [(i, p) for i, p, _ in want]
            np.testing.assert_allclose([v for *_, v in got], [v for *_, v in want], rtol=1e-5)
        field = prepare(load_model(DIGITNET)).receptive_fields[report["layer"]]
        first = report["channels"][0]["entries"][0]
        assert first["box"] == [list(b) for b in field.box(tuple(first["position"]))]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_corrupt_image_is_skipped_and_listed(
    digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits"
    for path in sorted(digit_folder.rglob("*.png"))[:10]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "plain" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    args = ["features", DIGITNET, folder, "--layers", "relu3", "--channels", "0-1", "-o", out]
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert "IHDR" not in err  # OpenCV's own complaint is silenced: one line per image
    assert len(re.findall(r"skipped: '.*(broken\.png|empty\.jpg)'", err)) == 2
    report = json.loads((out / "relu3.json").read_text())
    assert sorted(s["image"] for s in report["skipped_images"]) == ["broken.png", "plain/empty.jpg"]
    assert report["processed"] == 12 and report["counted"] == 10
    assert all(len(c["entries"]) == 9 for c in report["channels"])


def assert_same_state(a: FeaturesState, b: FeaturesState) -> None:
    assert a.images == b.images and a.skipped == b.skipped
    np.testing.assert_array_equal(a.seen, b.seen)
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        for field in ("channels", "values", "images", "positions"):
            np.testing.assert_array_equal(
                getattr(a.layers[name], field), getattr(b.layers[name], field)
            )


SMALL = ["--layers", "relu2", "--channels", "0-3", "--batch-size", "4"]


def test_shards_merge_to_one_run(
    digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert run(["features", DIGITNET, digit_folder, *SMALL, "-o", one], capsys)[0] == 0
    for index in range(3):
        code, stdout, err = run(
            ["features", DIGITNET, digit_folder, *SMALL, "--shard", f"{index}/3", "-o", sharded],
            capsys,
        )
        assert code == 0, err
        assert stdout.split() == [str(sharded / f"features_state_{index}of3.npz")]
        assert FeaturesState.load(sharded / f"features_state_{index}of3.npz").processed == 6
    assert not list(sharded.glob("*.png"))  # shards only write their state
    states = sorted(sharded.glob("features_state_*of3.npz"))
    code, _, err = run(["merge", *states[:2], "-o", sharded], capsys)
    assert_user_error(code, err, r"6 of 18 images are in none of the states.*\(option --partial\)$")
    code, stdout, err = run(["merge", *states, "-o", sharded], capsys)
    assert code == 0, err
    assert "running on " in err
    assert_same_state(
        FeaturesState.load(sharded / "features_state.npz"),
        FeaturesState.load(one / "features_state.npz"),
    )
    assert read_entries(sharded / "relu2.json") == read_entries(one / "relu2.json")
    merged, single = cv2.imread(str(sharded / "relu2.png")), cv2.imread(str(one / "relu2.png"))
    np.testing.assert_array_equal(merged, single)
    code, _, err = run(["merge", states[0], states[0], "-o", tmp_path / "twice"], capsys)
    assert_user_error(code, err, "in both states")


class Killed(BaseException):
    """Stands for the process being killed: nothing in the command catches it."""


def test_resume_after_a_kill_equals_one_run(
    digit_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, killed = tmp_path / "one", tmp_path / "killed"
    assert run(["features", DIGITNET, digit_folder, *SMALL, "-o", one], capsys)[0] == 0
    original = FeaturesState.update_maxima
    calls = []

    def dies_in_second_count(self: FeaturesState, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FeaturesState, "update_maxima", dies_in_second_count)
    args = ["features", DIGITNET, digit_folder, *SMALL, "--checkpoint-every", "2", "-o", killed]
    with pytest.raises(Killed):
        run(args, capsys)
    capsys.readouterr()
    monkeypatch.setattr(FeaturesState, "update_maxima", original)
    checkpoint = FeaturesState.load(killed / "features_state.npz")
    # Batches 1-2 were counted and checkpointed; batches 3-4 die with the process before the
    # next checkpoint, and are streamed again.
    assert checkpoint.processed == 8 and checkpoint.seen[:8].all()
    assert not list(killed.glob("*.png"))
    code, _, err = run([*args, "--resume"], capsys)
    assert code == 0, err
    assert "resuming from" in err and "10 of 18 images to stream" in err
    resumed = FeaturesState.load(killed / "features_state.npz")
    assert resumed.seen.all() and resumed.processed == 18
    for row in resumed.layers[next(iter(resumed.layers))].images:
        assert len(set(row.tolist())) == len(row)  # no image counted twice
    assert_same_state(resumed, FeaturesState.load(one / "features_state.npz"))
    assert read_entries(killed / "relu2.json") == read_entries(one / "relu2.json")
    code, _, err = run([*args, "--resume", "--per-channel", "4"], capsys)
    assert_user_error(code, err, r"other options \(per_channel differ\).*\(option --per-channel\)$")


def test_user_errors_exit_2_with_one_line(
    digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run(["features", DIGITNET, tmp_path / "nowhere", "-o", out], capsys)
    assert_user_error(code, err, "image folder .* does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run(["features", DIGITNET, tmp_path / "empty", "-o", out], capsys)
    assert_user_error(code, err, "no images")
    for shard in ("1", "2/2", "a/b", "0/0", "-1/3", "1/2/3"):
        code, _, err = run(["features", DIGITNET, digit_folder, "--shard", shard], capsys)
        assert_user_error(code, err, r"--shard.*expected i/n")
    code, _, err = run(["features", DIGITNET, digit_folder, "--layers", "relu9", "-o", out], capsys)
    assert_user_error(code, err, "unknown layer 'relu9'")
    code, _, err = run(["features", DIGITNET, digit_folder, "--layers", "gemm1", "-o", out], capsys)
    assert_user_error(code, err, "no feature maps")
    code, _, err = run(["features", DIGITNET, digit_folder, "--channels", "3-1"], capsys)
    assert_user_error(code, err, "--channels")
    code, _, err = run(
        ["features", DIGITNET, digit_folder, "--layers", "relu1", "--channels", "40-50"], capsys
    )
    assert_user_error(code, err, r"none of the chosen channels.*\(option --channels\)$")
    code, _, err = run(["merge", tmp_path / "missing.npz", "-o", out], capsys)
    assert_user_error(code, err, "does not exist")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    code, _, err = run(["merge", tmp_path / "junk.npz", "-o", out], capsys)
    assert_user_error(code, err, "not a features state")


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("features", "merge"):
        code, stdout, _ = run([command, "--help"], capsys)
        assert code == 0 and re.search(rf"^\s*Example: onnxdeconv {command} ", stdout, re.M)
    assert parse.channel_ranges("0-2,7,1") == [0, 1, 2, 7]
    assert parse.channel_ranges("all") is None


# --- the library API: the mergeable state and the local engine, without the CLI -------------


def random_state_parts(
    seed: int, count: int = 40, k: int = 5
) -> tuple[list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = [f"{i:03d}.png" for i in range(count)]
    # Small integers: many ties between images, which must go to the lower id in every order.
    activations = {
        "a": rng.integers(0, 4, size=(count, 3, 4, 4)).astype(np.float32),
        "b": rng.integers(0, 3, size=(count, 2, 3)).astype(np.float32),
    }
    return names, activations


def test_state_merge_of_shards_is_exact_in_any_order() -> None:
    names, activations = random_state_parts(11)
    count, k = len(names), 5
    whole = FeaturesState(k, names)
    whole.update(activations, range(count))
    rng = np.random.default_rng(12)
    owner = rng.integers(0, 4, size=count)  # an uneven partition into four shards
    shards = []
    for index in range(4):
        shard = FeaturesState(k, names, meta={"model": "m", "shard": [index, 4]})
        ids = rng.permutation(np.flatnonzero(owner == index))
        for part in np.array_split(ids, 3):
            shard.update({n: a[part] for n, a in activations.items()}, part.tolist())
        shards.append(shard)
    shards.append(FeaturesState(k, names, meta={"model": "m"}))  # a worker that got no image
    results = [
        shards[0].merge(shards[1]).merge(shards[2]).merge(shards[3]).merge(shards[4]),
        shards[4].merge(shards[3]).merge(shards[1]).merge(shards[0]).merge(shards[2]),
        shards[2].merge(shards[0]).merge(shards[4].merge(shards[3].merge(shards[1]))),
    ]
    for merged in results:
        assert_same_state(merged, whole)
        assert merged.meta == {"model": "m"}  # the entries every shard agrees on
    # Every entry is the brute-force top-k: highest value, then the lowest image id.
    assert as_lists(results[0], "a") == brute_force(activations["a"], k)
    assert as_lists(results[0], "b") == brute_force(activations["b"], k)


def test_state_merge_refuses_other_channels() -> None:
    names, activations = random_state_parts(3, count=6)
    mine, theirs = FeaturesState(3, names), FeaturesState(3, names)
    mine.update({"a": activations["a"][:3]}, [0, 1, 2])
    theirs.update({"a": activations["a"][3:, :2]}, [3, 4, 5])
    with pytest.raises(OnnxDeconvError, match="different layers or channels"):
        mine.merge(theirs)


def test_state_save_load_round_trip(tmp_path: Path) -> None:
    names, activations = random_state_parts(5, count=12)
    state = FeaturesState(4, names, meta={"model": "digitnet.onnx", "shard": [0, 1]})
    state.add_layer("a", [2, 0], rank=2)
    state.update_maxima({"a": activations["a"][1:, [2, 0]].max(axis=(2, 3))}, range(1, 12))
    state.skip(0, "unreadable")
    state.layers["a"].locate(0, 0, (1, 3))
    state.save(tmp_path / "state.npz")
    loaded = FeaturesState.load(tmp_path / "state.npz")
    assert_same_state(loaded, state)
    assert loaded.k == 4 and loaded.meta == state.meta and loaded.processed == 12
    assert loaded.layers["a"].entries(0)[0].position == (1, 3)
    assert loaded.layers["a"].entries(1)[0].position is None


def test_state_loads_the_existing_file_format(tmp_path: Path) -> None:
    """A state in the format of earlier releases, written by hand, loads as it was."""
    description = {
        "schema": "onnxdeconv.features/1",
        "k": 2,
        "layers": [{"name": "relu2", "channels": [4], "rank": 2}],
        "processed": 3,
        "counted": 2,
        "skipped": [{"image": "c.png", "id": 2, "reason": "broken"}],
        "meta": {"shard": [0, 1]},
        "images": ["a.png", "b.png", "c.png"],
    }
    arrays = {
        "seen": np.array([True, True, True]),
        "values_0": np.array([[5.0, 3.0]], np.float32),
        "images_0": np.array([[1, 0]], np.int64),
        "positions_0": np.array([[[1, 2], [-1, -1]]], np.int64),
        "meta": np.asarray(json.dumps(description)),
    }
    np.savez(tmp_path / "old.npz", **arrays)  # type: ignore[arg-type]
    state = FeaturesState.load(tmp_path / "old.npz")
    assert state.images == ["a.png", "b.png", "c.png"] and state.skipped == {2: "broken"}
    assert state.counted == 2 and state.tracked() == {"relu2": [4]}
    entries = state.layers["relu2"].entries(0)
    assert [(e.image, e.position, e.value) for e in entries] == [(1, (1, 2), 5.0), (0, None, 3.0)]


def test_mine_features_without_the_cli(digit_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    for path in sorted(digit_folder.rglob("*.png")):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    names = folder_images(folder)
    prepared = prepare(load_model(DIGITNET))
    done: list[int] = []
    skipped: list[tuple[int, str]] = []
    result = mine_features(
        prepared,
        names,
        root=folder,
        layers=["relu3"],
        channels=[0, 2, 5],
        per_channel=4,
        batch_size=5,
        device="cpu",
        progress=done.append,
        on_skip=lambda image, reason: skipped.append((image, reason)),
    )
    assert result.provider == "CPUExecutionProvider"
    assert done[-1] == len(names) == 19 and [i for i, _ in skipped] == [names.index("broken.png")]
    layer = prepared.resolve("relu3")
    state = result.state
    assert state.counted == 18 and state.tracked() == {layer: [0, 2, 5]}
    expected = independent_topk(digit_folder, "relu3", [0, 2, 5], 4)
    got = [
        [(state.images[e.image], e.value) for e in state.layers[layer].entries(r)] for r in range(3)
    ]
    assert [[i for i, _ in row] for row in got] == [[i for i, _, _ in row] for row in expected]
    np.testing.assert_allclose(
        [[v for _, v in row] for row in got], [[v for *_, v in row] for row in expected], rtol=1e-5
    )
    tiles = result.project()[layer]
    assert sorted(tiles) == [(row, slot) for row in range(3) for slot in range(4)]
    field = prepared.receptive_fields[layer]
    for (row, slot), tile in tiles.items():
        entry = state.layers[layer].entries(row)[slot]
        position = expected[row][slot][1]
        assert entry.position == tuple(position)  # found while projecting
        box = unit_box(field, position, (28, 28))
        assert tile.projection.shape == (*(e - b for b, e in box), 1)
        assert tile.patch.shape == tuple(e - b for b, e in box)
        assert np.abs(tile.projection).max() > 0
    report = result.to_json()
    json.dumps(report, allow_nan=False)
    assert report["counted"] == 18 and report["top"] == 4
    assert report["skipped_images"] == [{"image": "broken.png", "reason": skipped[0][1]}]
    [entry_layer] = report["layers"]
    assert entry_layer["alias"] == "relu3"
    assert [c["channel"] for c in entry_layer["channels"]] == [0, 2, 5]
    assert [
        [(e["image"], e["position"]) for e in c["entries"]] for c in entry_layer["channels"]
    ] == [[(i, p) for i, p, _ in row] for row in expected]


def test_mine_features_resumes_and_shards_merge(digit_folder: Path, tmp_path: Path) -> None:
    names = folder_images(digit_folder)
    prepared = prepare(load_model(DIGITNET))
    common = {"root": digit_folder, "layers": ["relu2"], "channels": [1, 3], "per_channel": 3}
    one = mine_features(prepared, names, batch_size=4, device="cpu", **common).state

    def dies_after_two_batches(done: int) -> None:
        if done > 8:
            raise Killed

    checkpoint = tmp_path / "state.npz"
    with pytest.raises(Killed):
        mine_features(
            prepared,
            names,
            batch_size=4,
            checkpoint=checkpoint,
            checkpoint_every=1,
            progress=dies_after_two_batches,
            **common,
        )
    saved = FeaturesState.load(checkpoint)
    assert saved.processed == 8 and saved.todo() == list(range(8, 18))
    with pytest.raises(StateMismatchError) as mismatch:
        mine_features(prepared, names, state=saved, **{**common, "per_channel": 4})
    assert mismatch.value.differences == ["top"]
    resumed = mine_features(prepared, names, state=saved, batch_size=4, **common).state
    assert_same_state(resumed, one)
    shards = [
        mine_features(prepared, names, shard=(index, 3), batch_size=2, **common).state
        for index in range(3)
    ]
    assert [s.processed for s in shards] == [6, 6, 6]
    merged = shards[1].merge(shards[2]).merge(shards[0])
    assert_same_state(merged, one)


def test_merge_states_equals_one_run_and_names_what_is_wrong(
    digit_folder: Path, tmp_path: Path
) -> None:
    names = folder_images(digit_folder)
    prepared = prepare(load_model(DIGITNET))
    common = {"root": digit_folder, "layers": ["relu2"], "channels": [1, 3], "per_channel": 3}
    meta = file_meta(DIGITNET, digit_folder)
    one = mine_features(prepared, names, meta=meta, **common).state
    paths = [tmp_path / f"shard{index}.npz" for index in range(2)]
    for index, path in enumerate(paths):
        mine_features(prepared, names, shard=(index, 2), checkpoint=path, meta=meta, **common)
    result = merge_states(paths, device="cpu", batch_size=5)
    assert_same_state(result.state, one)
    assert result.state.meta["shard"] == [0, 1] and result.root == digit_folder.resolve()
    assert result.batch_size == 5 and result.prepared.input_shape == prepared.input_shape

    def refused(states: list[Path], parameter: str | None, pattern: str, **kwargs: object) -> None:
        with pytest.raises(InputError, match=pattern) as raised:
            merge_states(states, **kwargs)  # type: ignore[arg-type]
        assert raised.value.parameter == parameter

    refused(paths[:1], "partial", "9 of 18 images are in none of the states")
    assert merge_states(paths[:1], partial=True).state.processed == 9
    refused(paths, "model", "does not exist", model=tmp_path / "moved.onnx")
    other = tmp_path / "other.onnx"
    other.write_bytes(Path(DIGITNET).read_bytes() + b"\0")
    refused(paths, "model", "is not the model the states were made with", model=other)
    refused(paths, "images", "image folder .* does not exist", images=tmp_path / "moved")
    odd = FeaturesState.load(paths[1])
    odd.meta = {**odd.meta, "input_shape": [1, 32, 32]}
    odd.save(paths[1])
    refused(paths, None, "was made with another input_shape than")


def test_state_resume_checks_images_and_options(tmp_path: Path) -> None:
    names, activations = random_state_parts(5, count=12)
    meta = {"model_sha256": "abc", "shard": [0, 1]}
    state = FeaturesState(4, names, meta=meta)
    state.add_layer("a", [2, 0], rank=2)
    state.update_maxima({"a": activations["a"][:, [2, 0]].max(axis=(2, 3))}, range(12))
    path = tmp_path / "state.npz"
    assert FeaturesState.resume(path, names, {"a": [2, 0]}, 4, meta) is None  # no file yet
    state.save(path)
    resumed = FeaturesState.resume(path, names, {"a": [2, 0]}, 4, meta)
    assert resumed is not None and resumed.processed == 12
    mismatches = [
        ((names[::-1], {"a": [2, 0]}, 4, meta), ["images"]),
        ((names, {"a": [0, 2]}, 4, meta), ["channels"]),
        ((names, {"a": [2, 0]}, 9, {**meta, "model_sha256": "def"}), ["model_sha256", "top"]),
    ]
    for (images, channels, k, run_meta), differences in mismatches:
        with pytest.raises(StateMismatchError) as raised:
            FeaturesState.resume(path, images, channels, k, run_meta)
        assert raised.value.differences == differences


def test_features_rule_is_recorded_and_used(digit_folder: Path, tmp_path: Path) -> None:
    """A guided run projects with the guided rule, keeps it in its state, and resumes only so."""
    names = folder_images(digit_folder)
    prepared = prepare(load_model(DIGITNET))
    common = {"root": digit_folder, "layers": ["relu2"], "channels": [1, 3], "per_channel": 2}
    checkpoint = tmp_path / "state.npz"
    guided = mine_features(prepared, names, rule="guided", device="cpu", **common)  # type: ignore[arg-type]
    deconvnet = mine_features(
        prepared,
        names,
        checkpoint=checkpoint,
        device="cpu",
        **common,  # type: ignore[arg-type]
    )
    assert guided.rule == "guided" and guided.to_json()["rule"] == "guided"
    assert deconvnet.rule == "deconvnet" and deconvnet.state.meta["rule"] == "deconvnet"
    layer = prepared.resolve("relu2")
    guided_tiles, deconvnet_tiles = guided.project()[layer], deconvnet.project()[layer]
    projector = Projector(prepared, layer, rule="guided", device="cpu")
    differ = 0
    for (row, slot), tile in guided_tiles.items():
        entry = guided.state.layers[layer].entries(row)[slot]
        assert entry.position is not None
        model_input = guided.loader(entry.image)
        forward = projector.forward(model_input.array)
        pick = projector.strongest(forward, channel=[1, 3][row], position=entry.position)
        projection = projector.project(forward, pick)[0].transpose(1, 2, 0)
        box = unit_box(prepared.receptive_fields[layer], entry.position, (28, 28))
        np.testing.assert_allclose(tile.projection, crop_padded(projection, box, 0.0), atol=1e-6)
        differ += not np.allclose(tile.projection, deconvnet_tiles[(row, slot)].projection)
    assert differ > 0
    meta = {**deconvnet.state.meta, "rule": "guided"}
    with pytest.raises(StateMismatchError, match="rule"):
        FeaturesState.resume(checkpoint, names, deconvnet.state.tracked(), 2, meta)
