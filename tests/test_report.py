"""``onnxdeconv report``: one self-contained HTML page, checked as text and in a real Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGITNET, ROOT
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector, load_model, prepare
from onnxdeconv.analysis.report import ANALYSES, Report, build_report, crop_box
from onnxdeconv.cli.main import main
from onnxdeconv.errors import InputError
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import PRESETS, load_input, preprocessing_from_metadata, read_image
from onnxdeconv.outputs import json_safe
from onnxdeconv.outputs.report import write_report
from onnxdeconv.render.report import LayerRow, Page, Picture, Section, render_html

EXAMPLES = ROOT / "models" / "examples"
SRC = re.compile(r'src="([^"]*)"')
IDS = re.compile(r'id="([^"]+)"')
HREFS = re.compile(r'href="#([^"]+)"')


def _cli(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process without capsys (usable from a module-scoped fixture)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["onnxdeconv", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digit_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The report on DigitNet over the three example digits and one unreadable file."""
    base = tmp_path_factory.mktemp("report")
    images = base / "images"
    shutil.copytree(EXAMPLES, images)
    (images / "broken.png").write_bytes(b"not a png at all")
    out = base / "out"
    code, stdout, stderr = _cli(["report", DIGITNET, "--images", images, "-o", out])
    assert code == 0, stderr
    assert "running on " in stderr
    page = out / "index.html"
    assert stdout.strip() == str(page)
    return page, page.read_text(encoding="utf-8"), stderr


def test_page_is_self_contained(digit_report: tuple[Path, str, str]) -> None:
    _, page, _ = digit_report
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    # No stylesheet, script or picture is fetched from anywhere.
    assert "<link" not in page and "url(" not in page and "<script src" not in page
    assert all(src.startswith("data:image/png;base64,") for src in SRC.findall(page))


def test_every_image_is_an_embedded_png(digit_report: tuple[Path, str, str]) -> None:
    _, page, _ = digit_report
    sources = SRC.findall(page)
    # 3 input thumbnails + filters + occlusion + invariance figures, and for each of DigitNet's
    # three Relu layers with spatial maps: 3 images x 4 channels x (projection + patch).
    assert len(sources) == 3 + 3 + 3 * 3 * 4 * 2
    sizes = []
    for src in sources:
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert picture is not None and picture.size > 0
        sizes.append(picture.shape[:2])
    # relu1 has a 5x5 receptive field: its crops are at most 5x5 (smaller at the border).
    relu1 = page.split('id="projections-relu1"')[1].split("</section>")[0]
    for src in SRC.findall(relu1):
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"))
        shape = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape
        assert shape[0] <= 5 and shape[1] <= 5


def test_every_layer_has_an_anchor(digit_report: tuple[Path, str, str]) -> None:
    _, page, _ = digit_report
    ids = IDS.findall(page)
    assert len(ids) == len(set(ids)), "duplicate ids"
    for layer in prepare(load_model(DIGITNET)).layers():
        assert f"layer-{layer.alias}" in ids
    for section in ("summary", "layers", "predictions", "filters", "occlusion", "invariance"):
        assert section in ids
    for alias in ("relu1", "relu2", "relu3"):
        assert f"projections-{alias}" in ids
    # Every in-page link of the navigation and of the table lands somewhere.
    assert set(HREFS.findall(page)) <= set(ids)


def test_projection_captions(digit_report: tuple[Path, str, str]) -> None:
    _, page, _ = digit_report
    relu2 = page.split('id="projections-relu2"')[1].split("</section>")[0]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", relu2, re.S)
    assert len(captions) == 12
    for caption in captions:
        assert re.match(r"ch \d+ @\d+,\d+ · act [\d.e+]+\nimage \d: digit_\d\.png", caption)
        crop = re.search(r"crop y(\d+):(\d+) x(\d+):(\d+)", caption)
        # 11x11 fields on a 28x28 image: always a crop, never larger than the field.
        assert crop is not None
        top, bottom, left, right = map(int, crop.groups())
        assert 0 < bottom - top <= 11 and 0 < right - left <= 11


def test_unreadable_image_is_skipped_and_reported(digit_report: tuple[Path, str, str]) -> None:
    path, page, stderr = digit_report
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert "3 of 4 from" in page and "broken.png:" in page
    # Written atomically: nothing but the page is left in the folder.
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]


def test_missing_images_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["report", DIGITNET, "--images", tmp_path / "nope", "-o", tmp_path / "r"], capsys
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "nope" in err and "--images" in err
    assert not (tmp_path / "r").exists()


