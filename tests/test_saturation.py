"""Units at a ReLU6 bound project to zero (gradient, guided): the default choice skips them."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector, load_model
from onnxdeconv.analysis.features import (
    EMPTY,
    FeaturesState,
    StateMismatchError,
    maxima_model,
    saturation_bounds,
)
from onnxdeconv.engines import folder_images, mine_features
from onnxdeconv.inputs import Preprocessing, load_input
from onnxdeconv.prepared import prepare

#: Channel 0 is x, channel 1 is x / 2, both through Clip(0, 6): channel 0 saturates at (0, 0).
X = np.array([[[[10.0, 3.0], [1.0, 0.5]]]], np.float32)


def relu6_model(form: str = "clip", shape: tuple[int | str, ...] = (1, 1, 2, 2)) -> onnx.ModelProto:
    """``Clip(Conv(x), 0, 6)`` (or ``Min(Relu(Conv(x)), 6)``), 1x1 conv to 2 channels."""
    weight = numpy_helper.from_array(np.array([1.0, 0.5], np.float32).reshape(2, 1, 1, 1), "w")
    low = numpy_helper.from_array(np.array(0.0, np.float32), "low")
    high = numpy_helper.from_array(np.array(6.0, np.float32), "high")
    if form == "clip":
        nodes = [helper.make_node("Clip", ["c", "low", "high"], ["y"])]
    else:
        nodes = [
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Min", ["r", "high"], ["y"]),
        ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), *nodes],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 2, *shape[2:]])],
        [weight, low, high],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("form", ["clip", "min"])
def test_upper_bound_from_the_producer(form: str) -> None:
    prepared = prepare(load_model(relu6_model(form)))
    assert prepared.upper_bound("y") == 6.0
    assert prepared.upper_bound("c") is None


def test_strongest_skips_saturated_units(caplog: pytest.LogCaptureFixture) -> None:
    projector = Projector(relu6_model(), layer="y", rule="guided", device="cpu")
    forward = projector.forward(X)
    assert projector.saturation_bound == 6.0
    with caplog.at_level(logging.INFO, logger="onnxdeconv.projector"):
        picks = projector.strongest(forward, top=1)
    # Channel 0's maximum 6 is saturated; its next unit (3) is weaker than channel 1's 5.
    assert [(p.channel, p.position, p.value) for p in picks] == [(1, (0, 0), 5.0)]
    assert projector.skipped_saturated == 1
    assert "skipped 1 saturated units" in caplog.text
    assert np.abs(projector.project(forward, picks)).max() > 0

    (own,) = projector.strongest(forward, channel=0)
    assert (own.position, own.value) == ((0, 1), 3.0)

    both = projector.strongest(forward, top=2, skip_saturated=False)
    assert [(p.channel, p.position, p.value) for p in both] == [(0, (0, 0), 6.0), (1, (0, 0), 5.0)]
    assert projector.skipped_saturated == 0
    # Why they are skipped: the saturated unit's guided projection is all zero.
    assert np.abs(projector.project(forward, both[:1])).max() == 0


def test_project_command_says_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "relu6.onnx"
    onnx.save(relu6_model(), model)
    image = tmp_path / "x.npy"
    np.save(image, X)
    out = tmp_path / "p.npy"
    code, _, err = run(["project", model, image, "--layer", "y", "-o", out], capsys)
    assert code == 0, err
    assert "skipped 1 saturated units (at the bound 6 of layer y)" in err
    expected = Projector(relu6_model(), layer="y", device="cpu")
    forward = expected.forward(X)
    np.testing.assert_array_equal(
        np.load(out), expected.project(forward, expected.strongest(forward))
    )
    code, _, err = run(["project", model, image, "--layer", "y", "--saturated", "-o", out], capsys)
    assert code == 0, err
    assert "saturated" not in err
    saturated = expected.strongest(forward, skip_saturated=False)
    np.testing.assert_array_equal(np.load(out), expected.project(forward, saturated))


# --- features: the dataset top-k leaves saturated units out too ---

#: x = pixel / 20: a pixel of 120 or more saturates channel 0 (x), 240 or more channel 1 (x / 2).
MINING = Preprocessing(scale=1 / 20, mean=(0.0,), std=(1.0,))


@pytest.fixture
def relu6_folder(tmp_path: Path) -> Path:
    """Seven 4x4 grey pictures: some maxima saturate, one (all 255) saturates everywhere."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        picture = rng.integers(0, 115, (4, 4)).astype(np.uint8)
        picture.flat[rng.choice(16, index % 3, replace=False)] = 250  # 0, 1 or 2 saturated units
        cv2.imwrite(str(folder / f"p{index}.png"), picture)
    cv2.imwrite(str(folder / "white.png"), np.full((4, 4), 255, np.uint8))
    return folder


