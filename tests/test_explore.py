"""``onnxdeconv explore``: the site's files, and its page in a real headless Chromium.

The browser tests drive Debian's ``chromium`` with ``chromium-driver`` through selenium (the
``test`` extra): they click in the page, read the projection back from ``window.explore`` and
compare it with the Python :class:`~onnxdeconv.Projector`. They need onnxruntime-web in the package
data (``web/fetch-ort.sh``). Outside CI they skip when any of these is missing; in CI (``CI`` set)
they fail instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGIT_7, DIGITNET, ROOT, SQUEEZENET, unavailable

from onnxdeconv import Projector
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import PRESETS, load_input, preprocessing_from_metadata
from onnxdeconv.outputs import explore as explore_module
from onnxdeconv.outputs.explore import EXTERNAL_THRESHOLD, WEIGHTS, ort_files, start_server

EXAMPLES = ROOT / "models" / "examples"
RTOL = 1e-5  # relative, and absolute relative to the projection's peak
CLICK_LAYER = "relu2"


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxdeconv", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def runtime() -> None:
    try:
        ort_files()
    except OnnxDeconvError as exc:
        unavailable(str(exc))


@pytest.fixture(scope="module")
def digit_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A features run of DigitNet's relu2 over the three example digits."""
    out = tmp_path_factory.mktemp("features")
    done = run_cli(
        "features", DIGITNET, EXAMPLES, "--layers", "relu2", "--channels", "0-7", "-o", out
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def digit_site(
    runtime: None, digit_features: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("site") / "digits"
    done = run_cli(
        "explore", DIGITNET, "--images", EXAMPLES, "--features", digit_features, "-o", out
    )
    assert done.returncode == 0, done.stderr
    return out, done.stderr


# --- the files ------------------------------------------------------------------------------


def test_site_holds_page_graphs_runtime_and_pictures(digit_site: tuple[Path, str]) -> None:
    folder, log = digit_site
    site = json.loads((folder / "site.json").read_text())
    assert site["schema"] == "onnxdeconv.explore/1"
    assert [layer["alias"] for layer in site["layers"]] == ["relu1", "relu2", "relu3"]
    assert site["rules"] == ["deconvnet", "guided", "gradient"]
    assert [image["name"] for image in site["images"]] == sorted(p.name for p in EXAMPLES.iterdir())
    assert site["prediction"] == {"name": "logits", "classes": 10}
    assert site["labels"] == load_model(DIGITNET).labels
    for name in ("index.html", "explore.js", "explore.css", site["runtime"], site["forward"]):
        assert (folder / name).is_file(), name
    for layer in site["layers"]:
        assert sorted(layer["graphs"]) == sorted(site["rules"])
    assert "site " in log and "MiB" in log


def _graphs(folder: Path) -> list[onnx.ModelProto]:
    return [onnx.load(str(p)) for p in sorted((folder / "graphs").glob("*.onnx"))]


def test_weights_are_stored_once_across_graphs(digit_site: tuple[Path, str]) -> None:
    folder, _ = digit_site
    distinct: dict[str, int] = {}
    models = _graphs(folder)
    for model in models:  # load_external_data: reads weights.bin back per tensor
        for tensor in model.graph.initializer:
            raw = tensor.raw_data
            if len(raw) >= EXTERNAL_THRESHOLD:
                distinct[hashlib.sha256(raw).hexdigest()] = len(raw)
    stored = (folder / "graphs" / WEIGHTS).stat().st_size
    # Each distinct tensor once, with at most 63 bytes of alignment before it.
    assert sum(distinct.values()) <= stored < sum(distinct.values()) + 64 * len(distinct)
    # Nine projector graphs and the forward graph share the convolution weights: each graph with
    # its weights inside would take several times the site's graphs and weights together.
    graphs = sum(p.stat().st_size for p in (folder / "graphs").glob("*.onnx"))
    inline = sum(model.ByteSize() for model in models)
    assert len(models) == 10 and graphs + stored < inline / 5


def test_graphs_run_in_python_and_match_the_projector(digit_site: tuple[Path, str]) -> None:
    folder, _ = digit_site
    loaded = load_model(DIGITNET)
    array = load_input(DIGIT_7, loaded, preprocessing_from_metadata(loaded)).array
    site = json.loads((folder / "site.json").read_text())
    layer = site["layers"][1]
    projector = Projector(DIGITNET, layer=layer["name"], rule="guided", device="cpu")
    forward = projector.forward(array)
    pick = projector.strongest(forward, channel=3)[0]
    expected = projector.project(forward, [pick])
    session = ort.InferenceSession(str(folder / layer["graphs"]["guided"]))
    feeds = {
        "image": array,
        "channel": np.array([3], np.int64),
        "position": np.array([pick.position], np.int64),
    }
    got = session.run(["projection"], feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def test_missing_runtime_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(explore_module, "site_assets", lambda: tmp_path)
    with pytest.raises(OnnxDeconvError, match=r"web/fetch-ort\.sh") as caught:
        ort_files()
    assert "\n" not in str(caught.value)


def test_features_run_without_the_layers_says_so(digit_features: Path, runtime: None) -> None:
    done = run_cli("explore", DIGITNET, "--layers", "relu3", "--features", digit_features)
    assert done.returncode == 2
    assert "has none of the layers relu3" in done.stderr and "--features" in done.stderr


def test_server_sends_isolation_headers(digit_site: tuple[Path, str]) -> None:
    folder, _ = digit_site
    server = start_server(folder)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/") as response:
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b"explore.js" in response.read()
        url = f"http://127.0.0.1:{server.server_port}/ort/ort-wasm-simd-threaded.wasm"
        with urllib.request.urlopen(url) as response:
            assert response.headers["Content-Type"] == "application/wasm"
    finally:
        server.shutdown()


def test_serve_prints_the_url(digit_site: tuple[Path, str], tmp_path: Path) -> None:
    args = [sys.executable, "-m", "onnxdeconv", "explore", str(DIGITNET), "--layers", "relu1"]
    args += ["--rule", "deconvnet", "-o", str(tmp_path / "site"), "--serve", "--port", "0"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(2)]
        assert lines[0].endswith("index.html") and lines[1].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(lines[1]) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the page in Chromium --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by selenium; skips (fails in CI) when any part is missing."""
    binary = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )
    driver_binary = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed: pip install -e '.[test]'")
    if binary is None or driver_binary is None:
        unavailable(
            "the page tests need chromium and chromedriver: apt-get install chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_idle(driver: Any, previous: Any = None, timeout: float = 120) -> dict[str, Any]:
    """``window.explore`` once the page is ready, idle and past ``previous`` projection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(
            "const e = window.explore; return e && {ready: e.ready, busy: e.busy, "
            "errors: e.errors, last: e.last, timings: e.timings}"
        )
        if state and state["errors"]:
            pytest.fail(f"the page failed: {state['errors']}")
        if state and state["ready"] and state["busy"] == 0 and state["last"] != previous:
            result: dict[str, Any] = state
            return result
        time.sleep(0.1)
    pytest.fail(f"the page did not finish in {timeout} s")


def page_arrays(driver: Any) -> tuple[np.ndarray, np.ndarray]:
    values = driver.execute_script(
        "return [Array.from(window.explore.projection), Array.from(window.explore.input)]"
    )
    return np.asarray(values[0], np.float32), np.asarray(values[1], np.float32)


def python_projection(
    model: Path, array: np.ndarray, last: dict[str, Any]
) -> tuple[np.ndarray, float]:
    projector = Projector(model, layer=last["layer"], rule=last["rule"], device="cpu")
    forward = projector.forward(array)
    pick = projector.strongest(
        forward, channel=last["channel"], position=tuple(last["position"]), skip_saturated=False
    )[0]
    return projector.project(forward, [pick])[0], pick.value


def check_projection(
    driver: Any,
    model: Path,
    array: np.ndarray,
    last: dict[str, Any],
    graph: Path | None = None,
    rtol: float = RTOL,
) -> None:
    """The page's input equals ``array``; its projection equals the Projector's within ``rtol``.

    With ``graph`` (the site's projector graph), the page's projection must also equal that graph
    run by ONNX Runtime for Python within :data:`RTOL`.
    """
    got, page_input = page_arrays(driver)
    # The page feeds the model exactly what Python feeds it.
    np.testing.assert_array_equal(page_input.astype(array.dtype), array.ravel())
    expected, value = python_projection(model, array, last)
    peak = float(np.abs(expected).max())
    assert peak > 0, "the projection is all zeros: choose a unit that fires"
    np.testing.assert_allclose(got, expected.ravel(), rtol=rtol, atol=rtol * peak)
    assert last["activation"] == pytest.approx(value, rel=rtol)
    if graph is not None:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        feeds = {
            session.get_inputs()[0].name: array,
            "channel": np.array([last["channel"]], np.int64),
            "position": np.array([last["position"]], np.int64),
        }
        same = session.run(["projection"], feeds)[0].ravel()
        np.testing.assert_allclose(got, same, rtol=RTOL, atol=RTOL * peak)


@pytest.fixture(scope="module")
def digit_page(browser: Any, digit_site: tuple[Path, str]) -> Iterator[tuple[Any, dict[str, Any]]]:
    server = start_server(digit_site[0])
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        yield browser, wait_idle(browser)
    finally:
        server.shutdown()


def digit_input_of(path: Path) -> np.ndarray:
    loaded = load_model(DIGITNET)
    return load_input(path, loaded, preprocessing_from_metadata(loaded)).array


def digit_input(name: str) -> np.ndarray:
    return digit_input_of(EXAMPLES / name)


def test_first_projection_matches_python(digit_page: tuple[Any, dict[str, Any]]) -> None:
    driver, state = digit_page
    last = state["last"]
    assert last["image"] == "digit_3.png" and last["rule"] == "deconvnet"
    check_projection(driver, DIGITNET, digit_input("digit_3.png"), last)
    assert state["timings"]["firstProjectionMs"] > 0


def test_click_in_a_map_projects_that_unit(digit_page: tuple[Any, dict[str, Any]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, _ = digit_page
    previous = wait_idle(driver)["last"]
    # Another image, by a real click on its thumbnail.
    driver.find_element(By.CSS_SELECTOR, '.thumbs img[alt="digit_7.png"]').click()
    previous = wait_idle(driver, previous)["last"]
    # Away from the layer and back, by real clicks on the layer buttons.
    for alias in ("relu1", CLICK_LAYER):
        driver.find_element(By.XPATH, f"//nav/button[text()='{alias}']").click()
        previous = wait_idle(driver, previous)["last"]
        assert previous["layer"] == Projector(DIGITNET, layer=alias, device="cpu").layer
    array = digit_input("digit_7.png")
    projector = Projector(DIGITNET, layer=CLICK_LAYER, device="cpu")
    acts = projector.forward(array).activations[0]
    peaks = acts.reshape(acts.shape[0], -1).max(1)
    channel = int(np.argsort(-peaks, kind="stable")[2])  # not the one shown first
    # The unit at the channel's second-strongest position: the click must pick it, not the max.
    second = int(np.argsort(-acts[channel].ravel(), kind="stable")[1])
    h, w = np.unravel_index(second, acts[channel].shape)
    tile = driver.find_element(By.CSS_SELECTOR, f'.tile[data-channel="{channel}"] canvas')
    rect = tile.rect
    rows, cols = acts.shape[1:]
    dx = round((w + 0.5) * rect["width"] / cols - rect["width"] / 2)
    dy = round((h + 0.5) * rect["height"] / rows - rect["height"] / 2)
    ActionChains(driver).move_to_element_with_offset(tile, dx, dy).click().perform()
    last = wait_idle(driver, previous)["last"]
    assert (last["channel"], last["position"]) == (channel, [int(h), int(w)])
    assert last["layer"] == projector.layer
    check_projection(driver, DIGITNET, array, last)


def test_rule_switch_reprojects(digit_page: tuple[Any, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, _ = digit_page
    previous = wait_idle(driver)["last"]
    Select(driver.find_element(By.ID, "rule")).select_by_value("guided")
    last = wait_idle(driver, previous)["last"]
    assert last["rule"] == "guided"
    assert {k: last[k] for k in ("channel", "position")} == {
        k: previous[k] for k in ("channel", "position")
    }
    check_projection(driver, DIGITNET, digit_input(last["image"]), last)


def test_features_panel_shows_the_top_examples(digit_page: tuple[Any, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    driver, _ = digit_page
    last = wait_idle(driver)["last"]
    assert last["layer"] == Projector(DIGITNET, layer=CLICK_LAYER, device="cpu").layer
    driver.find_element(By.CSS_SELECTOR, '.tile[data-channel="0"] .num').click()
    last = wait_idle(driver, last)["last"]
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('#features .nine canvas'))"
        ".map(c => c.width > 0 && c.height > 0 && c.title)"
    )
    assert last["channel"] == 0
    # Three digits in the run: each channel's top-3, as projections and as patches.
    assert len(shown) == 6 and all(shown), shown


@pytest.fixture(scope="module")
def squeezenet_site(
    runtime: None, squeezenet_path: Path, images_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("site") / "squeezenet"
    labels = squeezenet_path.parent / "Labels.txt"
    done = run_cli(
        "explore", squeezenet_path, "--preset", "caffe", "--layers", "relu7,relu13",
        "--rule", "deconvnet", "--labels", labels, "--images", images_dir, "-o", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_squeezenet_projection_in_the_page_matches_python(
    browser: Any, squeezenet_site: Path, images_dir: Path
) -> None:
    """A float16 model: the page rounds its input as numpy does, and projects as Python does."""
    from selenium.webdriver.common.by import By

    server = start_server(squeezenet_site)
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        state = wait_idle(browser)
        last = state["last"]
        assert last["layer"] == "fire5/expand3x3_2"  # the middle one of the two layers
        loaded = load_model(SQUEEZENET)
        array = load_input(images_dir / last["image"], loaded, PRESETS["caffe"]).array
        assert array.dtype == np.float16
        graph = squeezenet_site / "graphs" / "relu13.deconvnet.onnx"
        # The exported graph rounds the float16 layer's unit to float16 as the Projector sees it
        # (export._rounded): without that the two were 1e-4 apart.
        check_projection(browser, SQUEEZENET, array, last, graph, rtol=1e-5)
        first = browser.find_element(By.CSS_SELECTOR, "#prediction li").text
        assert first.startswith("cheeseburger"), first
    finally:
        server.shutdown()


def test_webgpu_site_runs_where_the_browser_has_no_gpu(
    runtime: None, browser: Any, tmp_path: Path
) -> None:
    """The WebGPU build falls back to WebAssembly (headless Chromium here has no GPU adapter)."""
    from onnxdeconv.inputs import read_image
    from onnxdeconv.outputs.explore import SiteImage, fitted_pixels, write_site
    from onnxdeconv.prepared import prepare

    try:
        ort_files(webgpu=True)
    except OnnxDeconvError as exc:
        unavailable(str(exc))
    loaded = load_model(DIGITNET)
    prepared = prepare(loaded)
    preprocessing = preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    picture = SiteImage("digit_7.png", fitted_pixels(read_image(DIGIT_7), prepared))
    layer = prepared.resolve("relu2")
    summary = write_site(
        tmp_path, prepared, [layer], ["guided"], preprocessing,
        model_name="digitnet", images=[picture], webgpu=True,
    )  # fmt: skip
    assert json.loads((tmp_path / "site.json").read_text())["runtime"] == "ort/ort.webgpu.min.mjs"
    assert summary.sizes["runtime"] > 30 * 2**20
    server = start_server(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        last = wait_idle(browser)["last"]
    finally:
        server.shutdown()
    check_projection(browser, DIGITNET, digit_input_of(DIGIT_7), last)


def test_a_picked_file_is_preprocessed_and_projected(
    digit_page: tuple[Any, dict[str, Any]],
) -> None:
    """An image from the file picker (not a listed one): the browser fits and normalises it."""
    from selenium.webdriver.common.by import By

    driver, _ = digit_page
    previous = wait_idle(driver)["last"]
    picker = driver.find_element(By.ID, "file")
    driver.execute_script("arguments[0].style.display = 'block'", picker)
    picker.send_keys(str(EXAMPLES / "digit_8.png"))
    last = wait_idle(driver, previous)["last"]
    assert last["image"] == "digit_8.png"
    # At the model's size already, the browser's fit is the identity: the input is Python's.
    check_projection(driver, DIGITNET, digit_input("digit_8.png"), last)


def test_squeezenet_site_stores_only_the_float16_weights(
    squeezenet_site: Path, squeezenet_path: Path
) -> None:
    """The deconv graphs' float32 copies of the weights read the model's float16 bytes."""
    model = onnx.load(str(squeezenet_path))
    weights = [t for t in model.graph.initializer if len(t.raw_data) >= EXTERNAL_THRESHOLD]
    assert {t.data_type for t in weights} == {onnx.TensorProto.FLOAT16}
    own = sum(len(t.raw_data) for t in weights)
    stored = (squeezenet_site / "graphs" / WEIGHTS).stat().st_size
    assert own <= stored < own + 64 * len(weights)
    graph = onnx.load(
        str(squeezenet_site / "graphs" / "relu13.deconvnet.onnx"), load_external_data=False
    )
    external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.data_type for t in external} == {onnx.TensorProto.FLOAT16}
    widened = [n for n in graph.graph.node if n.op_type == "Cast" and n.name.startswith("widen/")]
    assert widened


def test_fully_connected_layer_projects_in_the_page(
    runtime: None, browser: Any, tmp_path: Path
) -> None:
    """A layer without spatial axes: its units have no position, the page projects them too."""
    from selenium.webdriver.common.by import By

    done = run_cli(
        "explore", DIGITNET, "--layers", "relu3,relu4", "--rule", "guided",
        "--images", EXAMPLES, "-o", tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    server = start_server(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        previous = wait_idle(browser)["last"]
        # The page starts at the spatial layer, relu3, rather than at the middle one, relu4.
        assert len(previous["position"]) == 2
        browser.find_element(By.XPATH, "//nav/button[text()='relu4']").click()
        previous = wait_idle(browser, previous)["last"]
        browser.find_elements(By.CSS_SELECTOR, ".tile canvas")[1].click()
        last = wait_idle(browser, previous)["last"]
    finally:
        server.shutdown()
    assert last["position"] == [] and last["channel"] != previous["channel"]
    check_projection(browser, DIGITNET, digit_input("digit_3.png"), last)
