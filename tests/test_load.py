from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import conv_relu_pool_model
from onnx import TensorProto, external_data_helper, helper

from onnxdeconv import ModelLoadError, Projector, load_model, prepare
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


def _save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    onnx.save(model, str(path))


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    model = conv_relu_pool_model()
    _save_external(model, tmp_path / "m.onnx", "weights.bin")
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
    _save_external(model, tmp_path / "m.onnx", "weights.bin")
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