def _gemm_only_model() -> onnx.ModelProto:
    """x [1, 1, 8, 8] -> Flatten -> Gemm -> 3 logits: no Conv, no spatial map."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "w"], ["logits"], name="gemm"),
        ],
        "gemm_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def test_analysis_that_does_not_apply_is_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gemm.onnx"
    onnx.save(_gemm_only_model(), path)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((8, 8), 200, np.uint8))
    code, _, err = run(["report", path, "--images", images, "-o", tmp_path / "r"], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    for section in ("filters", "occlusion"):
        body = page.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert 'class="note"' in body and "Not available for this model" in body
    assert "Traceback" not in err


def test_crop_box_is_the_receptive_field_clipped_to_the_image() -> None:
    field = ReceptiveField(size=(11, 11), stride=(2, 2), offset=(-5, -5))
    # Unit (0, 3) sees rows -5..6 and columns 1..12: clipped to rows 0..6.
    assert crop_box(field, (0, 3), 28, 28) == (0, 6, 1, 12)
    assert crop_box(field, (13, 13), 28, 28) == (21, 28, 21, 28)
    # A field that covers half of the image or more: show the whole picture.
    assert crop_box(ReceptiveField((23, 23), (4, 4), (-9, -9)), (3, 3), 28, 28) is None
    assert crop_box(ReceptiveField(None, (1, 1), (0, 0)), (0, 0), 28, 28) is None
    assert crop_box(field, None, 28, 28) is None


def test_text_is_escaped() -> None:
    png = cv2.imencode(".png", np.zeros((2, 2), np.uint8))[1].tobytes()
    page = render_html(
        Page(
            title="<script>alert(1)</script>",
            summary=[("model", "a&b")],
            layers=[LayerRow("conv1", '"x"<y>', "Conv", "1x2x2", "3x3 /1", False, "no <rule>")],
            analyses=[Section("filters", "F", ["1 < 2"], [Picture(png, "cap <b>")])],
        )
    )
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert "a&amp;b" in page and "no &lt;rule&gt;" in page and "cap &lt;b&gt;" in page
    assert 'id="layer-conv1"' in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(binary: str, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_page_renders_in_chromium(digit_report: tuple[Path, str, str]) -> None:
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("CI needs Chromium for this test: apt-get install chromium")
        pytest.skip("chromium is not installed")
    path, page, _ = digit_report
    total = len(SRC.findall(page))
    with tempfile.TemporaryDirectory() as profile:
        result = _browser(
            binary,
            profile,
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert f'data-images-ok="{total}/{total}"' in dom, re.findall(r"data-images-ok=\S+", dom)
    assert 'data-errors=""' in dom
    console = [
        line
        for line in result.stderr.splitlines()
        # Chromium logs page console messages as "INFO:CONSOLE:<line>] ..." (any level).
        if "Uncaught" in line or ":CONSOLE" in line
    ]
    assert not console, console


# --- the library, without the command line -------------------------------------------------


@pytest.fixture(scope="module")
def digit_library_report() -> tuple[Report, np.ndarray, list[str], list[int]]:
    """build_report on DigitNet over the three example digits, counting the progress calls."""
    loaded = load_model(DIGITNET)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    files = sorted(EXAMPLES.glob("*.png"))
    batch = np.concatenate([load_input(f, loaded, preprocessing).array for f in files])
    calls: list[int] = []
    report = build_report(
        prepare(loaded),
        batch,
        [f.name for f in files],
        pictures=[read_image(f) for f in files],
        preprocessing=preprocessing,
        device="cpu",
        progress=calls.append,
    )
    return report, batch, [f.name for f in files], calls


def test_build_report_computes_every_section(
    digit_library_report: tuple[Report, np.ndarray, list[str], list[int]],
) -> None:
    report, batch, names, calls = digit_library_report
    assert report.notes == {}
    assert report.names == names and report.provider == "CPUExecutionProvider"
    assert [r.alias for r in report.layers] == [
        r.alias for r in prepare(load_model(DIGITNET)).layers()
    ]
    # The projected layers default to DigitNet's three Relu layers with spatial maps.
    assert [p.alias for p in report.projections] == ["relu1", "relu2", "relu3"]
    assert calls == [1] * (len(ANALYSES) + 3)
    # The predictions are the softmax of the logits of a plain ONNX Runtime session.
    session = ort.InferenceSession(str(DIGITNET), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": batch})[0].astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert report.predictions is not None and report.predictions.softmax_applied
    np.testing.assert_allclose(report.predictions.probabilities, expected, rtol=1e-5, atol=1e-7)
    assert report.predictions.top(names.index("digit_7.png"))[0][0] == 7
    assert report.filters is not None and report.filters.aliasing_source == "images"
    assert report.occlusion is not None and report.occlusion.projections is not None
    assert len(report.occlusion.projections.positions) == 1 + 3
    assert report.invariance is not None
    assert report.invariance.images == names[:3] and len(report.invariance.examples) == 5
    for layer in report.projections:
        # 3 images x 4 channels, each projected to the 1x28x28 input.
        assert layer.projections.shape == (12, 1, 28, 28) and len(layer.crops) == 12
        assert [p.image for p in layer.selections] == [0] * 4 + [1] * 4 + [2] * 4
        for pick, crop in zip(layer.selections, layer.crops, strict=True):
            assert crop == crop_box(layer.receptive_field, pick.position, 28, 28)


def test_report_to_json_is_strict_json(
    digit_library_report: tuple[Report, np.ndarray, list[str], list[int]],
) -> None:
    report = digit_library_report[0]
    data = json.loads(json.dumps(json_safe(report.to_json()), allow_nan=False))
    assert set(data) >= {"images", "provider", "layers", "projected", "predictions", "filters"}
    assert set(data) >= {"occlusion", "invariance", "projections", "notes"}
    assert len(data["predictions"]["probabilities"]) == 3
    assert all(math.isfinite(p) for row in data["predictions"]["probabilities"] for p in row)
    assert data["occlusion"]["label"] == data["occlusion"]["predicted"]
    assert len(data["invariance"]["amounts"]) == len(report.invariance.curves.amounts)  # type: ignore[union-attr]
    assert [p["alias"] for p in data["projections"]] == ["relu1", "relu2", "relu3"]
    assert len(data["projections"][0]["selections"]) == 12


def test_build_report_without_pictures_leaves_a_note() -> None:
    loaded = load_model(DIGITNET)
    batch = load_input(EXAMPLES / "digit_7.png", loaded, PRESETS["raw"]).array
    report = build_report(prepare(loaded), batch, ["seven"], layers=["relu2"], device="cpu")
    assert report.invariance is None and "pictures" in report.notes["invariance"]
    assert [p.alias for p in report.projections] == ["relu2"]
    # Without the preprocessing, the occluder is the image's mean.
    assert report.occlusion is not None
    assert report.occlusion.fill.ravel() == pytest.approx([float(batch.mean())], rel=1e-6)
    with pytest.raises(InputError, match="2 names for 1 images"):
        build_report(prepare(loaded), batch, ["a", "b"], device="cpu")


def test_commands_reach_onnx_runtime_only_through_the_library() -> None:
    """No command opens sessions of its own: ForwardRunner and the Projector do."""
    banned = re.compile(r"\b(create_session|run_bound|InferenceSession|onnxruntime)\b")
    for path in sorted((ROOT / "onnxdeconv" / "cli").glob("*.py")):
        assert not banned.search(path.read_text()), path.name
    for name in ("filters", "occlusion", "sanity", "report"):
        source = (ROOT / "onnxdeconv" / "analysis" / f"{name}.py").read_text()
        assert not banned.search(source), name


def test_build_report_projects_with_the_rule() -> None:
    loaded = load_model(DIGITNET)
    batch = load_input(EXAMPLES / "digit_7.png", loaded, PRESETS["raw"]).array
    reports = {
        rule: build_report(
            prepare(loaded), batch, ["seven"], layers=["relu2"], rule=rule, device="cpu"
        )
        for rule in ("deconvnet", "guided")
    }
    guided, deconvnet = reports["guided"], reports["deconvnet"]
    assert guided.to_json()["rule"] == "guided" and deconvnet.rule == "deconvnet"
    [layer] = guided.projections
    projector = Projector(prepare(loaded), "relu2", rule="guided", device="cpu")
    forward = projector.forward(batch)
    picks = projector.strongest(forward, top=layer.top)
    assert layer.selections == picks
    np.testing.assert_allclose(layer.projections, projector.project(forward, picks), atol=1e-6)
    assert not np.allclose(layer.projections, deconvnet.projections[0].projections)


def test_aliasing_first_layer_shows_guided_beside_deconvnet(
    squeezenet_path: Path, images_dir: Path, tmp_path: Path
) -> None:
    """SqueezeNet's strided first conv aliases: the page says why and adds guided pictures."""
    loaded = load_model(squeezenet_path)
    model_input = load_input(images_dir / "cat.jpg", loaded, PRESETS["caffe"])
    prepared = prepare(loaded)
    common = {"layers": ["relu13"], "top": 2, "show": 1, "device": "cpu"}
    report = build_report(prepared, model_input.array, ["cat"], **common)  # type: ignore[arg-type]
    assert report.filters is not None and report.filters.aliasing > 0.1
    [layer] = report.projections
    assert layer.guided is not None
    projector = Projector(prepared, "relu13", rule="guided", device="cpu")
    forward = projector.forward(model_input.array)
    expected = projector.project(forward, layer.selections)
    np.testing.assert_allclose(
        layer.guided, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )
    assert not np.allclose(layer.guided, layer.projections)
    page = write_report(
        tmp_path,
        report,
        prepared,
        [model_input],
        model=squeezenet_path,
        preprocessing="caffe",
        images="1",
    ).read_text()
    assert "speckle" in page and "The first layer aliases (score" in page
    assert page.count('alt="guided backpropagation"') == 2
    guided_run = build_report(
        prepared,
        model_input.array,
        ["cat"],
        rule="guided",
        **common,  # type: ignore[arg-type]
    )
    assert guided_run.projections[0].guided is None
