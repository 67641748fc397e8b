from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGIT_7, DIGITNET
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import load_model, prepare
from onnxdeconv.analysis.sanity import (
    CSV_COLUMNS,
    SanityReport,
    cascade_step,
    cascade_steps,
    compare,
    rankdata,
    sanity_check,
    sanity_steps,
    spearman,
    ssim,
    weighted_layers,
)
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import SelectionError
from onnxdeconv.inputs import load_input, preprocessing_from_metadata

C1, C2 = 0.01**2, 0.03**2


# --- Spearman -----------------------------------------------------------------------------


def test_ranks_average_ties() -> None:
    np.testing.assert_array_equal(rankdata(np.array([10, 20, 20, 5])), [2, 3.5, 3.5, 1])
    np.testing.assert_array_equal(rankdata(np.array([7, 7, 7])), [2, 2, 2])
    np.testing.assert_array_equal(rankdata(np.array([[3, 1], [3, 0]])), [3.5, 2, 3.5, 1])


def test_spearman_with_ties_by_hand() -> None:
    # Ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4], both centred on 2.5: deviations
    # [-1.5, 0, 0, 1.5] and [-1.5, .5, -.5, 1.5]; sum of products 4.5, squares 4.5 and 5.
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(
        4.5 / math.sqrt(4.5 * 5)
    )


def test_spearman_without_ties_is_the_classic_formula() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.permutation(50), rng.permutation(50)
    d = a - b  # the permutations are their own ranks minus 1
    n = 50
    assert spearman(a, b) == pytest.approx(1 - 6 * float(d @ d) / (n * (n * n - 1)))


def test_spearman_is_about_order_only() -> None:
    x = np.random.default_rng(2).normal(size=30)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.zeros(30)))


# --- SSIM ---------------------------------------------------------------------------------


