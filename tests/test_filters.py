from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import DIGITNET, ROOT
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import OnnxDeconvError, load_model, prepare
from onnxdeconv.analysis.filters import BAND_NAMES, FilterReport, analyse_filters, band_fractions
from onnxdeconv.errors import InputError
from onnxdeconv.inputs import IMAGE_SUFFIXES, PRESETS, load_input
from onnxdeconv.outputs import json_safe

SIZE = 224


def conv_model(
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int = 1,
    size: int = SIZE,
    batch_norm_shift: np.ndarray | None = None,
) -> onnx.ModelProto:
    """x [N, C, size, size] -> Conv(weights, stride, pad k//2) [-> BatchNorm] -> Relu."""
    count, channels, kernel, _ = weights.shape
    bias = np.zeros(count, np.float32) if bias is None else bias.astype(np.float32)
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["conv"],
            name="conv",
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[kernel // 2] * 4,
        )
    ]
    initializers = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    initializers.append(numpy_helper.from_array(bias, "b"))
    rectified = "conv"
    if batch_norm_shift is not None:
        ones, zeros = np.ones(count, np.float32), np.zeros(count, np.float32)
        for name, value in (("scale", ones), ("shift", batch_norm_shift), ("mean", zeros)):
            initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        initializers.append(numpy_helper.from_array(ones, "var"))
        nodes.append(
            helper.make_node(
                "BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"], name="bn"
            )
        )
        rectified = "bn"
    nodes.append(helper.make_node("Relu", [rectified], ["relu"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "first_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", count, out, out])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def random_filters(count: int, kernel: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, kernel, kernel)).astype(np.float32)


