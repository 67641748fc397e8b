"""The Ray engine gives what the local engine gives: same state, pages and JSON, through faults.

Selected with ``-m ray``; they need ``onnxdeconv[ray]`` (skipped without it). One local Ray
instance (2 CPUs) serves the module; the last test starts a two-node cluster on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from conftest import ROOT
from helpers import conv_relu_pool_model, run

from onnxdeconv.analysis.features import FeaturesState
from onnxdeconv.engines import dataset_images, features, mine_features
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import PRESETS
from onnxdeconv.prepared import prepare

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from onnxdeconv.engines import ray as ray_engine  # noqa: E402
from onnxdeconv.engines.ray import RayEngine  # noqa: E402

#: Ray's memory monitor: other processes on a shared machine can push memory past its threshold,
#: which would kill our workers at random (the kill test kills one on purpose instead).
MEMORY_MONITOR = "RAY_memory_monitor_refresh_ms"
LAYERS = ["--layers", "relu,pool", "--channels", "all", "--per-channel", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model built here and 14 images: 12 of noise in two folders, 2 unreadable."""
    folder = tmp_path_factory.mktemp("ray")
    model = folder / "small.onnx"
    onnx.save(conv_relu_pool_model(channels=3, size=16), model)
    images = folder / "images"
    rng = np.random.default_rng(7)
    for index in range(12):
        sub = images / ("a" if index % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        picture = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
        cv2.imwrite(str(sub / f"noise_{index:02d}.png"), picture)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "a" / "empty.jpg").write_bytes(b"")
    return model, images


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray instance with 2 CPUs for the module, shut down after."""
    os.environ[MEMORY_MONITOR] = "0"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop(MEMORY_MONITOR, None)


def assert_same_state(a: FeaturesState, b: FeaturesState) -> None:
    assert a.images == b.images and a.skipped == b.skipped and a.meta == b.meta
    np.testing.assert_array_equal(a.seen, b.seen)
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        for field in ("channels", "images", "positions"):
            np.testing.assert_array_equal(
                getattr(a.layers[name], field), getattr(b.layers[name], field)
            )
        np.testing.assert_allclose(a.layers[name].values, b.layers[name].values, rtol=1e-5)


def assert_same_layer_json(a: Path, b: Path) -> None:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    for report in (left, right):
        for channel in report["channels"]:
            for entry in channel["entries"]:
                entry["value"] = round(entry["value"], 5)
    assert left == right


def test_the_local_engine_and_help_do_not_import_ray() -> None:
    code = (
        "import sys\n"
        "import onnxdeconv.engines.local, onnxdeconv.engines\n"
        "from onnxdeconv.cli.main import main\n"
        "for args in (['--help'], ['features', '--help']):\n"
        "    sys.argv = ['onnxdeconv', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('RAY' if 'ray' in sys.modules else 'NO RAY')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().endswith("NO RAY"), out.stdout[-300:]


def test_a_folder_a_list_and_a_uri_name_the_same_images(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    model, images = data
    names, root = dataset_images(images)
    assert len(names) == 14 and root == images and names == sorted(names)
    listing = tmp_path / "list.txt"
    listing.write_text("# the images\n" + "\n".join(str(images / n) for n in names) + "\n\n")
    listed, _ = dataset_images(listing)
    assert listed == [str(images / n) for n in names]
    uri = images.as_uri()  # file://...: read through pyarrow's filesystems, as s3:// would be
    from_uri, uri_root = dataset_images(uri)
    assert from_uri == names and uri_root == uri
    # Decoding by URI gives the arrays (and the skips) decoding by path gives.
    prepared = prepare(load_model(model))
    loaded = prepared.loaded
    spec = ray_engine.InputSpec(
        loaded.input_name, list(loaded.input_shape), loaded.input_dtype, dict(loaded.metadata)
    )
    decoded = {}
    for where in (root, uri_root):
        batch = {"id": np.arange(4), "path": [ray_engine.join(where, n) for n in names[:4]]}
        preprocessing = PRESETS["imagenet"]
        decoded[where] = ray_engine.decode_images(batch, spec, preprocessing, (16, 16), (3, 16, 16))
    by_path, by_uri = decoded[root], decoded[uri_root]
    np.testing.assert_array_equal(by_path["array"], by_uri["array"])
    assert [bool(e) for e in by_path["error"]] == [bool(e) for e in by_uri["error"]]
    assert [bool(e) for e in by_path["error"]] == [n.endswith("empty.jpg") for n in names[:4]]


def test_an_unreachable_cluster_is_one_line_and_exit_2(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, images = data
    start = time.monotonic()
    args = ["features", model, images, *LAYERS, "--engine", "ray", "--address", "1.2.3.4:1"]
    code, _, err = run([*args, "-o", tmp_path / "out"], capsys)
    assert code == 2, err
    assert time.monotonic() - start < 30
    [line] = [line for line in err.splitlines() if line.startswith("error")]
    assert "1.2.3.4:1" in line and "--address" in line and "Traceback" not in err


def test_cli_ray_equals_local_with_corrupt_images(
    data: tuple[Path, Path], local_ray: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, images = data
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--workers", "2"] if engine == "ray" else []
        args = ["features", model, images, *LAYERS, "--batch-size", "4", "--per-page", "2"]
        code, stdout, err = run([*args, "--engine", engine, *extra, "-o", out], capsys)
        assert code == 0, err
        assert len([line for line in err.splitlines() if "skipped: " in line]) == 2
        outputs[engine] = (out, sorted(Path(p).name for p in stdout.split()))
    assert "object store peak" in err and "2 workers" in err
    (local_out, local_files), (ray_out, ray_files) = outputs["local"], outputs["ray"]
    assert local_files == ray_files
    assert {"relu1_page1.png", "relu1_page2.png", "relu1.json", "maxpool1.json"} <= set(local_files)
    for name in local_files:
        if name.endswith(".json"):
            assert_same_layer_json(local_out / name, ray_out / name)
            report = json.loads((ray_out / name).read_text())
            skipped = sorted(s["image"] for s in report["skipped_images"])
            assert skipped == ["a/empty.jpg", "broken.png"] and report["counted"] == 12
        elif name.endswith(".png"):
            left, right = cv2.imread(str(local_out / name)), cv2.imread(str(ray_out / name))
            assert left is not None and right is not None
            np.testing.assert_array_equal(left, right)
    states = [FeaturesState.load(out / "features_state.npz") for out in (local_out, ray_out)]
    assert all(layer.positions.min() >= 0 for layer in states[1].layers.values())
    assert_same_state(*states)


class DiesOnce(ray_engine.BatchTopK):
    """A mining actor whose process exits once, at its first batch, when no marker exists."""

    marker = ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


class AlwaysDies(ray_engine.BatchTopK):
    """A mining actor whose process exits at every batch, as one killed for memory would."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        os._exit(1)


