"""The self-contained projector graph equals the two-session Python pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import DIGIT_7, DIGITNET, ROOT
from helpers import conv_relu_pool_model
from oracle_nets import build_net, export, make_input

from onnxdeconv import Projector, load_model
from onnxdeconv.export import (
    RESERVED_NAMES,
    RESERVED_NODE_NAMES,
    RESERVED_NODE_PREFIXES,
    RESERVED_PREFIXES,
    ExportOptions,
    export_projector,
)
from onnxdeconv.graph.passes import SWITCHES_SUFFIX
from onnxdeconv.inputs import load_input, preprocessing_from_metadata
from onnxdeconv.prepared import prepare


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


@pytest.mark.parametrize(("layer", "rule"), [("relu18", "guided"), ("relu7", "deconvnet")])
def test_squeezenet_fp16(squeezenet_path: Path, images_dir: Path, layer: str, rule: str) -> None:
    from onnxdeconv.inputs import PRESETS

    loaded = load_model(squeezenet_path)
    x = load_input(images_dir / "cat.jpg", loaded, PRESETS["caffe"]).array
    # ONNX Runtime keeps a float16 model's activations in float32 inside one graph (a cast to
    # float16 and back is dropped): the export rounds the unit to float16 as the Projector sees it.
    # Without that rounding the two were up to 2e-4 apart.
    exported = assert_matches_python(squeezenet_path, x, layer, rule, [131 % 64, 7], rtol=1e-5)
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


KERAS_DEFAULT_NAMES = ROOT / "tests" / "data" / "keras_default_names.onnx"
IO_NAMES = (["x", "channel"], ["projection", "activation", "position"])


def io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]


def renamed(model: onnx.ModelProto, tensors: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` with some tensors (and nodes of the same name) renamed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for value in (*graph.input, *graph.output, *graph.initializer):
        value.name = tensors.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [tensors.get(n, n) for n in node.input]
        node.output[:] = [tensors.get(n, n) for n in node.output]
        node.name = tensors.get(node.name, node.name)
    onnx.checker.check_model(out, full_check=True)
    return out


def added_names(exported: onnx.ModelProto, model: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """The tensor and node names the exported graph has and the model has not."""

    def names(graph: onnx.GraphProto) -> tuple[set[str], set[str]]:
        tensors = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
        for node in graph.node:
            tensors |= {*node.input, *node.output} - {""}
        return tensors, {node.name for node in graph.node}

    (exported_tensors, exported_nodes), (tensors, nodes) = names(exported.graph), names(model.graph)
    return exported_tensors - tensors, exported_nodes - nodes


def test_reserved_names_cover_every_name_the_export_adds() -> None:
    # With the pools' switches and a linked rectifier input, and the position found in the graph.
    model = conv_relu_pool_model()
    for options in (ExportOptions(layer="pool", rule="guided"), ExportOptions(layer="logits")):
        exported = export_projector(load_model(model), options)
        tensors, nodes = added_names(exported, model)
        assert tensors and nodes
        assert {
            t
            for t in tensors
            if t not in RESERVED_NAMES
            and not t.startswith(RESERVED_PREFIXES)
            # The instrumented forward graph's switches are the model's tensors.
            and not t.endswith(SWITCHES_SUFFIX)
        } == set()
        assert {
            n
            for n in nodes
            if n not in RESERVED_NODE_NAMES and not n.startswith(RESERVED_NODE_PREFIXES)
        } <= {""}


def clashing_names(reserved: str) -> list[str]:
    """``reserved`` itself, or for a prefix the names the export adds with that prefix."""
    if reserved in RESERVED_NAMES or reserved in RESERVED_NODE_NAMES:
        return [reserved]
    model = conv_relu_pool_model()
    exported = export_projector(load_model(model), ExportOptions(layer="pool", rule="guided"))
    tensors, nodes = added_names(exported, model)
    return sorted(n for n in tensors | nodes if n.startswith(reserved))


@pytest.mark.parametrize(
    "reserved",
    sorted({*RESERVED_NAMES, *RESERVED_PREFIXES, *RESERVED_NODE_NAMES, *RESERVED_NODE_PREFIXES}),
)
@pytest.mark.parametrize("tensor", ["relu", "pool", "w", "logits"])
def test_model_tensor_with_a_reserved_name_is_renamed(reserved: str, tensor: str) -> None:
    # The layer tensor, the one before it (linked into the deconv graph), a shared weight and
    # the model's output each take a name the exported graph uses; its io names stay fixed.
    model = conv_relu_pool_model()
    clashes = clashing_names(reserved)
    assert clashes
    clash = clashes[0] if tensor != "pool" else clashes[-1]
    # The node of the same name, too (node names must be unique for ONNX Runtime).
    clashing = renamed(model, {tensor: clash})
    layer = clash if tensor == "pool" else "pool"
    x = np.random.default_rng(5).normal(size=(1, 3, 16, 16)).astype(np.float32)
    exported = assert_matches_python(clashing, x, layer, "guided", [0, 3])
    assert io_names(exported) == (IO_NAMES[0], IO_NAMES[1])
    assert exported.metadata_props[0].value == layer


def test_every_prefixed_name_of_the_export_in_the_model_at_once() -> None:
    model = conv_relu_pool_model()
    exported = export_projector(load_model(model), ExportOptions(layer="pool", rule="guided"))
    tensors, nodes = added_names(exported, model)
    # Give the model's tensors (and nodes) as many of the export's own names as it has.
    wanted = sorted((tensors | nodes) - {""})
    ours = ["conv", "relu", "pool", "flat", "logits"]
    clashing = renamed(model, dict(zip(ours, wanted[: len(ours)], strict=True)))
    x = np.random.default_rng(6).normal(size=(1, 3, 16, 16)).astype(np.float32)
    exported = assert_matches_python(clashing, x, wanted[2], "guided", [1])
    assert io_names(exported) == (IO_NAMES[0], IO_NAMES[1])


def test_image_input_named_channel_is_renamed() -> None:
    clashing = renamed(conv_relu_pool_model(), {"x": "channel"})
    exported = export_projector(load_model(clashing), ExportOptions(layer="pool"))
    assert io_names(exported) == (["model/channel", "channel"], IO_NAMES[1])
    x = np.random.default_rng(7).normal(size=(1, 3, 16, 16)).astype(np.float32)
    out = run_exported(exported, {"model/channel": x, "channel": np.array([2], np.int64)})
    projector = Projector(clashing, layer="pool")
    forward = projector.forward(x)
    expected = projector.project(forward, projector.strongest(forward, channel=2))
    np.testing.assert_allclose(out["projection"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["relu1", "relu2", "relu3", None])
def test_keras_model_with_default_layer_names(layer: str | None) -> None:
    # tf2onnx names the output after the softmax layer, "activation": an output name of export.
    model = onnx.load(KERAS_DEFAULT_NAMES)
    assert [o.name for o in model.graph.output] == ["activation"]
    loaded = load_model(model)
    x = np.random.default_rng(8).uniform(0, 255, size=(1, 32, 32, 3)).astype(np.float32)
    projector = Projector(loaded)
    name = projector.prepared.resolve(layer) if layer else projector.prepared.default_layer()
    exported = assert_matches_python(model, x, name, "deconvnet", [0, 5])
    assert io_names(exported) == (["image", "channel"], IO_NAMES[1])
    assert "model/activation" in {n for node in exported.graph.node for n in node.output}


def test_dynamic_width_exported_at_the_size_given() -> None:
    # An OCR-like input: fixed height, dynamic width; the exported graph takes the size given.
    model = conv_relu_pool_model(size=16)
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    # Up to the pool: the Gemm head's weights fix the width.
    del model.graph.node[3:], model.graph.output[:], model.graph.initializer[2:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("pool", onnx.TensorProto.FLOAT, ["N", 4, 8, "W2"])
    )
    prepared = prepare(load_model(model), (3, 16, 24))
    exported = export_projector(prepared, ExportOptions(layer="relu"))
    image = exported.graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in image.dim] == [1, 3, 16, 24]
    x = np.random.default_rng(10).normal(size=(1, 3, 16, 24)).astype(np.float32)
    out = run_exported(exported, {"x": x, "channel": np.array([1], np.int64)})
    projector = Projector(prepared, layer="relu")
    forward = projector.forward(x)
    expected = projector.project(forward, projector.strongest(forward, channel=1))
    np.testing.assert_allclose(out["projection"], expected, rtol=1e-5, atol=1e-6)