def gaussian_2d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    weights = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s formula, window by window, with central moments."""
    w = gaussian_2d()
    values = []
    for top in range(a.shape[0] - 10):
        for left in range(a.shape[1] - 10):
            x, y = a[top : top + 11, left : left + 11], b[top : top + 11, left : left + 11]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cov = (w * (x - mx) * (y - my)).sum()
            values.append(
                (2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
            )
    return float(np.mean(values))


def test_ssim_of_an_image_with_itself_is_one() -> None:
    x = np.random.default_rng(3).uniform(size=(20, 17))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, 1 - x) < 0  # the same structure, inverted


def test_ssim_of_two_constant_images_by_hand() -> None:
    # No variance anywhere: only the luminance term (2ab + C1) / (a^2 + b^2 + C1) remains.
    a, b = 0.2, 0.6
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(np.full((11, 11), a), np.full((11, 11), b)) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_an_affine_pair_in_one_window() -> None:
    # y = 0.5 x + 0.2 has mean 0.5 mx + 0.2, deviation 0.5 sx and covariance 0.5 sx^2.
    x = np.random.default_rng(4).uniform(size=(11, 11))
    w = gaussian_2d()
    mx = float((w * x).sum())
    vx = float((w * (x - mx) ** 2).sum())
    my, vy, cov = 0.5 * mx + 0.2, 0.25 * vx, 0.5 * vx
    expected = (2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    assert ssim(x, 0.5 * x + 0.2) == pytest.approx(expected, rel=1e-9)


def test_ssim_averages_every_full_window() -> None:
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(15, 13))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim_direct(a, b), rel=1e-9)
    assert ssim(a, b) == pytest.approx(ssim(b, a), rel=1e-12)


def test_compare_ignores_a_positive_factor_and_scores_nothing_for_zero() -> None:
    p = np.random.default_rng(6).normal(size=(3, 16, 16))
    assert compare(p, 7.5 * p, "NCHW") == pytest.approx((1.0, 1.0))
    rho, similarity = compare(p, -p, "NCHW")
    assert rho == pytest.approx(1.0)  # magnitudes are the same...
    assert similarity < 0  # ...the picture is inverted
    assert all(math.isnan(s) for s in compare(p, np.zeros_like(p), "NCHW"))
    # Inside a region, only that region counts.
    q = p.copy()
    q[:, 10:, :] = 0
    assert compare(p, q, "NCHW", ((0, 10), (0, 16))) == pytest.approx((1.0, 1.0))
    assert compare(p, q, "NCHW")[0] < 0.9


# --- the cascade pass ---------------------------------------------------------------------


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture(scope="module")
def digitnet() -> onnx.ModelProto:
    return load_model(DIGITNET).model


def test_weighted_layers_are_those_below_the_target(digitnet: onnx.ModelProto) -> None:
    below = weighted_layers(digitnet, "/relu3/Relu_output_0")
    assert [layer.output for layer in below] == [f"/conv{i}/Conv_output_0" for i in (1, 2, 3)]
    assert below[0].weights == ("conv1.weight", "conv1.bias")
    everything = weighted_layers(digitnet)
    assert [layer.op for layer in everything] == ["Conv"] * 3 + ["Gemm"] * 2
    assert weighted_layers(digitnet, "logits") == everything


def test_step_k_replaces_exactly_the_top_k_layers(digitnet: onnx.ModelProto) -> None:
    before = digitnet.SerializeToString()
    layers = weighted_layers(digitnet)
    original = initializers(digitnet)
    for k in range(len(layers) + 1):
        step = cascade_step(digitnet, layers, k, seed=0)
        replaced = {name for layer in layers[len(layers) - k :] for name in layer.weights}
        values = initializers(step)
        assert list(values) == list(original)
        for name, value in values.items():
            assert value.dtype == original[name].dtype and value.shape == original[name].shape
            if name in replaced:
                assert not np.any(value == original[name]), name
                if value.size >= 400:  # enough values to estimate a spread
                    assert np.std(value) == pytest.approx(np.std(original[name]), rel=0.1)
            else:
                np.testing.assert_array_equal(value, original[name])
        # Nodes, inputs and outputs stay as they were.
        for field in ("node", "input", "output"):
            assert [x.SerializeToString() for x in getattr(step.graph, field)] == [
                x.SerializeToString() for x in getattr(digitnet.graph, field)
            ]
    assert digitnet.SerializeToString() == before


def test_cascade_is_reproducible_and_cumulative(digitnet: onnx.ModelProto) -> None:
    layers = weighted_layers(digitnet)
    one = cascade_step(digitnet, layers, 2, seed=7)
    assert one.SerializeToString() == cascade_step(digitnet, layers, 2, seed=7).SerializeToString()
    other = initializers(cascade_step(digitnet, layers, 2, seed=8))
    assert not np.array_equal(initializers(one)["fc2.weight"], other["fc2.weight"])
    # Step 3 adds one layer to step 2 and keeps step 2's random weights.
    three = initializers(cascade_step(digitnet, layers, 3, seed=7))
    for name in ("fc1.weight", "fc2.weight", "fc2.bias"):
        np.testing.assert_array_equal(three[name], initializers(one)[name])


def test_cascade_steps_spread_over_the_layers() -> None:
    assert cascade_steps(3) == [0, 1, 2, 3]
    assert cascade_steps(3, 5) == [0, 1, 2, 3]
    assert cascade_steps(26, 1) == [0, 26]
    assert cascade_steps(26, 2) == [0, 1, 26]
    assert cascade_steps(26, 3) == [0, 1, 14, 26]


# --- projections that do and do not depend on the upper layer -----------------------------

SIZE, KERNEL, POSITION = 12, 5, (6, 6)


def two_convs(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x[N,1,12,12] -> Conv(w1, 5x5, pad 2) -> Relu -> Conv(w2, 1x1) = "c2" -> Relu."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[2] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["N", len(w2), SIZE, SIZE])],
        initializer=[
            numpy_helper.from_array(w1.astype(np.float32), "w1"),
            numpy_helper.from_array(w2.astype(np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def deconvnet_by_hand(w1: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """A unit signal at ``POSITION`` of c2, channel with upper weights ``upper`` [F]: the deconvnet
    passes relu(upper) to r1 at that position, then conv1's transpose spreads each filter over
    the 5x5 patch it read, from POSITION - 2."""
    out = np.zeros((1, SIZE, SIZE))
    top, left = POSITION[0] - 2, POSITION[1] - 2
    for weight, kernel in zip(np.maximum(upper, 0), w1[:, 0], strict=True):
        out[0, top : top + KERNEL, left : left + KERNEL] += weight * kernel
    return out


def run_check(model: onnx.ModelProto, channel: int, rules: tuple[Rule, ...]) -> SanityReport:
    x = np.random.default_rng(9).normal(size=(1, 1, SIZE, SIZE)).astype(np.float32)
    return sanity_check(
        prepare(load_model(model)),
        x,
        layer="c2",
        rules=rules,
        channel=channel,
        position=POSITION,
        seed=0,
        device="cpu",
    )


def test_one_input_channel_upper_weights_only_scale_the_projection() -> None:
    # With one channel below, the 1x1 conv's transpose multiplies the unit signal by one weight
    # w2[c]; the deconvnet's rectifier passes it when w2[c] > 0 and kills it otherwise, and the
    # guided rule adds a mask that depends on conv1 only. So the upper weights can only scale the
    # projection (scores exactly 1) or zero it: nothing of what they learned shows.
    rng = np.random.default_rng(10)
    w1 = rng.normal(size=(1, 1, KERNEL, KERNEL))
    w2 = np.array([0.5, 1.0, 2.0, 0.3, 0.8, 1.5]).reshape(6, 1, 1, 1)
    model = two_convs(w1, w2)
    layers = weighted_layers(model, "c2")
    random_w2 = initializers(cascade_step(model, layers, 1, seed=0))["w2"].ravel()
    positive, negative = int(np.argmax(random_w2 > 0)), int(np.argmax(random_w2 <= 0))
    assert random_w2[positive] > 0 >= random_w2[negative]  # seed 0 draws both signs
    report = run_check(model, positive, ("deconvnet", "guided"))
    assert report.steps == [0, 1, 2]
    expected = deconvnet_by_hand(w1, random_w2[positive : positive + 1])
    np.testing.assert_allclose(report.projections["deconvnet"][1], expected, atol=1e-5)
    for rule in ("deconvnet", "guided"):
        assert report.spearman[rule][1] == pytest.approx(1.0)
        assert report.ssim[rule][1] == pytest.approx(1.0)
    dead = run_check(model, negative, ("deconvnet",))
    np.testing.assert_array_equal(dead.projections["deconvnet"][1], 0.0)
    assert math.isnan(dead.ssim["deconvnet"][1])


def test_upper_weights_that_mix_channels_change_the_projection() -> None:
    # With four channels below, the unit's projection is sum_j relu(w2[c, j]) * filter j: the
    # original's w2 picks filter 0 alone, random weights mix in the other filters.
    rng = np.random.default_rng(11)
    w1 = rng.normal(size=(4, 1, KERNEL, KERNEL))
    w2 = np.zeros((3, 4, 1, 1))
    w2[:, 0] = 1.0
    model = two_convs(w1, w2)
    random_w2 = initializers(cascade_step(model, weighted_layers(model, "c2"), 1, 0))["w2"]
    channel = int(np.argmax((random_w2[:, 1:, 0, 0] > 0).any(axis=1)))
    report = run_check(model, channel, ("deconvnet",))
    original = deconvnet_by_hand(w1, w2[channel, :, 0, 0])
    randomised = deconvnet_by_hand(w1, random_w2[channel, :, 0, 0])
    projections = report.projections["deconvnet"]
    np.testing.assert_allclose(projections[0], original, atol=1e-5)
    np.testing.assert_allclose(projections[1], randomised, atol=1e-5)
    region = ((4, 9), (4, 9))  # the unit's 5x5 receptive field
    assert report.region == region
    rho, similarity = compare(original, randomised, "NCHW", region)
    assert report.spearman["deconvnet"][1] == pytest.approx(rho)
    assert report.ssim["deconvnet"][1] == pytest.approx(similarity)
    assert rho < 0.9 and similarity < 0.9


def test_a_layer_with_no_weights_below_is_refused() -> None:
    model = two_convs(np.ones((1, 1, KERNEL, KERNEL)), np.ones((1, 1, 1, 1)))
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], ["rx"], name="relu0"))
    model.graph.node[1].input[0] = "rx"
    x = np.zeros((1, 1, SIZE, SIZE), np.float32)
    with pytest.raises(SelectionError, match="computed from no Conv"):
        sanity_check(prepare(load_model(model)), x, layer="rx", device="cpu")


# --- a trained model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_7() -> np.ndarray:
    loaded = load_model(DIGITNET)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    return load_input(DIGIT_7, loaded, preprocessing).array


def test_trained_digitnet_original_scores_one_and_random_weights_change_it(
    digit_7: np.ndarray,
) -> None:
    prepared = prepare(load_model(DIGITNET))
    report = sanity_check(prepared, digit_7, steps=1, device="cpu")
    assert report.layer == "/conv3/Conv_output_0"  # the deepest Conv output with a feature map
    assert report.steps == [0, 3]
    for rule in ("deconvnet", "guided", "gradient"):
        assert report.spearman[rule][0] == pytest.approx(1.0, abs=1e-12)
        assert report.ssim[rule][0] == pytest.approx(1.0, abs=1e-12)
        assert report.ssim[rule][1] < 0.9


def test_own_target_projects_each_steps_strongest_unit(digit_7: np.ndarray) -> None:
    prepared = prepare(load_model(DIGITNET))
    report = sanity_check(
        prepared,
        digit_7,
        layer="conv3",
        rules=("deconvnet",),
        steps=1,
        target="own",
        device="cpu",
    )
    # Run the randomised model as it is, with conv3's output exposed, to find its strongest unit.
    model = cascade_step(prepared.loaded.model, report.layers, 3, seed=0)
    model.graph.output.append(
        helper.make_tensor_value_info("/conv3/Conv_output_0", TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    conv3 = session.run(["/conv3/Conv_output_0"], {"image": digit_7})[0][0]
    channel, *position = np.unravel_index(int(conv3.argmax()), conv3.shape)
    assert report.units[1] == (int(channel), tuple(int(p) for p in position))
    assert report.activations[1] == pytest.approx(float(conv3.max()), rel=1e-5)


# --- the command --------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_on_digitnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture, table = tmp_path / "s.png", tmp_path / "s.csv"
    code, out, err = run(
        ["sanity", DIGITNET, DIGIT_7, "--device", "cpu", "-o", picture, "--csv", table], capsys
    )
    assert code == 0, err
    assert cv2.imread(str(picture)) is not None
    rows = read_csv(table)
    assert len(rows) == 4 * 3  # (original + 3 conv layers) x 3 rules
    assert [r["down_to"] for r in rows[::3]] == ["", "conv3", "conv2", "conv1"]
    assert {r["spearman"] for r in rows[:3]} == {"1"} and {r["ssim"] for r in rows[:3]} == {"1"}
    assert all(float(r["ssim"]) < 1 for r in rows[3:])
    assert "Adebayo et al." in out and "not what the model learned" in out
    assert out.strip().splitlines()[-2:] == [str(picture), str(table)]


def test_cli_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["sanity", "--help"], capsys)
    assert code == 0
    assert "Example: onnxdeconv sanity " in out


def test_cli_on_squeezenet(
    tmp_path: Path, squeezenet_path: Path, images_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "cat.csv"
    code, out, err = run(
        [
            "sanity",
            squeezenet_path,
            images_dir / "cat.jpg",
            "--preset",
            "caffe",
            "--steps",
            "1",
            "--rule",
            "deconvnet",
            "--device",
            "cpu",
            "-o",
            tmp_path / "cat.png",
            "--csv",
            table,
        ],
        capsys,
    )
    assert code == 0, err
    rows = read_csv(table)
    assert [(r["randomised_layers"], r["down_to"]) for r in rows] == [("0", ""), ("26", "conv1")]
    assert float(rows[0]["ssim"]) == 1.0
    assert "with 26 of 26 weighted layers randomised" in out
    assert (tmp_path / "cat.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "conv99"], "unknown layer 'conv99'"),
        (["--position", "40,40"], "outside layer"),
        (["--channel", "99"], "channel 99 is out of range"),
        (["-o", "{tmp}/s.jpg"], "must end in .png"),
        (["--csv", "{tmp}/missing/s.csv"], "does not exist"),
        (["--steps", "0"], "--steps"),
        (["--rule", "lrp"], "--rule"),
    ],
)
def test_cli_errors_are_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "s.png")]
    code, _, err = run(["sanity", DIGITNET, DIGIT_7, "--device", "cpu", *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not list(tmp_path.glob("*.png"))


def test_cli_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["sanity", DIGITNET, tmp_path / "nope.png"], capsys)
    assert code == 2
    assert err.strip().startswith("error: input file") and len(err.strip().splitlines()) == 1


def test_report_to_json_and_rows() -> None:
    rng = np.random.default_rng(10)
    w1 = rng.normal(size=(1, 1, KERNEL, KERNEL))
    w2 = np.array([0.5, 1.0, 2.0, 0.3, 0.8, 1.5]).reshape(6, 1, 1, 1)
    model = two_convs(w1, w2)
    random_w2 = initializers(cascade_step(model, weighted_layers(model, "c2"), 1, seed=0))["w2"]
    negative = int(np.argmax(random_w2.ravel() <= 0))
    report = run_check(model, negative, ("deconvnet",))
    # JSON has no NaN: the randomised model's projection is zero, its scores null.
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["layer"] == "c2" and data["rules"] == ["deconvnet"] and data["target"] == "same"
    assert [s["randomised_layers"] for s in data["steps"]] == report.steps == [0, 1, 2]
    assert [s["down_to"] for s in data["steps"]] == [None, *report.labels[::-1]]
    assert data["steps"][0]["spearman"]["deconvnet"] == pytest.approx(1.0)
    assert data["steps"][1]["ssim"]["deconvnet"] is None
    assert all(s["channel"] == negative and s["position"] == list(POSITION) for s in data["steps"])
    assert data["region"] == [[4, 9], [4, 9]] and data["provider"] == "CPUExecutionProvider"
    rows = report.rows()
    assert [list(row) for row in rows] == [list(CSV_COLUMNS)] * 3
    assert rows[0]["spearman"] == "1" and rows[1]["ssim"] == "nan"


def test_sanity_steps_match_the_run(digit_7: np.ndarray) -> None:
    prepared = prepare(load_model(DIGITNET))
    assert sanity_steps(prepared) == [0, 1, 2, 3]
    assert sanity_steps(prepared, "conv2", steps=1) == [0, 2]
    calls: list[int] = []
    report = sanity_check(
        prepared, digit_7, layer="conv2", rules=("deconvnet",), steps=1, progress=calls.append
    )
    assert report.steps == [0, 2] and calls == [1, 1]


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "s.json"
    args = ["sanity", DIGITNET, DIGIT_7, "--steps", "1", "--rule", "guided", "--device", "cpu"]
    code, out, err = run([*args, "-o", tmp_path / "s.png", "--json", target], capsys)
    assert code == 0, err
    assert "running on CPUExecutionProvider" in err
    data = json.loads(target.read_text())
    assert data["model"] == str(DIGITNET) and data["rules"] == ["guided"]
    assert [s["randomised_layers"] for s in data["steps"]] == [0, 3]
    assert out.strip().splitlines()[-2:] == [str(tmp_path / "s.png"), str(target)]