class Killed(BaseException):
    pass


def test_a_batch_that_always_kills_its_worker_is_one_error(
    data: tuple[Path, Path], local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray Data alone would restart the actor and retry the batch forever: the run would hang.
    model, images = data
    names, root = dataset_images(images)
    prepared = prepare(load_model(model))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ray_engine, "BatchTopK", AlwaysDies)
    start = time.perf_counter()
    with pytest.raises(OnnxDeconvError, match=r"died 4 times on the same batch.*smaller") as error:
        features(
            prepared,
            names,
            root=root,
            layers=["relu"],
            per_channel=3,
            batch_size=4,
            device="cpu",
            engine="ray",
            workers=1,
        )
    assert time.perf_counter() - start < 120
    assert error.value.parameter == "batch_size"  # the CLI names --batch-size


def test_a_killed_worker_is_retried_and_a_dead_driver_resumes(
    data: tuple[Path, Path], local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, images = data
    names, root = dataset_images(images)
    prepared = prepare(load_model(model))
    common: dict[str, Any] = {
        "root": root,
        "layers": ["relu", "pool"],
        "per_channel": 3,
        "batch_size": 4,
        "device": "cpu",
    }
    expected = mine_features(prepared, names, **common).state

    # A worker process dies in the middle of the run: Ray restarts it and retries its batch.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(DiesOnce, "marker", str(tmp_path / "died"))
    monkeypatch.setattr(ray_engine, "BatchTopK", DiesOnce)
    retried = features(prepared, names, engine="ray", workers=2, **common)
    assert (tmp_path / "died").is_file()
    assert_same_state(expected, retried.state)
    monkeypatch.undo()

    # The driver dies after its first checkpoint (4 images); a new one resumes from it.
    checkpoint = tmp_path / "state.npz"

    def dies(done: int) -> None:
        if done >= 8:
            raise Killed

    engine = RayEngine(workers=1)
    with pytest.raises(Killed):
        mine_features(
            prepared,
            names,
            engine=engine,
            checkpoint=checkpoint,
            checkpoint_every=1,
            progress=dies,
            **common,
        )
    saved = FeaturesState.load(checkpoint)
    before = saved.processed
    assert 0 < before < len(names)
    again: list[int] = []
    resumed = mine_features(
        prepared,
        names,
        engine=engine,
        state=saved,
        checkpoint=checkpoint,
        progress=again.append,
        **common,
    )
    assert again[-1] == len(names) - before
    assert_same_state(expected, resumed.state)
    assert_same_state(expected, FeaturesState.load(checkpoint))


def test_evolution_traces_checkpoints_on_ray_workers_alike(local_ray: Any, tmp_path: Path) -> None:
    from onnxdeconv.analysis.evolution import load_checkpoints, trace_evolution

    paths = []
    for seed in range(3):  # three "checkpoints" of one architecture
        paths.append(tmp_path / f"step_{seed}.onnx")
        onnx.save(conv_relu_pool_model(channels=3, size=16, seed=seed), paths[-1])
    checkpoints, _ = load_checkpoints(paths)
    images = np.random.default_rng(3).normal(size=(5, 3, 16, 16)).astype(np.float32)
    common: dict[str, Any] = {"layers": ["relu"], "count": 2, "device": "cpu"}
    local = trace_evolution(checkpoints, images, **common)
    done: list[int] = []
    remote = trace_evolution(
        checkpoints, images, mapper=RayEngine(workers=2).map, progress=done.append, **common
    )
    assert done == [1, 2]
    assert remote.channels == local.channels and remote.labels == local.labels
    for ours, theirs in zip(remote.traces, local.traces, strict=True):
        for name, trace in theirs.items():
            assert ours[name].channels == trace.channels and ours[name].boxes == trace.boxes
            assert ours[name].picks == trace.picks
            np.testing.assert_allclose(ours[name].crops, trace.crops, rtol=1e-5, atol=1e-7)
    for name, stability in local.stability.items():
        assert remote.stability[name].converged_at == stability.converged_at
        np.testing.assert_allclose(remote.stability[name].similarity, stability.similarity, 1e-5)


def test_report_projects_its_layers_on_ray_workers_alike(
    data: tuple[Path, Path], local_ray: Any
) -> None:
    from onnxdeconv.analysis.report import build_report

    model, _ = data
    prepared = prepare(load_model(model))
    images = np.random.default_rng(5).normal(size=(3, 3, 16, 16)).astype(np.float32)
    common: dict[str, Any] = {"layers": ["relu", "pool"], "top": 2, "show": 2, "device": "cpu"}
    names = ["a", "b", "c"]
    local = build_report(prepared, images, names, **common)
    remote = build_report(prepared, images, names, mapper=RayEngine(workers=2).map, **common)
    assert len(local.projections) == len(remote.projections) == 2
    assert local.notes == remote.notes
    for ours, theirs in zip(remote.projections, local.projections, strict=True):
        assert ours.layer == theirs.layer and ours.selections == theirs.selections
        assert ours.crops == theirs.crops
        np.testing.assert_allclose(ours.projections, theirs.projections, rtol=1e-5, atol=1e-7)


def test_a_two_node_cluster_gives_the_local_result(data: tuple[Path, Path]) -> None:
    from ray.cluster_utils import Cluster

    model, images = data
    names, root = dataset_images(images)
    prepared = prepare(load_model(model))
    common: dict[str, Any] = {"root": root, "layers": ["relu"], "per_channel": 2, "device": "cpu"}
    expected = mine_features(prepared, names, batch_size=3, **common)
    expected_tiles = expected.project()
    if ray.is_initialized():
        ray.shutdown()
    os.environ[MEMORY_MONITOR] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # Two actors of one CPU each: one on each node.
        engine = RayEngine(address=cluster.address, workers=2)
        result = mine_features(prepared, names, batch_size=3, engine=engine, **common)
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
        tiles = result.project()
        assert_same_state(expected.state, result.state)
        [layer] = tiles
        assert sorted(tiles[layer]) == sorted(expected_tiles[layer])
        for key, tile in tiles[layer].items():
            np.testing.assert_allclose(
                tile.projection, expected_tiles[layer][key].projection, rtol=1e-5, atol=1e-6
            )
            np.testing.assert_array_equal(tile.patch, expected_tiles[layer][key].patch)
        assert result.to_json()["engine"]["workers"] == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop(MEMORY_MONITOR, None)
