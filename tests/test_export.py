"""The self-contained projector graph equals the two-session Python pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import DIGIT_7, DIGITNET
from oracle_nets import build_net, export, make_input

from onnxdeconv import Projector, load_model
from onnxdeconv.export import ExportOptions, export_projector
from onnxdeconv.inputs import load_input, preprocessing_from_metadata


def run_exported(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def assert_matches_python(
    model: onnx.ModelProto | Path,
    x: np.ndarray,
    layer: str,
    rule: str,
    channels: list[int],
    rtol: float = 1e-5,
) -> onnx.ModelProto:
    loaded = load_model(model)
    exported = export_projector(
        loaded,
        ExportOptions(layer=layer, rule=rule, batch=len(channels) > 1),  # type: ignore[arg-type]
    )
    onnx.checker.check_model(exported, full_check=True)
    opset = exported.opset_import[0].version
    assert 16 <= opset <= 18
    assert exported.ir_version == onnx.helper.find_min_ir_version_for(list(exported.opset_import))
    out = run_exported(exported, {loaded.input_name: x, "channel": np.array(channels, np.int64)})
    projector = Projector(loaded, layer=layer, rule=rule)  # type: ignore[arg-type]
    forward = projector.forward(x)
    picks = [projector.strongest(forward, channel=c)[0] for c in channels]
    expected = projector.project(forward, picks)
    assert out["projection"].shape == expected.shape
    peak = np.abs(expected).max()
    np.testing.assert_allclose(out["projection"], expected, rtol=rtol, atol=rtol * peak)
    np.testing.assert_allclose(out["activation"], [p.value for p in picks], rtol=rtol)
    assert [tuple(p) for p in out["position"]] == [p.position for p in picks]
    return exported


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
def test_digitnet_single_and_batch(rule: str) -> None:
    loaded = load_model(DIGITNET)
    declared = preprocessing_from_metadata(loaded)
    assert declared is not None
    x = load_input(DIGIT_7, loaded, declared).array
    assert_matches_python(DIGITNET, x, "relu2", rule, [4])
    exported = assert_matches_python(DIGITNET, x, "conv3", rule, [0, 7, 31])
    assert [i.name for i in exported.graph.input] == ["image", "channel"]
    assert [o.name for o in exported.graph.output] == ["projection", "activation", "position"]


def test_fc_layer_has_empty_position() -> None:
    x = np.random.default_rng(3).normal(size=(1, 1, 28, 28)).astype(np.float32)
    exported = assert_matches_python(DIGITNET, x, "gemm1", "deconvnet", [2, 9])
    out = run_exported(exported, {"image": x, "channel": np.array([2, 9], np.int64)})
    assert out["position"].shape == (2, 0)


def test_position_input() -> None:
    x = np.random.default_rng(4).normal(size=(1, 1, 28, 28)).astype(np.float32)
    exported = export_projector(
        load_model(DIGITNET), ExportOptions(layer="relu1", position_input=True, batch=True)
    )
    assert "position" in [i.name for i in exported.graph.input]
    out = run_exported(
        exported,
        {
            "image": x,
            "channel": np.array([1, 2], np.int64),
            "position": np.array([[3, 4], [27, 0]], np.int64),
        },
    )
    projector = Projector(DIGITNET, layer="relu1")
    forward = projector.forward(x)
    picks = [
        projector.strongest(forward, channel=1, position=(3, 4))[0],
        projector.strongest(forward, channel=2, position=(27, 0))[0],
    ]
    np.testing.assert_allclose(
        out["projection"], projector.project(forward, picks), rtol=1e-5, atol=1e-6
    )


def test_squeezenet_fp16(squeezenet_path: Path, images_dir: Path) -> None:
    from onnxdeconv.inputs import PRESETS

    loaded = load_model(squeezenet_path)
    x = load_input(images_dir / "cat.jpg", loaded, PRESETS["caffe"]).array
    # ONNX Runtime may keep the fp16 activations in float32 once they feed the selection's Cast.
    exported = assert_matches_python(squeezenet_path, x, "relu18", "guided", [131, 7], rtol=1e-3)
    assert exported.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


@pytest.mark.parametrize("arch", ["zfnet", "resnet", "squeeze"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_pytorch_architectures(arch: str, exporter: str, tmp_path: Path) -> None:
    net = build_net(arch)
    x = make_input(arch, batch=1)
    model = export(net, torch.from_numpy(x), exporter, tmp_path / f"{arch}.onnx")
    # dynamo exports at opset 20: the exporter converts them down to the deconv opset range.
    deepest_conv = [n.output[0] for n in model.graph.node if n.op_type == "Relu"][-1]
    assert_matches_python(model, x, deepest_conv, "deconvnet", [0, 1], rtol=1e-4)