def brute_force_topk(
    folder: Path, names: list[str], skip: bool
) -> list[list[tuple[int, tuple[int, int], float]]]:
    """Per channel, ``(image id, position, value)`` best first, from numpy on the loaded inputs."""
    loaded = load_model(relu6_model(shape=("N", 1, 4, 4)))
    x = np.concatenate([load_input(folder / n, loaded, MINING, (4, 4)).array for n in names])
    maps = np.clip(x * np.array([1.0, 0.5], np.float32).reshape(1, 2, 1, 1), 0, 6)
    if skip:
        maps = np.where(maps >= 6, -np.inf, maps)
    table = []
    for channel in range(2):
        flat = maps[:, channel].reshape(len(names), -1)
        rows = [
            (image, divmod(int(flat[image].argmax()), 4), float(flat[image].max()))
            for image in range(len(names))
            if flat[image].max() > -np.inf
        ]
        table.append(sorted(rows, key=lambda row: (-row[2], row[0])))
    return table


@pytest.mark.parametrize("skip", [True, False])
def test_features_skip_saturated_units(relu6_folder: Path, skip: bool) -> None:
    names = folder_images(relu6_folder)
    prepared = prepare(load_model(relu6_model(shape=("N", 1, 4, 4))))
    result = mine_features(
        prepared,
        names,
        root=relu6_folder,
        layers=["y"],
        per_channel=len(names),  # room for every image: -inf must not fill the empty slots
        preprocessing=MINING,
        rule="guided",
        skip_saturated=skip,
        device="cpu",
    )
    assert result.state.meta["skip_saturated"] is skip
    expected = brute_force_topk(relu6_folder, names, skip)
    layer = result.state.layers["y"]
    tiles = result.project()["y"]
    for row in range(2):
        entries = layer.entries(row)
        assert [e.image for e in entries] == [image for image, _, _ in expected[row]]
        np.testing.assert_allclose([e.value for e in entries], [v for *_, v in expected[row]])
        # Positions are found while projecting, past the saturated units where they are skipped.
        assert [e.position for e in entries] == [p for _, p, _ in expected[row]]
    values = layer.values[layer.images != EMPTY]
    zero = [np.abs(tile.projection).max() == 0 for tile in tiles.values()]
    if skip:
        assert names.index("white.png") not in layer.images
        assert (values < 6).all() and not any(zero)
    else:
        # Today's behaviour: saturated maxima rank first and their guided projections are zero.
        assert (values == 6).any() and any(zero)


def test_features_resume_keeps_the_saturation_choice(relu6_folder: Path, tmp_path: Path) -> None:
    names = folder_images(relu6_folder)
    prepared = prepare(load_model(relu6_model(shape=("N", 1, 4, 4))))
    common = {"root": relu6_folder, "layers": ["y"], "preprocessing": MINING, "device": "cpu"}
    checkpoint = tmp_path / "state.npz"
    mine_features(prepared, names, checkpoint=checkpoint, **common)
    with pytest.raises(StateMismatchError) as mismatch:
        saved = FeaturesState.load(checkpoint)
        mine_features(prepared, names, state=saved, skip_saturated=False, **common)
    assert mismatch.value.differences == ["skip_saturated"]
    # A model without a bound records that nothing was skipped, whatever the choice.
    plain = prepare(load_model(relu6_model(shape=("N", 1, 4, 4))))
    assert plain.upper_bound("c") is None
    unbounded = mine_features(plain, names, **{**common, "layers": ["c"]})
    assert unbounded.state.meta["skip_saturated"] is False


def test_maxima_model_masks_only_bounded_layers() -> None:
    prepared = prepare(load_model(relu6_model(shape=("N", 1, 4, 4))))
    plain = maxima_model(prepared, ["y", "c"])
    assert maxima_model(prepared, ["y", "c"], bounds={"c": 0.0}) != plain
    masked = maxima_model(prepared, ["y", "c"], bounds=saturation_bounds(prepared, ["y", "c"]))
    ops = [node.op_type for node in masked.graph.node]
    assert ops.count("Where") == 2 and ops.count("GlobalMaxPool") == 2
    # The unbounded layer's nodes are the same as without bounds.
    assert [n for n in masked.graph.node if "topk_1" in n.name] == [
        n for n in plain.graph.node if "topk_1" in n.name
    ]


def test_features_command_says_what_it_leaves_out(
    relu6_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "relu6.onnx"
    onnx.save(relu6_model(shape=("N", 1, 4, 4)), model)
    common = [model, relu6_folder, "--layers", "y", "--scale", "0.05", "--mean", "0", "--std", "1"]
    code, _, err = run(["features", *common, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "saturated units (at the bound 6 of layer clip1) are left out" in err
    code, _, err = run(["features", *common, "--saturated", "-o", tmp_path / "b"], capsys)
    assert code == 0, err
    assert "saturated" not in err
    code, _, err = run(["features", *common, "--resume", "-o", tmp_path / "b"], capsys)
    assert code != 0 and "--saturated" in err
