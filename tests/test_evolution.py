from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import ROOT
from helpers import conv_relu_pool_model, run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import OnnxDeconvError, Projector, Selection, load_model, prepare
from onnxdeconv.analysis.evolution import (
    LayerForwards,
    check_same_architecture,
    checked_layers,
    checkpoint_label,
    converged_at,
    cosine_similarity,
    crop_to_field,
    load_checkpoints,
    stability,
    strongest_channels,
    strongest_over_images,
    trace_evolution,
    training_order,
)
from onnxdeconv.analysis.layers import evolution_layers
from onnxdeconv.errors import SelectionError
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import Preprocessing, load_input
from onnxdeconv.outputs import json_safe

CHECKPOINTS = sorted((ROOT / "models" / "digitnet_checkpoints").glob("epoch_*.onnx"))
EXAMPLES = sorted((ROOT / "models" / "examples").glob("*.png"))
# models/README.md: x = (pixel / 255 - 0.1307) / 0.3081
DIGITNET_PREPROCESS = Preprocessing(1 / 255, (0.1307,), (0.3081,))


def chain_net(
    seeds: Sequence[int], filters: int = 4, size: int = 12, epoch: str | None = None
) -> onnx.ModelProto:
    """x[N,1,size,size] -> (Conv 3x3 pad 1 -> Relu) per seed, MaxPool 2x2/2 after the first."""
    nodes, initializers = [], []
    previous, channels = "x", 1
    for stage, seed in enumerate(seeds, start=1):
        rng = np.random.default_rng(seed)
        weight = rng.normal(size=(filters, channels, 3, 3)).astype(np.float32)
        bias = np.full(filters, 0.1, np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{stage}"),
            numpy_helper.from_array(bias, f"b{stage}"),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{stage}", f"b{stage}"], [f"conv{stage}"], pads=[1] * 4
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{stage}"], [f"relu{stage}"]))
        previous, channels = f"relu{stage}", filters
        if stage == 1:
            nodes.append(
                helper.make_node(
                    "MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            previous = "pool1"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", filters, None, None])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    if epoch is not None:
        helper.set_model_props(model, {"onnxdeconv.epoch": epoch})
    return model


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The shipped example digits, preprocessed for DigitNet: [3, 1, 28, 28] float32."""
    loaded = load_model(CHECKPOINTS[0])
    return np.concatenate([load_input(p, loaded, DIGITNET_PREPROCESS).array for p in EXAMPLES])


def noise(count: int = 6, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 1, size, size)).astype(np.float32)


# --- strongest activation over the image set -----------------------------------------------


def brute_force_strongest(activations: np.ndarray, channel: int) -> Selection:
    best: Selection | None = None
    spatial = activations.shape[2:]
    for image in range(activations.shape[0]):
        for where in itertools.product(*(range(s) for s in spatial)):
            index = (image, channel, *where)
            value = float(activations[index])
            if best is None or value > best.value:  # strict: the first of equal maxima wins
                best = Selection(image, channel, tuple(where), value)
    assert best is not None
    return best


def test_strongest_over_images_is_the_brute_force_max() -> None:
    rng = np.random.default_rng(1)
    activations = rng.normal(size=(5, 3, 4, 6)).astype(np.float32)
    # A tie between images 1 and 3 in channel 2 goes to the earlier image.
    activations[1, 2, 3, 0] = activations[3, 2, 0, 5] = 9.0
    picks = strongest_over_images(activations)
    assert picks == [brute_force_strongest(activations, c) for c in range(3)]
    assert picks[2] == Selection(1, 2, (3, 0), 9.0)
    assert strongest_over_images(activations, [2, 0]) == [picks[2], picks[0]]
    # A fully connected layer has no positions.
    flat = rng.normal(size=(4, 5)).astype(np.float32)
    image = int(flat[:, 3].argmax())
    assert strongest_over_images(flat, [3]) == [Selection(image, 3, (), float(flat[image, 3]))]
    with pytest.raises(SelectionError, match=r"channel 3 is out of range.*\(0\.\.2\)"):
        strongest_over_images(activations, [3])


def test_strongest_over_real_digitnet_activations(digits: np.ndarray) -> None:
    prepared = prepare(load_model(CHECKPOINTS[-1]))
    forwards = LayerForwards(prepared, ["relu2"]).forward(digits)
    activations = forwards[prepared.resolve("relu2")].activations
    picks = strongest_over_images(activations)
    assert picks == [brute_force_strongest(activations, c) for c in range(activations.shape[1])]


def test_strongest_channels_rank_by_value_then_index() -> None:
    picks = [Selection(0, c, (0,), v) for c, v in enumerate([0.5, 3.0, 1.0, 3.0, 0.0])]
    assert strongest_channels(picks, 2) == [1, 3]
    assert strongest_channels(picks, 3) == [1, 2, 3]
    assert strongest_channels(picks, 9) == [0, 1, 2, 3, 4]


# --- cropping to the receptive field --------------------------------------------------------


def test_crop_pads_the_part_of_the_field_outside_the_image() -> None:
    projection = np.arange(64, dtype=np.float32).reshape(1, 8, 8) + 1
    field = ReceptiveField(size=(5, 5), stride=(2, 2), offset=(-2, -2))
    # Unit (0, 3) sees rows -2..2 and columns 4..8: two rows above the image and one column to
    # the right of it.
    crop, box = crop_to_field(projection, field, (0, 3))
    assert box == ((-2, 3), (4, 9))
    assert crop.shape == (1, 5, 5)
    np.testing.assert_array_equal(crop[0, :2], 0.0)
    np.testing.assert_array_equal(crop[0, :, 4], 0.0)
    np.testing.assert_array_equal(crop[0, 2:, :4], projection[0, 0:3, 4:8])
    nhwc, _ = crop_to_field(projection.transpose(1, 2, 0), field, (0, 3), "NHWC")
    np.testing.assert_array_equal(nhwc, crop.transpose(1, 2, 0))
    whole, none = crop_to_field(projection, ReceptiveField(None, (1, 1), (0, 0)), (1, 1))
    assert none is None and whole.shape == projection.shape


def test_first_layer_crop_is_the_filter_times_the_activation(digits: np.ndarray) -> None:
    """A Conv -> Relu unit projects (deconvnet) to its activation times its filter, in place."""
    model = load_model(CHECKPOINTS[1])
    prepared = prepare(model)
    weights = {t.name: numpy_helper.to_array(t) for t in model.model.graph.initializer}
    report = trace_evolution(
        [prepared, prepare(load_model(CHECKPOINTS[2]))], digits, ["relu1"], count=16
    )
    trace = report.traces[0][prepared.resolve("relu1")]
    for pick, crop, box in zip(trace.picks, trace.crops, trace.boxes, strict=True):
        assert box is not None
        if min(box[0][0], box[1][0]) < 0 or max(box[0][1], box[1][1]) > 28:
            continue
        np.testing.assert_allclose(
            crop, pick.value * weights["conv1.weight"][pick.channel], rtol=1e-4, atol=1e-5
        )


# --- the combined forward pass ---------------------------------------------------------------


def test_one_forward_serves_every_layer_like_separate_projectors(digits: np.ndarray) -> None:
    prepared = prepare(load_model(CHECKPOINTS[-1]))
    layers = ["relu1", "relu2", "relu3"]
    runner = LayerForwards(prepared, layers)
    passes = runner.forward(digits)
    for layer in layers:
        alone = Projector(prepare(load_model(CHECKPOINTS[-1])), layer)
        forward = alone.forward(digits)
        shared = passes[prepared.resolve(layer)]
        np.testing.assert_array_equal(shared.activations, forward.activations)
        picks = strongest_over_images(forward.activations, [0, 5, 9])
        np.testing.assert_allclose(
            runner.projectors[prepared.resolve(layer)].project(shared, picks),
            alone.project(forward, picks),
            rtol=1e-6,
            atol=1e-7,
        )


def test_fixed_batch_model_runs_in_chunks() -> None:
    images = np.random.default_rng(2).normal(size=(3, 3, 16, 16)).astype(np.float32)
    fixed = prepare(load_model(conv_relu_pool_model(batch=1)))
    free = prepare(load_model(conv_relu_pool_model()))
    one = LayerForwards(fixed, ["pool"]).forward(images)["pool"]
    many = LayerForwards(free, ["pool"]).forward(images)["pool"]
    np.testing.assert_allclose(one.activations, many.activations, rtol=1e-6)


# --- stability and convergence -------------------------------------------------------------


@pytest.mark.parametrize(
    ("similarities", "expected"),
    [
        ([0.2, 0.5, 0.95, 0.97], 2),  # five checkpoints; stable from the third on
        ([0.95, 0.2, 0.97], 2),  # an early stable step does not count once it changes again
        ([0.95, 0.97, 1.0], 0),
        ([0.9], 0),  # at the threshold is stable
        ([0.95, 0.5], None),  # still changing at the end
        ([], None),
    ],
)
def test_converged_at(similarities: list[float], expected: int | None) -> None:
    assert converged_at(similarities, 0.9) == expected


def test_cosine_similarity_by_hand() -> None:
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(
        1 / math.sqrt(2)
    )
    assert cosine_similarity(np.array([[2.0, -1.0]]), np.array([[-4.0, 2.0]])) == pytest.approx(-1)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0


def test_stability_on_hand_made_crops() -> None:
    e0, e1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    diagonal = np.array([1.0, 1.0])
    # Map 0: e0 -> diagonal -> diagonal (x3) -> diagonal; map 1: e1 -> e1 -> e0 -> e0.
    crops = [
        np.stack([e0, e1]),
        np.stack([diagonal, e1]),
        np.stack([3 * diagonal, e0]),
        np.stack([diagonal, e0]),
    ]
    same = Selection(0, 0, (1, 1), 1.0)
    moved = Selection(2, 0, (1, 1), 1.0)
    picks = [[same, same], [same, moved], [moved, moved], [moved, moved]]
    result = stability(crops, 0.9, picks)
    expected = np.array([[1 / math.sqrt(2), 1.0, 1.0], [1.0, 0.0, 1.0]])
    np.testing.assert_allclose(result.channel_similarity, expected)
    np.testing.assert_allclose(result.similarity, expected.mean(axis=0))
    np.testing.assert_allclose(result.same_argmax, [0.5, 0.5, 1.0])
    assert result.converged_at == 2
    assert stability(crops, 0.6).converged_at == 2
    assert stability(crops, 0.5).converged_at == 0
    assert stability(crops[:2], 0.8).converged_at == 0


def test_identical_checkpoints_are_stable_from_the_first(tmp_path: Path) -> None:
    path = tmp_path / "same.onnx"
    onnx.save(chain_net([1, 2]), path)
    series = [prepare(load_model(path)) for _ in range(3)]
    report = trace_evolution(series, noise(), count=2)
    assert report.layers == ["relu1", "relu2"]
    for name in report.layers:
        np.testing.assert_allclose(report.stability[name].channel_similarity, 1.0)
        np.testing.assert_array_equal(report.stability[name].same_argmax, 1.0)
        assert report.stability[name].converged_at == 0
    # One file name three times: the columns are numbered to tell them apart.
    assert report.labels == ["1: same.onnx", "2: same.onnx", "3: same.onnx"]


def test_a_layer_that_settles_late_converges_late() -> None:
    """The first layer never changes; the second changes twice, then stays."""
    seeds = [(1, 10), (1, 11), (1, 12), (1, 12)]
    series = [
        prepare(load_model(chain_net(s, epoch=str(e))))
        for s, e in zip(seeds, [1, 2, 4, 8], strict=True)
    ]
    report = trace_evolution(series, noise(8), channels=[0, 1, 2, 3])
    first, second = report.stability["relu1"], report.stability["relu2"]
    np.testing.assert_allclose(first.similarity, 1.0)
    assert first.converged_at == 0 and report.converged_label("relu1") == "epoch 1"
    # Unrelated random filters project to unrelated patterns.
    assert second.similarity[0] < 0.9 and second.similarity[1] < 0.9
    assert second.similarity[2] == pytest.approx(1.0)
    assert second.converged_at == 2 and report.converged_label("relu2") == "epoch 4"
    assert report.epochs == [1.0, 2.0, 4.0, 8.0]
    data = json.loads(json.dumps(report.to_json()))
    assert data["layers"][1]["converged_at"] == {"index": 2, "label": "epoch 4", "epoch": 4.0}
    assert data["layers"][1]["similarity"] == pytest.approx(list(second.similarity))


def test_default_layers_spread_over_depth() -> None:
    prepared = prepare(load_model(chain_net(list(range(7)))))
    # Evenly spread over 7: positions 0, 1.5, 3, 4.5, 6, rounded half to even: symmetric.
    assert evolution_layers(prepared) == ["relu1", "relu3", "relu4", "relu5", "relu7"]
    assert evolution_layers(prepared, limit=2) == ["relu1", "relu7"]
    digitnet = prepare(load_model(CHECKPOINTS[0]))
    assert evolution_layers(digitnet) == [digitnet.resolve(f"relu{i}") for i in (1, 2, 3)]


def test_architecture_mismatch_names_the_checkpoint() -> None:
    base = prepare(load_model(chain_net([1, 2])))
    wider = prepare(load_model(chain_net([1, 2], filters=6)))
    bigger = prepare(load_model(chain_net([1, 2], size=16)))
    with pytest.raises(OnnxDeconvError, match=r"layer 'relu2' is 6x6x6 in checkpoint 'b'.*4x6x6"):
        check_same_architecture([base, wider], ["relu2"], ["a", "b"])
    with pytest.raises(OnnxDeconvError, match=r"'b' takes input 'x' 1x16x16 float32.*1x12x12"):
        check_same_architecture([base, bigger], ["relu1"], ["a", "b"])
    with pytest.raises(OnnxDeconvError, match=r"at least two checkpoints"):
        trace_evolution([base], noise())


# --- command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped example digits, each also shifted by 2 px four ways, and one broken file."""
    folder = tmp_path_factory.mktemp("digits")
    for example in EXAMPLES:
        shutil.copy(example, folder / example.name)
        digit = cv2.imread(str(example), cv2.IMREAD_GRAYSCALE)
        for axis, step in itertools.product((0, 1), (-2, 2)):
            # MNIST digits sit in a 4 px black margin, so a roll moves the digit, nothing wraps.
            shifted = np.roll(digit, step, axis=axis)
            cv2.imwrite(str(folder / f"{example.stem}_shift{axis}{step:+d}.png"), shifted)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_cli_shipped_checkpoints(
    digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "evo.png", tmp_path / "evo.json"
    shuffled = [CHECKPOINTS[i] for i in (4, 0, 2, 1, 3)]
    args = ["evolution", *shuffled, "--images", digit_folder, "-o", out, "--json", report]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert "running on " in err
    assert "ordered the checkpoints by their onnxdeconv.epoch metadata" in err
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > picture.shape[1]
    data = json.loads(report.read_text())
    assert data["schema"] == "onnxdeconv.evolution/1" and data["images"] == 15
    assert [c["epoch"] for c in data["checkpoints"]] == [1, 2, 4, 8, 16]
    assert [Path(c["path"]).name for c in data["checkpoints"]] == [p.name for p in CHECKPOINTS]
    assert [layer["layer"] for layer in data["layers"]] == ["relu1", "relu2", "relu3"]
    weights = [
        {t.name: numpy_helper.to_array(t) for t in onnx.load(p).graph.initializer}["conv1.weight"]
        for p in CHECKPOINTS
    ]
    for layer in data["layers"]:
        assert len(layer["channels"]) == 4
        per_map = np.array([f["similarity"] for f in layer["features"]])
        np.testing.assert_allclose(layer["similarity"], per_map.mean(axis=0), rtol=1e-9)
        expected = converged_at(layer["similarity"], data["threshold"])
        got = layer["converged_at"]
        assert (None if got is None else got["index"]) == expected
        for feature in layer["features"]:
            values = [s["value"] for s in feature["strongest"]]
            assert all(v > 0 for v in values)
    # relu1 projects to its filter (see above), so its similarity is that of the conv1 filters:
    # they hardly move after the first epoch, and the first layer converges there.
    relu1 = data["layers"][0]
    for feature in relu1["features"]:
        c = feature["channel"]
        inside = all(2 <= p <= 25 for s in feature["strongest"] for p in s["position"])
        if inside:
            filters = [cosine_similarity(a[c], b[c]) for a, b in itertools.pairwise(weights)]
            np.testing.assert_allclose(feature["similarity"], filters, atol=1e-5)
    assert relu1["converged_at"]["label"] == "epoch 1"
    lines = stdout.splitlines()
    assert lines[0].split() == ["layer", "maps", "1→2", "2→4", "4→8", "8→16", "converges", "at"]
    assert lines[1].startswith("relu1") and lines[1].endswith("epoch 1")
    assert lines[-2:] == [str(out), str(report)]


@pytest.mark.parametrize(
    ("models", "pattern"),
    [
        (
            [chain_net([1, 2]), chain_net([1, 2], filters=6)],
            r"layer 'relu1' is 6x12x12 in checkpoint '.*b\.onnx' but 4x12x12 in '.*a\.onnx'",
        ),
        (
            [conv_relu_pool_model(size=16), conv_relu_pool_model(size=20)],
            r"checkpoint '.*b\.onnx' takes input 'x' 3x20x20 float32, but '.*a\.onnx' takes",
        ),
    ],
)
def test_cli_mismatched_architectures(
    models: list[onnx.ModelProto],
    pattern: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for model, path in zip(models, paths, strict=True):
        onnx.save(model, path)
    out = tmp_path / "e.png"
    code, stdout, err = run(
        ["evolution", *paths, "--images", ROOT / "models" / "examples", "-o", out], capsys
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "give checkpoints of one architecture" in lines[0]
    assert not out.exists() and stdout == ""


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ([CHECKPOINTS[0]], r"needs at least two checkpoints, got 1"),
        ([*CHECKPOINTS[:2], "--channels", "0,99"], r"channel 99 is out of range"),
        ([*CHECKPOINTS[:2], "--channels", "a,b"], r"expected channel numbers"),
        ([*CHECKPOINTS[:2], "--layers", "relu9"], r"unknown layer 'relu9'"),
        ([*CHECKPOINTS[:2], "-o", "e.jpg"], r"must end in \.png"),
    ],
)
def test_cli_user_errors(
    args: list[object],
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["evolution", *args, "--images", ROOT / "models" / "examples"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == []


# --- library API --------------------------------------------------------------------------


def test_load_checkpoints_orders_by_epoch_and_sizes_the_input() -> None:
    shuffled = [CHECKPOINTS[i] for i in (2, 0, 1)]
    prepared, names = load_checkpoints(shuffled)
    assert names == [str(CHECKPOINTS[i]) for i in (0, 1, 2)]
    assert [checkpoint_label(p) for p in prepared] == ["epoch 1", "epoch 2", "epoch 4"]


def test_library_call_on_shipped_checkpoints(digits: np.ndarray) -> None:
    shuffled = [prepare(load_model(CHECKPOINTS[i])) for i in (2, 0, 1)]
    order = training_order(shuffled)
    assert order == [1, 2, 0]
    series = [shuffled[i] for i in order]
    done: list[int] = []
    report = trace_evolution(series, digits, ["relu1", "relu2"], count=2, progress=done.append)
    assert done == [1, 1, 1] and report.provider.endswith("ExecutionProvider")
    assert report.labels == ["epoch 1", "epoch 2", "epoch 4"]
    data = report.to_json(["a", "b", "c"], [str(CHECKPOINTS[i]) for i in (0, 1, 2)])
    assert set(data) == {
        "schema",
        "similarity",
        "threshold",
        "rule",
        "checkpoints",
        "steps",
        "images",
        "image_names",
        "layers",
    }
    assert data["rule"] == "deconvnet"
    assert data["steps"] == ["epoch 1 -> epoch 2", "epoch 2 -> epoch 4"]
    assert [layer["layer"] for layer in data["layers"]] == ["relu1", "relu2"]
    for layer in data["layers"]:
        assert len(layer["features"]) == 2 and len(layer["similarity"]) == 2
        for feature in layer["features"]:
            assert [s["image_name"] for s in feature["strongest"]] == [
                ["a", "b", "c"][s["image"]] for s in feature["strongest"]
            ]
    json.dumps(json_safe(data), allow_nan=False)
    table = report.text_table().splitlines()
    assert table[0].split() == ["layer", "maps", "1→2", "2→4", "converges", "at"]
    assert [line.split()[0] for line in table[1:]] == ["relu1", "relu2"]


def test_checked_layers_refuses_before_running() -> None:
    series = [prepare(load_model(path)) for path in CHECKPOINTS[:2]]
    assert checked_layers(series, [" relu2 ", ""]) == [series[0].resolve("relu2")]
    with pytest.raises(SelectionError, match=r"channel 16 is out of range: layer 'relu1' has 16"):
        checked_layers(series, ["relu1"], [0, 16])
    with pytest.raises(SelectionError, match="no layers to trace"):
        checked_layers(series, [" "])
    with pytest.raises(OnnxDeconvError, match="at least two checkpoints"):
        checked_layers(series[:1])


def test_rule_reaches_the_projections(
    digits: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = [prepare(load_model(path)) for path in CHECKPOINTS[:2]]
    guided = trace_evolution(series, digits, ["relu2"], count=2, rule="guided", device="cpu")
    deconvnet = trace_evolution(series, digits, ["relu2"], count=2, device="cpu")
    layer = series[0].resolve("relu2")
    for index, prepared in enumerate(series):
        trace = guided.traces[index][layer]
        projector = Projector(prepared, layer, rule="guided", device="cpu")
        forwards = [projector.forward(digits[p.image : p.image + 1]) for p in trace.picks]
        expected = np.concatenate(
            [
                projector.project(f, [replace(p, image=0)])
                for f, p in zip(forwards, trace.picks, strict=True)
            ]
        )
        np.testing.assert_allclose(trace.projections, expected, atol=1e-6)
        assert not np.allclose(trace.projections, deconvnet.traces[index][layer].projections)
    assert guided.to_json()["rule"] == "guided"
    report = tmp_path / "evo.json"
    args = ["evolution", *CHECKPOINTS[:2], "--images", ROOT / "models" / "examples"]
    code, _, err = run(
        [*args, "--rule", "guided", "-o", tmp_path / "e.png", "--json", report], capsys
    )
    assert code == 0, err
    assert json.loads(report.read_text())["rule"] == "guided"
