"""Time the `onnxdeconv explore` page in headless Chromium, and take the docs' screenshots.

For DigitNet and the shared SqueezeNet: writes the site (with a features run), opens it in a fresh
headless Chromium (selenium + chromium-driver), and measures

- the time to the first projection: from navigation to the first projection drawn (the page
  loads the runtime, the weights, runs the model and projects the strongest unit);
- the latency per click: real clicks on units of the maps, from the click to the projection drawn
  (``window.explore.last.ms``), after the first one;
- the peer, in the same run: the Python Projector (ONNX Runtime for Python, CPU) doing the same
  work per click (forward pass and projection of one unit);
- the site's size.

    python benchmarks/explore_page.py [--clicks 20] [--screenshots docs/images]

Needs onnxruntime-web in the package data (web/fetch-ort.sh), chromium, chromium-driver,
selenium and ../shared (or ONNXDECONV_SHARED).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from onnxdeconv import Projector
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import PRESETS, load_input, preprocessing_from_metadata
from onnxdeconv.outputs.explore import site_sizes, start_server

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or ROOT.parent / "shared")


def cli(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onnxdeconv", *map(str, args)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)


def browser() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver: Any, previous: Any = None, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(
            "const e = window.explore; return e && {ready: e.ready, busy: e.busy, "
            "errors: e.errors, last: e.last, timings: e.timings, provider: e.provider}"
        )
        if state and state["errors"]:
            raise SystemExit(f"page error: {state['errors']}")
        if state and state["ready"] and state["busy"] == 0 and state["last"] != previous:
            return dict(state)
        time.sleep(0.01)
    raise SystemExit("the page did not finish")


def measure(
    name: str,
    model: Path,
    site_args: list[str | Path],
    array_of: Any,
    clicks: int,
    screenshot: Path | None,
    work: Path,
) -> dict[str, Any]:
    site = work / name
    cli("explore", model, *site_args, "-o", site)
    server = start_server(site)
    driver = browser()
    rng = np.random.default_rng(0)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        state = wait(driver)
        first = state["timings"]["firstProjectionMs"]
        last = state["last"]
        latencies = []
        for _ in range(clicks):
            tiles = driver.find_elements(By.CSS_SELECTOR, ".tile canvas")
            tile = tiles[int(rng.integers(min(16, len(tiles))))]
            rect = tile.rect
            dx = int(rng.integers(-rect["width"] // 3, rect["width"] // 3 + 1))
            dy = int(rng.integers(-rect["height"] // 3, rect["height"] // 3 + 1))
            ActionChains(driver).move_to_element_with_offset(tile, dx, dy).click().perform()
            new = wait(driver, last)
            if new["last"] == last:
                continue
            last = new["last"]
            latencies.append(last["ms"])
        if screenshot is not None:
            # The third strongest channel with dataset examples (the strongest ones of SqueezeNet's
            # relu13 fire at the image border).
            driver.find_elements(By.CSS_SELECTOR, ".tile[data-features] .num")[2].click()
            wait(driver, last)
            time.sleep(0.5)  # the dataset examples draw after the projection
            driver.save_screenshot(str(screenshot))
        provider = state["provider"]
    finally:
        driver.quit()
        server.shutdown()
    array = array_of(last["image"])
    projector = Projector(model, layer=last["layer"], rule=last["rule"], device="cpu")
    peer = []
    for _ in range(max(5, clicks // 2)):
        started = time.perf_counter()
        forward = projector.forward(array)
        pick = projector.strongest(
            forward, channel=last["channel"], position=tuple(last["position"]), skip_saturated=False
        )
        projector.project(forward, pick)
        peer.append(1000 * (time.perf_counter() - started))
    return {
        "name": name,
        "provider": provider,
        "first": first,
        "clicks": latencies,
        "peer": peer,
        "sizes": site_sizes(site),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()
    digitnet = ROOT / "models" / "digitnet.onnx"
    examples = ROOT / "models" / "examples"
    squeezenet = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"
    images = SHARED / "images"
    shots = args.screenshots
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        digits = load_model(digitnet)
        cli(
            "features",
            digitnet,
            examples,
            "--layers",
            "relu2",
            "--channels",
            "all",
            "-o",
            work / "digit_features",
        )
        rows.append(
            measure(
                "DigitNet",
                digitnet,
                ["--images", examples, "--features", work / "digit_features"],
                lambda n: (
                    load_input(examples / n, digits, preprocessing_from_metadata(digits)).array
                ),
                args.clicks,
                None if shots is None else shots / "explore_digitnet.png",
                work,
            )
        )
        squeeze = load_model(squeezenet)
        caffe = ["--preset", "caffe"]
        cli(
            "features",
            squeezenet,
            images,
            *caffe,
            "--layers",
            "relu13",
            "--channels",
            "all",
            "-o",
            work / "sq_features",
        )
        rows.append(
            measure(
                "SqueezeNet 1.1 (fp16)",
                squeezenet,
                [
                    *caffe,
                    "--labels",
                    squeezenet.parent / "Labels.txt",
                    "--images",
                    images,
                    "--features",
                    work / "sq_features",
                ],
                lambda n: load_input(images / n, squeeze, PRESETS["caffe"]).array,
                args.clicks,
                None if shots is None else shots / "explore_squeezenet.png",
                work,
            )
        )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    print(
        "| model | page runtime | first projection (s) | per click, median / p90 (ms) "
        "| Python Projector per unit, median (ms) | ratio "
        "| site (MiB): total / graphs+weights / runtime |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        clicks, peer = row["clicks"], row["peer"]
        median = statistics.median(clicks)
        p90 = float(np.percentile(clicks, 90))
        peer_median = statistics.median(peer)
        mib = {k: v / 2**20 for k, v in row["sizes"].items()}
        print(
            f"| {row['name']} | {row['provider']} | {row['first'] / 1000:.2f} "
            f"| {median:.1f} / {p90:.0f} ({len(clicks)} clicks) | {peer_median:.1f} "
            f"| {median / peer_median:.1f} "
            f"| {mib['total']:.1f} / {mib['graphs']:.1f} / {mib['runtime']:.1f} |"
        )


if __name__ == "__main__":
    main()
