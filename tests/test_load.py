from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import conv_relu_pool_model
from onnx import TensorProto, external_data_helper, helper

from onnxdeconv import ModelLoadError, Projector, load_model
from onnxdeconv.graph.passes import SWITCHES_SUFFIX


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


def test_two_inputs_and_integer_input_are_refused() -> None:
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
    graph = helper.make_graph(
        [helper.make_node("Cast", ["a"], ["c"], to=TensorProto.FLOAT)],
        "int",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    with pytest.raises(ModelLoadError, match="float input"):
        load_model(helper.make_model(graph))


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_instrumented_forward_keeps_original_outputs(rule: str, squeezenet_path: Path) -> None:
    loaded = load_model(squeezenet_path)
    projector = Projector(loaded, layer="relu18", rule=rule)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 3, 224, 224)) * 50).astype(np.float16)
    original = ort.InferenceSession(
        loaded.model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"data_0": x})
    instrumented = ort.InferenceSession(
        projector.forward_model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"data_0": x})
    assert len(instrumented) > len(original)
    for before, after in zip(original, instrumented, strict=False):
        assert np.array_equal(before, after)
    outputs = [o.name for o in projector.forward_model.graph.output]
    assert outputs[: len(original)] == [o.name for o in loaded.model.graph.output]
    switches = [name for name in outputs if name.endswith(SWITCHES_SUFFIX)]
    assert len(switches) == 3  # pool1, pool3 and pool5 lie below fire7
    onnx.checker.check_model(projector.forward_model, full_check=True)
