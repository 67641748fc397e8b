"""The exported projector graph, run outside Python, matches the Python Projector.

Runs ``examples/node/project.mjs`` (onnxruntime-node) and, where ONNX Runtime for C++ is present,
the C++ twin in ``examples/cpp``.

The Node tests need Node and ``examples/node/node_modules``: run
``cd examples/node && npm install --ignore-scripts --no-audit --no-fund``. Outside CI they skip
when either is missing; in CI (``CI`` set) they fail instead. The C++ tests need CMake, a C++
compiler and ONNX Runtime's headers and library (``ONNXRUNTIME_ROOT`` pointing at an unpacked
release, or an installed package); they skip without them, in CI too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DIGIT_7, DIGITNET, ROOT

from onnxdeconv import Projector
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input, preprocessing_from_metadata

NODE_DIR = ROOT / "examples" / "node"
SCRIPT = NODE_DIR / "project.mjs"
ORT_NODE = NODE_DIR / "node_modules" / "onnxruntime-node" / "package.json"
INSTALL = f"cd {NODE_DIR.relative_to(ROOT)} && npm install --ignore-scripts --no-audit --no-fund"
CPP_DIR = ROOT / "examples" / "cpp"
SYSTEM_INCLUDES = (Path("/usr/include"), Path("/usr/local/include"))
LAYER = "relu2"
RTOL = 1e-5
ATOL = 1e-6  # relative to the projection's peak

Exporter = Callable[..., Path]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def node_command() -> list[str]:
    """``node project.mjs``; skips (fails in CI) when node or onnxruntime-node is missing."""
    executable = shutil.which("node")
    if executable is None:
        problem = "node is not on PATH: install Node.js 20"
    elif not ORT_NODE.is_file():
        problem = f"onnxruntime-node is not installed in {NODE_DIR}: run `{INSTALL}`"
    else:
        return [executable, str(SCRIPT)]
    if in_ci():
        pytest.fail(f"CI is set but {problem}", pytrace=False)
    pytest.skip(problem)


def cmake_options() -> list[str] | None:
    """CMake options that find ONNX Runtime for C++, or None when there is none here."""
    root = os.environ.get("ONNXRUNTIME_ROOT")
    if root:
        return [f"-DONNXRUNTIME_ROOT={root}"]
    for include in SYSTEM_INCLUDES:
        if any((include / sub / "onnxruntime_cxx_api.h").is_file() for sub in ("", "onnxruntime")):
            return []
    return None


@pytest.fixture(scope="module")
def cpp_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The built ``examples/cpp`` program; skips without CMake, a compiler or ONNX Runtime."""
    cmake = shutil.which("cmake")
    compiler = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    options = cmake_options()
    if cmake is None or not compiler:
        pytest.skip("the C++ example needs cmake and a C++ compiler")
    if options is None:
        pytest.skip(
            "no ONNX Runtime for C++ here: set ONNXRUNTIME_ROOT to an unpacked release "
            "(include/ + lib/) to build and test examples/cpp"
        )
    build = tmp_path_factory.mktemp("cpp-build")
    for step in (
        [cmake, "-S", str(CPP_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *options],
        [cmake, "--build", str(build)],
    ):
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}"
    executable = next(p for p in (build / "project", build / "project.exe") if p.is_file())
    return [str(executable)]


