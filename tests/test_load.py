from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import conv_relu_pool_model, run, save_with_external_data
from onnx import TensorProto, external_data_helper, helper

from onnxdeconv import ModelLoadError, Projector, load_model, prepare
from onnxdeconv.export import ExportOptions, export_projector
from onnxdeconv.graph import passes
from onnxdeconv.graph.passes import instrument


def test_ir3_fp16_opset7_squeezenet_is_normalised(squeezenet_path: Path) -> None:
    raw = onnx.load(str(squeezenet_path))
    assert raw.ir_version == 3
    assert len(raw.graph.input) > 1  # weights listed as inputs
    loaded = load_model(squeezenet_path)
    assert loaded.opset >= 8
    assert [i.name for i in loaded.model.graph.input] == ["data_0"]
    assert loaded.input_dtype == np.float16
    assert loaded.input_shape == [1, 3, 224, 224]


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not protobuf" * 10)
    with pytest.raises(ModelLoadError, match=r"not a readable ONNX model|no graph nodes"):
        load_model(garbage)
    with pytest.raises(ModelLoadError, match="folder"):
        load_model(tmp_path)


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    model = conv_relu_pool_model()
    save_with_external_data(model, tmp_path / "m.onnx", "weights.bin")
    loaded = load_model(tmp_path / "m.onnx")
    assert {t.name for t in loaded.model.graph.initializer} == {"w", "b", "fc"}
    assert loaded.constants()["w"].shape == (4, 3, 3, 3)


def test_external_data_outside_folder_is_refused(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    model = conv_relu_pool_model()
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    onnx.save(model, str(tmp_path / "m.onnx"))  # writes tmp_path/weights.bin
    proto = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(proto, str(inner / "escape.onnx"))
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(inner / "escape.onnx")


def test_missing_external_file(tmp_path: Path) -> None:
    model = conv_relu_pool_model()
    save_with_external_data(model, tmp_path / "m.onnx", "weights.bin")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(tmp_path / "m.onnx")


def test_two_inputs_and_a_bool_input_are_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 4, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 4, 4]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    with pytest.raises(ModelLoadError, match="exactly one image input"):
        load_model(helper.make_model(graph))
    # uint8 pixels are an image input (cast inside the graph); a bool input is not.
    graph = helper.make_graph(
        [helper.make_node("Cast", ["a"], ["c"], to=TensorProto.FLOAT)],
        "int",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    assert load_model(helper.make_model(graph)).input_dtype == np.uint8
    graph.input[0].type.tensor_type.elem_type = TensorProto.BOOL
    with pytest.raises(ModelLoadError, match="float or integer"):
        load_model(helper.make_model(graph))


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_instrumented_forward_keeps_original_outputs(rule: str, squeezenet_path: Path) -> None:
    loaded = load_model(squeezenet_path)
    prepared = prepare(loaded)
    plan = prepared.plan(prepared.resolve("relu18"), rule)  # type: ignore[arg-type]
    instrumented, switches = instrument(
        loaded.model, [plan.target, *plan.forward_inputs], plan.switches, prepared.info, batch=1
    )
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 3, 224, 224)) * 50).astype(np.float16)

    def run(model: onnx.ModelProto) -> list[np.ndarray]:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {"data_0": x})

    original, after = run(loaded.model), run(instrumented)
    assert len(after) > len(original)
    outputs = [o.name for o in instrumented.graph.output]
    assert outputs[: len(original)] == [o.name for o in loaded.model.graph.output]
    # Exposing tensors of a float16 model moves where ONNX Runtime's CPU casts to float32.
    for before, now in zip(original, after, strict=False):
        np.testing.assert_allclose(now, before, rtol=0, atol=4 * np.finfo(np.float16).eps)
    assert sorted(switches) == ["pool1_1", "pool3_1", "pool5_1"]  # the pools below fire7
    assert all(name in outputs for name in switches.values())
    onnx.checker.check_model(instrumented, full_check=True)
    # The projector's forward graph is pruned to the layer; its activations are the same.
    projector = Projector(prepared, layer="relu18", rule=rule)  # type: ignore[arg-type]
    expected = dict(zip(outputs, after, strict=True))[plan.target]
    np.testing.assert_array_equal(projector.forward(x).activations, expected)
    assert not {o.name for o in loaded.model.graph.output} & {
        o.name for o in projector.runner.model.graph.output
    }


def test_external_weights_stay_in_their_file_and_project_alike(tmp_path: Path) -> None:
    inline = conv_relu_pool_model()
    path = tmp_path / "m.onnx"
    save_with_external_data(conv_relu_pool_model(), path, "weights.bin")
    loaded = load_model(path)
    # The weights are detached ones that name the data file, their values map the file; small
    # tensors (the bias: shapes and axes are such) are read, for shape inference.
    detached = {t.name for t in loaded.model.graph.initializer if passes.is_detached(t)}
    assert detached == {"w", "fc"}
    weight = loaded.constants()["w"]
    assert isinstance(weight, np.memmap)
    expected = onnx.numpy_helper.to_array(inline.graph.initializer[0])
    np.testing.assert_array_equal(weight, expected)
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    ours, theirs = (
        Projector(source, layer="relu", device="cpu", use_cache=False) for source in (path, inline)
    )
    np.testing.assert_array_equal(
        ours.project(ours.forward(x), ours.strongest(ours.forward(x), top=3)),
        theirs.project(theirs.forward(x), theirs.strongest(theirs.forward(x), top=3)),
    )
    # What leaves the process carries its weights: an exported projector, and a pickled model.
    exported = export_projector(prepare(loaded), ExportOptions(layer="relu"))
    assert not any(passes.is_detached(t) for t in exported.graph.initializer)
    onnx.checker.check_model(exported, full_check=True)
    constants = pickle.loads(pickle.dumps(prepare(loaded).constants))
    (path.parent / "weights.bin").unlink()  # the unpickled copy does not need the file
    np.testing.assert_array_equal(constants["w"], expected)