def gabor_filters(count: int, kernel: int, seed: int = 0) -> np.ndarray:
    """Oriented Gabor patches, wavelength 2-8 px, colour-weighted: what trained nets learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:kernel, :kernel] - (kernel - 1) / 2
    out = np.zeros((count, 3, kernel, kernel), np.float32)
    for index in range(count):
        theta, wavelength, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 6.3)
        along = x * np.cos(theta) + y * np.sin(theta)
        envelope = np.exp(-(x**2 + y**2) / (2 * (kernel / 4) ** 2))
        patch = envelope * np.cos(2 * np.pi * along / wavelength + phase)
        out[index] = patch[None] * rng.normal(size=(3, 1, 1))
    return out


def first_layer(kind: str, kernel: int, stride: int, seed: int = 0) -> onnx.ModelProto:
    make = random_filters if kind == "random" else gabor_filters
    return conv_model(make(32, kernel, seed), stride=stride)


@pytest.fixture(scope="module")
def photos(images_dir: Path) -> np.ndarray:
    """The shared photos, ImageNet-preprocessed for a [N, 3, 224, 224] float32 input."""
    loaded = load_model(conv_model(random_filters(2, 3)))
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return np.concatenate([load_input(f, loaded, PRESETS["imagenet"]).array for f in files])


# --- frequency bands ----------------------------------------------------------------------


def test_constant_filter_is_low_and_checkerboard_is_high() -> None:
    y, x = np.indices((11, 11))
    constant = np.ones((1, 3, 11, 11), np.float32)
    checkerboard = np.where((y + x) % 2 == 0, 1.0, -1.0).astype(np.float32)[None, None]
    # A cosine of period 4 px (0.25 cycles/pixel) along x sits in the mid band.
    cosine = np.cos(2 * np.pi * 0.25 * x).astype(np.float32)[None, None]
    zero = np.zeros((1, 1, 11, 11), np.float32)
    fractions = band_fractions(np.concatenate([constant[:, :1], checkerboard, cosine, zero]))
    low, mid, high = (BAND_NAMES.index(b) for b in ("low", "mid", "high"))
    # A finite filter's edges leak a little energy (its frequency response is a sinc): 91% for an
    # 11x11 box, the rest in its sidelobes.
    assert fractions[0, low] > 0.9
    assert fractions[1, high] > 0.99
    assert fractions[2, mid] > 0.7
    np.testing.assert_allclose(fractions[:3].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(fractions[3], 0.0)
    # Channels add energy: three identical channels give the same fractions as one.
    np.testing.assert_allclose(band_fractions(constant)[0], fractions[0], atol=1e-9)


# --- aliasing -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "gabor"])
def test_stride4_11x11_aliases_more_than_stride2_7x7_on_images(
    kind: str, photos: np.ndarray
) -> None:
    alexnet = analyse_filters(prepare(load_model(first_layer(kind, 11, 4))), photos)
    zfnet = analyse_filters(prepare(load_model(first_layer(kind, 7, 2))), photos)
    assert alexnet.aliasing_source == zfnet.aliasing_source == "images"
    assert 0 <= zfnet.aliasing < alexnet.aliasing <= 1
    assert alexnet.aliasing > 0.1
    assert alexnet.verdict.startswith("stride 4 with 11x11 kernels: high aliasing score")
    assert "consider stride 2, 7x7" in alexnet.verdict
    if kind == "random":
        assert zfnet.aliasing < 0.1
        assert "consider" not in zfnet.verdict
    assert zfnet.verdict.startswith("stride 2 with 7x7 kernels")


@pytest.mark.parametrize("kind", ["random", "gabor"])
def test_stride4_11x11_aliases_more_than_stride2_7x7_without_images(kind: str) -> None:
    for seed in range(3):
        alexnet = analyse_filters(prepare(load_model(first_layer(kind, 11, 4, seed))))
        zfnet = analyse_filters(prepare(load_model(first_layer(kind, 7, 2, seed))))
        assert alexnet.aliasing_source == zfnet.aliasing_source == "filters"
        assert zfnet.aliasing < alexnet.aliasing
        assert alexnet.never_active is None
        assert "consider stride 2, 7x7" in alexnet.verdict


def test_stride_one_does_not_alias(photos: np.ndarray) -> None:
    model = prepare(load_model(first_layer("random", 5, 1)))
    assert analyse_filters(model).aliasing == 0.0
    assert analyse_filters(model, photos[:2]).aliasing == 0.0


# --- dead and never-active filters ---------------------------------------------------------


def test_dead_and_never_active_filters(photos: np.ndarray) -> None:
    weights = random_filters(8, 5, seed=3)
    weights[[2, 5]] = 0.0
    bias = np.zeros(8, np.float32)
    bias[[2, 5]] = 1.0  # dead but always positive: active
    bias[3] = -1e6  # live weights, but its response never gets above zero
    model = prepare(load_model(conv_model(weights, bias, stride=2)))
    done: list[int] = []
    report = analyse_filters(model, photos[:3], progress=done.append)
    assert sum(done) == 3 and done  # every image, one forward run at a time
    assert report.dead == [2, 5]
    assert report.never_active == [3]
    np.testing.assert_array_equal(report.band_energy[[2, 5]], 0.0)
    assert report.norms[[2, 5]].tolist() == [0.0, 0.0]
    assert "2 of 8 filters are dead" in report.verdict
    assert "1 of 8 filters never fire" in report.verdict
    without = analyse_filters(model)
    assert without.dead == [2, 5] and without.never_active is None
    # Coverage is over the live filters only.
    np.testing.assert_allclose(
        without.coverage, without.band_energy[[0, 1, 3, 4, 6, 7]].mean(axis=0), rtol=1e-6
    )


def test_small_filters_are_dead_relative_to_the_median() -> None:
    weights = random_filters(6, 3, seed=4)
    weights[1] *= 0.01
    report = analyse_filters(prepare(load_model(conv_model(weights))), dead_ratio=0.05)
    assert report.dead == [1]
    assert analyse_filters(prepare(load_model(conv_model(weights))), dead_ratio=0.001).dead == []


def test_never_active_reads_the_rectifier_input_after_batch_norm(photos: np.ndarray) -> None:
    shift = np.zeros(4, np.float32)
    shift[1] = -1e6
    model = prepare(load_model(conv_model(random_filters(4, 3), batch_norm_shift=shift)))
    report = analyse_filters(model, photos[:2])
    assert report.layer == "conv"
    assert report.never_active == [1]


def test_first_conv_behind_a_transpose(photos: np.ndarray) -> None:
    """An NHWC model whose first Conv reads a transposed, normalised input."""
    nchw = first_layer("gabor", 11, 4)
    graph = nchw.graph
    graph.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["t"], perm=[0, 3, 1, 2]))
    graph.node.insert(1, helper.make_node("Mul", ["t", "half"], ["x"]))
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info("x_nhwc", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    )
    nhwc = analyse_filters(
        prepare(load_model(nchw)), np.ascontiguousarray(photos.transpose(0, 2, 3, 1))
    )
    direct = analyse_filters(prepare(load_model(first_layer("gabor", 11, 4))), photos * 0.5)
    assert nhwc.layer == "conv" and nhwc.stride == (4, 4)
    assert nhwc.aliasing == pytest.approx(direct.aliasing, rel=1e-4)
    assert nhwc.never_active == direct.never_active


def test_report_json_round_trips() -> None:
    report = analyse_filters(prepare(load_model(first_layer("random", 7, 2))))
    data = json.loads(json.dumps(report.to_json()))
    assert data["layer"] == "conv" and data["stride"] == [2, 2] and data["kernel"] == [7, 7]
    assert set(data["coverage"]) == set(BAND_NAMES)
    assert len(data["band_energy"]) == len(data["norms"]) == 32
    assert data["never_active"] is None and data["aliasing_source"] == "filters"
    assert isinstance(report, FilterReport) and report.weights.dtype == np.float32


def test_library_errors(photos: np.ndarray) -> None:
    model = prepare(load_model(first_layer("random", 3, 1)))
    with pytest.raises(InputError, match="shape"):
        analyse_filters(model, photos[:, :, :100])
    with pytest.raises(InputError, match="float64"):
        analyse_filters(model, photos.astype(np.float64))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "no_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])],
    )
    no_conv = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    no_conv.ir_version = 7
    with pytest.raises(OnnxDeconvError, match="no Conv fed by the image input"):
        analyse_filters(prepare(load_model(no_conv)))


# --- command line -------------------------------------------------------------------------


def test_cli_digitnet_skips_corrupt_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits" / "nested"
    folder.mkdir(parents=True)
    examples = sorted((ROOT / "models" / "examples").glob("*.png"))
    for example in examples:
        shutil.copy(example, folder / example.name)
    (folder.parent / "broken.png").write_bytes(b"not a png at all")
    out, report = tmp_path / "f.png", tmp_path / "f.json"
    code, stdout, err = run(
        ["filters", DIGITNET, "--images", folder.parent, "-o", out, "--json", report], capsys
    )
    assert code == 0, err
    assert "running on " in err
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert "Traceback" not in err
    assert f"using {len(examples)} of {len(examples) + 1} images" in err
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > picture.shape[0]
    data = json.loads(report.read_text())
    assert data["stride"] == [1, 1] and data["kernel"] == [5, 5]
    assert data["aliasing"] == 0.0 and data["aliasing_source"] == "images"
    assert data["dead"] == [] and isinstance(data["never_active"], list)
    lines = stdout.splitlines()
    assert lines[0] == data["verdict"]
    assert lines[0].startswith("stride 1 with 5x5 kernels")
    for row in ("layer", "dead filters", "never active", "coverage", "aliasing"):
        assert any(line.startswith(row) for line in lines), stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "f.json", "f.png"]


def test_cli_without_images_default_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(["filters", DIGITNET], capsys)
    assert code == 0, err
    assert (tmp_path / "digitnet_filters.png").is_file()
    assert "not measured (no images given)" in stdout
    assert "from filters" in stdout


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--images", "missing-folder"], r"image folder '.*missing-folder' does not exist"),
        (["-o", "out.jpg"], r"must end in \.png"),
        (["--json", "no/such/dir/r.json"], r"output folder 'no/such/dir' does not exist"),
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
    code, _, err = run(["filters", DIGITNET, *args], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_empty_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("no pictures here")
    code, _, err = run(
        ["filters", DIGITNET, "--images", tmp_path, "-o", tmp_path / "f.png"], capsys
    )
    assert code == 2
    assert re.fullmatch(r"error: no images .* point --images at a folder of photos\n", err), err


def test_cli_squeezenet(
    squeezenet_path: Path, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "s.png", tmp_path / "s.json"
    code, stdout, err = run(
        [
            "filters",
            squeezenet_path,
            "--images",
            images_dir,
            "--preset",
            "caffe",
            "--limit",
            "3",
            "-o",
            out,
            "--json",
            report,
        ],
        capsys,
    )
    assert code == 0, err
    assert "preset caffe" in err and "using 3 of" in err
    data = json.loads(report.read_text())
    assert data["layer"] == "conv1_1" and data["filters"] == 64 and data["input_channels"] == 3
    assert data["stride"] == [2, 2] and data["kernel"] == [3, 3]
    assert data["aliasing_source"] == "images" and 0 < data["aliasing"] < 1
    assert stdout.startswith("stride 2 with 3x3 kernels")
    assert cv2.imread(str(out)) is not None


def test_report_json_is_strict_and_names_the_provider(photos: np.ndarray) -> None:
    model = prepare(load_model(conv_model(random_filters(4, 5), stride=2)))
    report = analyse_filters(model, photos[:2], device="cpu")
    data = json.loads(json.dumps(json_safe(report.to_json()), allow_nan=False))
    for key in ("layer", "stride", "kernel", "coverage", "band_energy", "norms", "aliasing"):
        assert key in data
    values = [data["aliasing"], *data["coverage"].values(), *data["norms"]]
    assert np.isfinite(values).all() and 0 < data["aliasing"] < 1
    assert report.provider == "CPUExecutionProvider"
    assert analyse_filters(model).provider == ""
