"""The on-disk graph cache: hits run the same graphs, bad entries are rebuilt, keys see changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import conv_relu_pool_model, save_with_external_data

from onnxdeconv import cache
from onnxdeconv import projector as projector_module
from onnxdeconv.projector import Projector, model_spec
from onnxdeconv.runtime.sessions import PROBE_GRAPH

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ONNXDECONV_CACHE_DIR", str(folder))
    monkeypatch.delenv("ONNXDECONV_NO_CACHE", raising=False)
    return folder


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "small.onnx"
    onnx.save(conv_relu_pool_model(), path)
    return path


def entries(folder: Path) -> list[Path]:
    root = folder / "entries"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def projections(
    projector: Projector, position: str | None = None, top: int = 3
) -> tuple[np.ndarray, list[tuple[int, tuple[int, ...] | None]]]:
    x = np.random.default_rng(1).normal(size=(2, *projector.input_shape)).astype(np.float32)
    forward = projector.forward(x)
    picks = projector.strongest(forward, top=top, position=position, image=1)
    return projector.project(forward, picks), [(p.channel, p.position) for p in picks]


@pytest.mark.parametrize(("layer", "position"), [("relu", None), ("relu", "all"), ("pool", None)])
def test_a_hit_projects_what_the_build_projects(
    cache_dir: Path, model_path: Path, layer: str, position: str | None
) -> None:
    built = Projector(model_path, layer=layer)
    assert built._entry is None
    assert len(entries(cache_dir)) == 1
    hit = Projector(model_path, layer=layer)
    assert hit._entry is not None
    assert (hit.layer, hit.layer_shape, hit.input_shape) == (
        built.layer,
        built.layer_shape,
        built.input_shape,
    )
    ours, picks = projections(hit, position)
    theirs, their_picks = projections(built, position)
    assert picks == their_picks
    np.testing.assert_array_equal(ours, theirs)
    # Uncached, from the model itself: the same numbers.
    fresh, _ = projections(Projector(model_path, layer=layer, use_cache=False), position)
    np.testing.assert_array_equal(ours, fresh)


def test_each_graph_is_measured_once_for_the_memory_budget(
    cache_dir: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[str] = []
    real = projector_module.bytes_per_row

    def counted(model: onnx.ModelProto) -> int:
        measured.append(model.graph.name)
        return real(model)

    monkeypatch.setattr(projector_module, "bytes_per_row", counted)
    built = Projector(model_path, layer="relu")  # stores both graphs' row sizes with the entry
    assert len(measured) == 2
    projections(built, top=3)  # the windowed graph's runs
    projections(built, position="all", top=3)  # the dense graph's runs
    assert len(measured) == 2
    projections(Projector(model_path, layer="relu"), top=3)  # a hit reads them from the entry
    assert len(measured) == 2


def test_a_hit_loads_the_model_only_when_asked(cache_dir: Path, model_path: Path) -> None:
    Projector(model_path, layer="relu")
    hit = Projector(model_path, layer="relu")
    assert hit._prepared is None
    assert hit.prepared.resolve("relu") == "relu"
    assert hit.plan.target == "relu"
    assert hit.runner.model.graph.output[0].name == "relu"


@pytest.mark.parametrize("damage", ["truncate", "manifest", "graph"])
def test_a_damaged_entry_is_rebuilt(cache_dir: Path, model_path: Path, damage: str) -> None:
    expected, _ = projections(Projector(model_path, layer="relu"))
    (entry,) = entries(cache_dir)
    if damage == "truncate":
        data = (entry / "forward.onnx").read_bytes()
        (entry / "forward.onnx").write_bytes(data[: len(data) // 2])
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{not json")
    else:  # the right size, but not a graph
        size = (entry / "forward.onnx").stat().st_size
        (entry / "forward.onnx").write_bytes(b"\x00" * size)
    rebuilt = Projector(model_path, layer="relu")
    assert rebuilt._entry is None
    got, _ = projections(rebuilt)
    np.testing.assert_array_equal(got, expected)
    assert Projector(model_path, layer="relu")._entry is not None


def test_a_damaged_deconv_graph_is_rebuilt_when_first_run(
    cache_dir: Path, model_path: Path
) -> None:
    expected, _ = projections(Projector(model_path, layer="relu"))
    (entry,) = entries(cache_dir)
    assert (entry / "windowed.onnx").is_file()
    size = (entry / "windowed.onnx").stat().st_size
    (entry / "windowed.onnx").write_bytes(b"\x00" * size)
    hit = Projector(model_path, layer="relu")
    assert hit._entry is not None  # the forward graph reads back; the deconv one opens later
    got, _ = projections(hit)
    np.testing.assert_array_equal(got, expected)
    assert hit._entry is None
    assert entries(cache_dir) == []


def test_the_key_changes_with_layer_rule_shape_and_model(
    cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    Projector(model_path, layer="relu")
    Projector(model_path, layer="relu")
    assert len(entries(cache_dir)) == 1
    Projector(model_path, layer="pool")
    assert len(entries(cache_dir)) == 2
    Projector(model_path, layer="relu", rule="guided")
    assert len(entries(cache_dir)) == 3
    Projector(model_path, layer="relu", keep_outputs=True)
    assert len(entries(cache_dir)) == 4

    # Fully convolutional (up to the pool), with a dynamic size.
    dynamic = tmp_path / "dynamic.onnx"
    model = conv_relu_pool_model()
    del model.graph.node[-2:]
    del model.graph.initializer[-1]
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = "S"
    model.graph.output[0].CopyFrom(
        onnx.helper.make_tensor_value_info("pool", onnx.TensorProto.FLOAT, ["N", 4, "H", "W"])
    )
    onnx.save(model, dynamic)
    before = len(entries(cache_dir))
    small = Projector(dynamic, layer="relu", input_shape=(3, 16, 16))
    large = Projector(dynamic, layer="relu", input_shape=(3, 24, 24))
    assert (small.input_shape, large.input_shape) == ((3, 16, 16), (3, 24, 24))
    assert len(entries(cache_dir)) == before + 2

    # Other weights in the same file: another key, and the new weights' projections.
    onnx.save(conv_relu_pool_model(seed=5), model_path)
    changed = Projector(model_path, layer="relu")
    assert changed._entry is None
    ours, _ = projections(changed)
    theirs, _ = projections(Projector(conv_relu_pool_model(seed=5), layer="relu"))
    np.testing.assert_array_equal(ours, theirs)


def test_the_file_digest_is_the_content(cache_dir: Path, model_path: Path) -> None:
    store = cache.GraphCache()
    digest = store.file_digest(model_path)
    os.utime(model_path, ns=(1, 1))  # same bytes, another time: read again, same hash
    assert store.file_digest(model_path) == digest
    model_path.write_bytes(model_path.read_bytes() + b"\x00")
    assert store.file_digest(model_path) != digest


def test_disabled_by_env_or_option(
    cache_dir: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Projector(model_path, layer="relu", use_cache=False)
    assert entries(cache_dir) == []
    monkeypatch.setenv("ONNXDECONV_NO_CACHE", "1")
    Projector(model_path, layer="relu")
    model_spec(model_path)
    assert entries(cache_dir) == []
    assert not cache_dir.exists() or not any((cache_dir / "entries").glob("*"))


def test_eviction_removes_the_least_recently_used(cache_dir: Path) -> None:
    store = cache.GraphCache()
    for index, name in enumerate(("old", "used", "new")):
        store.put(name, {}, {"data.bin": b"x" * 1000})
        os.utime(cache_dir / "entries" / name / cache.MANIFEST, (index + 1, index + 1))
    assert store.get("old") is not None  # reading it makes it the most recently used
    store.evict(max_bytes=2500)
    assert [p.name for p in entries(cache_dir)] == ["new", "old"]


def test_model_spec_comes_back_from_the_cache(cache_dir: Path, model_path: Path) -> None:
    first = model_spec(model_path)
    assert first.loaded is not None
    second = model_spec(model_path)
    assert second.loaded is None
    assert (second.input_name, second.input_shape, second.input_dtype, second.metadata) == (
        first.input_name,
        first.input_shape,
        first.input_dtype,
        first.metadata,
    )


def test_the_cuda_probe_is_the_graph_onnx_writes() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 7
    assert model.SerializeToString() == PROBE_GRAPH


def _python(code: str, cache_dir: Path) -> str:
    env = {**os.environ, "ONNXDECONV_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_projector_does_not_import_onnx(cache_dir: Path) -> None:
    code = (
        "import sys, onnxdeconv.projector; print(sorted({'onnx', 'ml_dtypes'} & set(sys.modules)))"
    )
    assert _python(code, cache_dir) == "[]"


def test_a_cached_project_does_not_import_onnx(
    cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = [tmp_path / f"out{i}.npy" for i in range(2)]
    code = (
        "import sys; from onnxdeconv.cli.main import main; sys.argv = ['onnxdeconv', 'project', "
        f"{str(model_path)!r}, {str(tmp_path / 'x.npy')!r}, '--layer', 'relu', '--top', '2', "
        "'-o', OUT]\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(json.dumps(sorted({'onnx', 'ml_dtypes'} & set(sys.modules))))"
    )
    runs = [
        json.loads(_python(f"import json; OUT = {str(out)!r}\n{code}", cache_dir))
        for out in outputs
    ]
    assert runs == [["ml_dtypes", "onnx"], []]
    np.testing.assert_array_equal(np.load(outputs[0]), np.load(outputs[1]))


@pytest.mark.parametrize("offset", [0, cache._CHUNK - 5, cache._CHUNK + 3])
def test_external_data_is_seen_anywhere_in_the_file(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "m.onnx"
    data = bytearray(2 * cache._CHUNK + 100)
    data[offset : offset + len(cache._EXTERNAL_MARK)] = cache._EXTERNAL_MARK
    path.write_bytes(bytes(data))
    assert cache._stream_digest(path)[1]
    path.write_bytes(bytes(len(data)))
    assert not cache._stream_digest(path)[1]


def test_a_model_with_external_data_is_keyed_by_its_data_files(
    cache_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "external"
    folder.mkdir()
    path = folder / "model.onnx"
    save_with_external_data(conv_relu_pool_model(), path, "weights.bin")
    store = cache.GraphCache()
    digest = store.file_digest(path)
    expected, _ = projections(Projector(path, layer="relu"))
    save_with_external_data(conv_relu_pool_model(seed=3), folder / "other.onnx", "other.bin")
    (folder / "other.onnx").unlink()
    assert store.file_digest(path) != digest  # another file beside it: another key
    # New weights in the data file, the .onnx file unchanged: not the old graphs.
    save_with_external_data(conv_relu_pool_model(seed=4), tmp_path / "new.onnx", "weights.bin")
    (folder / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes())
    changed = Projector(path, layer="relu")
    assert changed._entry is None
    got, _ = projections(changed)
    assert not np.array_equal(got, expected)