@pytest.fixture(scope="module", params=["node", "cpp"])
def runner(request: pytest.FixtureRequest) -> list[str]:
    """The command that runs a projector graph: the Node or the C++ example."""
    command: list[str] = request.getfixturevalue(f"{request.param}_command")
    return command


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """digit_7.png preprocessed for digitnet, and the same array as a raw float32 file."""
    loaded = load_model(DIGITNET)
    array = load_input(DIGIT_7, loaded, preprocessing_from_metadata(loaded)).array
    assert array.shape == (1, 1, 28, 28) and array.dtype == np.float32
    path = tmp_path_factory.mktemp("input") / "digit_7.f32"
    array.astype("<f4").tofile(path)
    return array, path


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Exporter:
    """``export(*options, layer=...)``: the digitnet projector graph, exported once per call."""
    directory = tmp_path_factory.mktemp("graphs")
    done_before: dict[tuple[str, ...], Path] = {}

    def exporter(*options: str, layer: str = LAYER) -> Path:
        options = ("--layer", layer, *options)
        if options not in done_before:
            out = directory / f"projector{len(done_before)}.onnx"
            args = [sys.executable, "-m", "onnxdeconv", "export", str(DIGITNET)]
            done = subprocess.run(
                [*args, *options, "-o", str(out)], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stderr
            done_before[options] = out
        return done_before[options]

    return exporter


def run_example(command: list[str], *args: str | Path) -> dict[str, list[Any]]:
    done = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, f"{command[-1]} failed ({done.returncode}):\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result: dict[str, list[Any]] = json.loads(lines[0])
    return result


def strongest_channels(projector: Projector, array: np.ndarray, count: int) -> list[int]:
    """The ``count`` channels with the highest maximum, so the projections are not all zero."""
    peaks = projector.forward(array).activations[0].reshape(projector.layer_shape[0], -1).max(1)
    return [int(c) for c in np.argsort(-peaks, kind="stable")[:count]]


def check(
    runner: list[str],
    graph: Path,
    image: tuple[np.ndarray, Path],
    rule: Rule,
    channels: list[int],
    positions: list[tuple[int, int]] | None = None,
    layer: str = LAYER,
) -> None:
    array, raw = image
    projector = Projector(DIGITNET, layer=layer, rule=rule, device="cpu")
    forward = projector.forward(array)
    picks = [
        projector.strongest(
            forward, channel=c, position=None if positions is None else positions[i]
        )[0]
        for i, c in enumerate(channels)
    ]
    expected = projector.project(forward, picks)

    out = raw.parent / f"{Path(runner[-1]).stem}-{graph.stem}.projection.f32"
    extra = [] if positions is None else ["--position", ";".join(f"{h},{w}" for h, w in positions)]
    result = run_example(runner, graph, raw, ",".join(map(str, channels)), out, *extra)

    assert result["projection_shape"] == [len(channels), 1, 28, 28]
    assert result["position"] == [list(p.position or ()) for p in picks]
    np.testing.assert_allclose(result["activation"], [p.value for p in picks], rtol=1e-6, atol=1e-7)
    got = np.fromfile(out, dtype="<f4").reshape(expected.shape)
    peak = float(np.abs(expected).max())
    assert peak > 0, "the projection is all zeros: choose channels that fire"
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * peak)


def test_single_channel_matches_python(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer=LAYER, device="cpu")
    (channel,) = strongest_channels(projector, image[0], 1)
    check(runner, export(), image, "deconvnet", [channel])


def test_batch_of_two_channels_matches_python(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer=LAYER, device="cpu")
    channels = strongest_channels(projector, image[0], 3)[1:]
    check(runner, export("--batch"), image, "deconvnet", channels)


def test_unbatched_graph_runs_once_per_channel(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer=LAYER, device="cpu")
    channels = strongest_channels(projector, image[0], 2)
    check(runner, export(), image, "deconvnet", channels)


def test_guided_rule_matches_python(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer=LAYER, device="cpu")
    (channel,) = strongest_channels(projector, image[0], 1)
    check(runner, export("--rule", "guided"), image, "guided", [channel])


def test_position_input_matches_python(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer=LAYER, device="cpu")
    channels = strongest_channels(projector, image[0], 2)
    # Each channel's second-strongest position, so the position is really taken as given.
    activations = projector.forward(image[0]).activations[0]
    positions = []
    for c in channels:
        second = int(np.argsort(-activations[c].ravel(), kind="stable")[1])
        h, w = np.unravel_index(second, activations[c].shape)
        assert activations[c, h, w] > 0
        positions.append((int(h), int(w)))
    graph = export("--batch", "--position-input")
    check(runner, graph, image, "deconvnet", channels, positions)


def test_fully_connected_layer_has_empty_positions(
    runner: list[str], export: Exporter, image: tuple[np.ndarray, Path]
) -> None:
    projector = Projector(DIGITNET, layer="relu4", device="cpu")
    channels = strongest_channels(projector, image[0], 2)
    check(runner, export("--batch", layer="relu4"), image, "deconvnet", channels, layer="relu4")


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("short-input", 2, "bytes; "),
        ("channel-out-of-range", 1, "is every channel in range"),
        ("missing-position", 2, "exported with --position-input"),
    ],
)
def test_errors_are_one_line_with_status(
    runner: list[str],
    export: Exporter,
    image: tuple[np.ndarray, Path],
    tmp_path: Path,
    case: str,
    status: int,
    message: str,
) -> None:
    raw = image[1]
    graph, channel = export(), "0"
    if case == "short-input":
        raw = tmp_path / "short.f32"
        raw.write_bytes(image[1].read_bytes()[:-4])
    elif case == "channel-out-of-range":
        channel = "9999"
    else:
        graph = export("--batch", "--position-input")
    done = subprocess.run(
        [*runner, str(graph), str(raw), channel],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