UNUSED_ROWS = 1_000_000  # a 1 GB classifier weight that no conv layer depends on


def test_weights_off_the_path_are_not_read(tmp_path: Path) -> None:
    """A 1 GB external weight after the layer (a sparse file) is never read by ``project``."""
    path = tmp_path / "m.onnx"
    save_with_external_data(conv_relu_pool_model(), path, "weights.bin")
    proto = onnx.load(str(path), load_external_data=False)
    fc = next(t for t in proto.graph.initializer if t.name == "fc")
    size = (tmp_path / "weights.bin").stat().st_size
    fc.dims[0] = UNUSED_ROWS
    for entry in fc.external_data:
        if entry.key == "offset":
            entry.value = str(size)
        if entry.key == "length":
            entry.value = str(UNUSED_ROWS * fc.dims[1] * 4)
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = UNUSED_ROWS
    onnx.save(proto, str(path))
    with (tmp_path / "weights.bin").open("r+b") as data:  # sparse: no disk, no page read
        data.truncate(size + UNUSED_ROWS * fc.dims[1] * 4)
    # VmHWM, not ru_maxrss: that one keeps the peak of the forked test process across exec.
    code = (
        "import numpy as np; from onnxdeconv import Projector; "
        f"p = Projector({str(path)!r}, layer='relu', device='cpu', use_cache=False); "
        "x = np.ones((1, 3, 16, 16), np.float32); f = p.forward(x); "
        "p.project(f, p.strongest(f, top=2)); "
        "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 700, f"peak RSS {peak_mb} MB: the unused 1 GB weight was read"


@pytest.mark.parametrize(
    "command",
    [
        ["layers"],
        ["project", "{image}", "--layer", "relu", "--top", "2", "-o", "{out}.npy"],
        ["check", "--json", "{out}.json"],
        ["filters", "--json", "{out}.json", "-o", "{out}.png"],
        ["export", "--layer", "relu", "-o", "{out}.onnx"],
        ["sanity", "{image}", "--layer", "relu", "-o", "{out}.png"],
    ],
)
def test_commands_give_the_same_on_a_model_with_external_data(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inline, external = tmp_path / "inline" / "m.onnx", tmp_path / "external" / "m.onnx"
    inline.parent.mkdir()
    external.parent.mkdir()
    onnx.save(conv_relu_pool_model(), str(inline))
    save_with_external_data(conv_relu_pool_model(), external, "weights.bin")
    image = tmp_path / "x.npy"
    np.save(image, np.random.default_rng(1).random((1, 3, 16, 16)).astype(np.float32))
    results = []
    for name, model in (("inline", inline), ("external", external)):
        out = tmp_path / f"out_{name}"
        args = [command[0], model, *(a.format(image=image, out=out) for a in command[1:])]
        code, stdout, err = run(args, capsys)
        assert code in (0, 1), err  # check's findings are exit 1 on both
        results.append((code, stdout.replace(str(model), "MODEL").replace(str(out), "OUT")))
        written = sorted(tmp_path.glob(f"out_{name}.*"))
        if command[0] == "project":
            results.append(np.load(out.with_suffix(".npy")).tobytes())
        elif command[0] == "export":
            exported = onnx.load(str(out.with_suffix(".onnx")))
            onnx.checker.check_model(exported, full_check=True)
            results.append(sorted(t.name for t in exported.graph.initializer))
        else:
            results.append(len(written))
    assert results[: len(results) // 2] == results[len(results) // 2 :]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_a_thousand_stored_weights_hold_one_file_open(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    values = np.arange(1000 * 65, dtype=np.float32)
    data.write_bytes(values.tobytes())
    before = len(list(Path("/proc/self/fd").iterdir()))
    arrays = [
        passes.stored_data(
            passes.detached_tensor(f"w{i}", TensorProto.FLOAT, [65], (str(data), i * 65 * 4))
        )
        for i in range(1000)
    ]
    assert len(list(Path("/proc/self/fd").iterdir())) - before <= 1
    np.testing.assert_array_equal(np.concatenate(arrays), values)
    # An element that does not start on a multiple of its size is read aligned all the same.
    odd = passes.stored_data(passes.detached_tensor("odd", TensorProto.FLOAT, [2], (str(data), 2)))
    np.testing.assert_array_equal(odd, np.frombuffer(values.tobytes()[2:10], np.float32))


def test_a_data_file_that_changed_after_loading_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    save_with_external_data(conv_relu_pool_model(), path, "weights.bin")
    fc = next(t for t in load_model(path).model.graph.initializer if t.name == "fc")
    (tmp_path / "weights.bin").write_bytes(b"short")
    with pytest.raises(ModelLoadError, match=r"initializer 'fc'.*changed after the model was"):
        passes.tensor_values(fc)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"initializer 'fc'.*load it again"):
        passes.tensor_values(fc)
