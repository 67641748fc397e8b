"""Quantized models written by ONNX Runtime's own quantizer, against float oracles.

The models are made at run time from the ZFNet-like net of :mod:`oracle_nets`:

* ``quantize_static`` in the QDQ format (per tensor and per channel): int8 weights behind
  DequantizeLinear, activations through QuantizeLinear/DequantizeLinear pairs; the quantizer
  removes every ReLU, whose work the following quantizer's clamp at 0 does.
* ``quantize_dynamic``: DynamicQuantizeLinear, ConvInteger and MatMulInteger.
* ``quantize_static`` in the QOperator format (QLinearConv), which is refused.

The oracle for QDQ is a PyTorch twin: the same net with the weights dequantized here in numpy and
``torch.fake_quantize_per_tensor_affine`` after each module whose output ORT quantized (its
backward is straight-through within the integer range), under captum's Neuron* methods.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from oracle_nets import (
    build_net,
    captum_references,
    export,
    make_input,
    module_outputs,
    relative_error,
)
from torch import nn

from onnxdeconv import Projector, UnsupportedOpError, load_model, prepare
from onnxdeconv.graph.quantized import dequantize_constants

quantization = pytest.importorskip("onnxruntime.quantization")

RULES = ("deconvnet", "guided", "gradient")
TOLERANCE = 1e-5
TOP = 2
#: Layers to project from: twin module -> ORT tensor (its dequantized view). Every rectifier and
#: pool of the net.
LAYERS = {
    module: f"/{module}/{op}_output_0_DequantizeLinear_Output"
    for module, op in (
        ("relu1", "Relu"),
        ("pool1", "MaxPool"),
        ("relu2", "Relu"),
        ("pool2", "MaxPool"),
        ("relu3", "Relu"),
        ("relu4", "Relu"),
        ("relu5", "Relu"),
    )
}


class _Calibration(quantization.CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, images: np.ndarray) -> None:
        self.rows = iter([{"input": images[i : i + 1]} for i in range(len(images))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.rows, None)


@dataclass
class Quantized:
    net: nn.Module
    inputs: np.ndarray
    float_path: Path
    paths: dict[str, Path]


@pytest.fixture(scope="module")
def zfnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quantized]:
    folder = tmp_path_factory.mktemp("quantized")
    net = build_net("zfnet").eval()
    inputs = make_input("zfnet", batch=2)
    float_path = folder / "zfnet.onnx"
    export(net, torch.from_numpy(inputs[:1]), "legacy", float_path)
    calibration = make_input("zfnet", batch=6, seed=7)
    paths = {}
    for name, per_channel in (("qdq", False), ("qdq_per_channel", True)):
        paths[name] = folder / f"{name}.onnx"
        quantization.quantize_static(
            float_path,
            paths[name],
            _Calibration(np.concatenate([inputs, calibration])),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=per_channel,
        )
    paths["qoperator"] = folder / "qoperator.onnx"
    quantization.quantize_static(
        float_path,
        paths["qoperator"],
        _Calibration(calibration),
        quant_format=quantization.QuantFormat.QOperator,
    )
    paths["dynamic"] = folder / "dynamic.onnx"
    quantization.quantize_dynamic(float_path, paths["dynamic"])
    yield Quantized(net, inputs, float_path, paths)


# --- the twin --------------------------------------------------------------------------------


def _numpy_dequantized(model: onnx.ModelProto, name: str) -> np.ndarray:
    """``(q - zero_point) * scale`` of the initializer behind DequantizeLinear output ``name``."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.output[0] == name)
    q, scale, zero = (values[i] for i in node.input)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)


#: A quantization point: scale, zero point and the integer range.
Point = tuple[float, int, int, int]


def qdq_points(model: onnx.ModelProto) -> dict[str, Point]:
    """Each activation QuantizeLinear's input tensor -> its parameters."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    points = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in values:
            zero = values[node.input[2]]
            info = np.iinfo(zero.dtype)
            points[node.input[0]] = (float(values[node.input[1]]), int(zero), info.min, info.max)
    return points


def with_weights(net: nn.Module, weights: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``net`` with the given parameters (by name) replaced."""
    out = copy.deepcopy(net)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(torch.from_numpy(value.astype(np.float32)))
    return out


def fake_quantized(net: nn.Module, points: dict[str, Point]) -> nn.Module:
    """``net`` with ``torch.fake_quantize_per_tensor_affine`` at each point.

    A point is the ONNX tensor ``input`` or ``/<module>/...``: the output of that module.
    """
    modules = dict(net.named_modules())
    for tensor, (scale, zero, low, high) in points.items():

        def quantize(x: torch.Tensor, p: Point = (scale, zero, low, high)) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(x, p[0], p[1], p[2], p[3])

        if tensor == "input":
            net.register_forward_pre_hook(lambda m, args, q=quantize: (q(args[0]),))
            continue
        found = re.match(r"/(\w+)/", tensor)
        if found is not None:  # not the logits, after the last module
            modules[found.group(1)].register_forward_hook(lambda m, a, out, q=quantize: q(out))
    return net


def ort_reference_values(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """The dequantized layers as ONNX defines them: ONNX Runtime with its graph rewrites off."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in LAYERS.values()
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = session.run(list(LAYERS.values()), {"input": x})
    return dict(zip(LAYERS, values, strict=True))


def qdq_twin(net: nn.Module, model: onnx.ModelProto) -> nn.Module:
    """``net`` with the QDQ model's dequantized weights and a fake quantizer per QDQ point."""
    weights = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            layer = node.input[1].split(".")[0]
            weights[f"{layer}.weight"] = _numpy_dequantized(model, node.input[1])
            weights[f"{layer}.bias"] = _numpy_dequantized(model, node.input[2])
    return fake_quantized(with_weights(net, weights), qdq_points(model)).eval()


# --- QDQ -------------------------------------------------------------------------------------


def _qdq_cases() -> list[object]:
    return [
        pytest.param(model, module, rule, id=f"{model}-{module}-{rule}")
        for model in ("qdq", "qdq_per_channel")
        for module in LAYERS
        for rule in RULES
    ]


@pytest.mark.parametrize(("model_name", "module", "rule"), _qdq_cases())
def test_qdq_projection_matches_the_fake_quantized_twin(
    zfnet: Quantized,
    model_name: str,
    module: str,
    rule: str,
    record_property: pytest.RecordProperty,
) -> None:
    model = onnx.load(str(zfnet.paths[model_name]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    # ORT's quantizer removes the ReLUs: the quantizers after each conv rectify.
    assert "Relu" not in {n.op_type for n in model.graph.node}
    projector = Projector(zfnet.paths[model_name], layer=LAYERS[module], rule=rule, device="cpu")
    forward = projector.forward(zfnet.inputs)
    selections = [
        pick for image in range(2) for pick in projector.strongest(forward, TOP, image=image)
    ]
    projections = projector.project(forward, selections)
    twin_net = qdq_twin(zfnet.net, model)
    references = captum_references(twin_net, module, rule, zfnet.inputs, selections)
    errors = [relative_error(p, r) for p, r in zip(projections, references, strict=True)]
    assert max(float(np.abs(r).max()) for r in references) > 0
    record_property("relative_error", max(errors))
    assert max(errors) <= TOLERANCE, errors


@pytest.mark.parametrize("model_name", ["qdq", "qdq_per_channel"])
def test_qdq_forward_pass_is_the_model_as_onnx_defines_it(
    zfnet: Quantized, model_name: str
) -> None:
    # ONNX Runtime's QDQ rewrites (weights re-quantized with scales of its own, DQ -> Conv -> Q
    # fused into integer kernels) change activations by one or more quantization steps; the
    # projector's forward pass must be the model's own map, which the twin computes too.
    model = onnx.load(str(zfnet.paths[model_name]))
    # Layers are float tensors: the quantizers' integer outputs are not listed.
    candidates = prepare(load_model(model)).candidates
    assert set(LAYERS.values()) <= set(candidates)
    assert not [name for name in candidates if name.endswith("_QuantizeLinear_Output")]
    reference = ort_reference_values(model, zfnet.inputs)
    twin = module_outputs(qdq_twin(zfnet.net, model), torch.from_numpy(zfnet.inputs), LAYERS)
    for module, layer in LAYERS.items():
        projector = Projector(zfnet.paths[model_name], layer=layer, device="cpu")
        activations = projector.forward(zfnet.inputs).activations
        np.testing.assert_array_equal(activations, reference[module], err_msg=module)
        np.testing.assert_array_equal(twin[module], reference[module], err_msg=module)


def test_weights_are_dequantized_into_float_constants(zfnet: Quantized) -> None:
    model = onnx.load(str(zfnet.paths["qdq_per_channel"]))
    folded = dequantize_constants(model)
    values = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    name = "conv2.weight_DequantizeLinear_Output"
    assert values[name].dtype == np.float32
    np.testing.assert_allclose(values[name], _numpy_dequantized(model, name), rtol=1e-6)
    # The per-channel scales differ, so this is not a per-tensor dequantization in disguise.
    scale = next(t for t in model.graph.initializer if t.name == "conv2.weight_scale")
    assert len(set(numpy_helper.to_array(scale).tolist())) > 1
    weights_left = [
        n for n in folded.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]
    ]
    assert weights_left == []


# --- dynamic quantization --------------------------------------------------------------------


def dynamic_twin(net: nn.Module, path: Path, x: np.ndarray) -> nn.Module:
    """``net`` with ``scale * (w_q - zero_point)`` weights and the input quantizers of a pass.

    DynamicQuantizeLinear's scale is a statistic of the whole batch; the twin holds the scale
    and zero point of ORT's pass over ``x`` (the projector's forward pass) fixed.
    """
    model = onnx.load(str(path))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = {}
    for name, param in net.named_parameters():
        if name.endswith(".weight"):
            q = values[f"{name}_quantized"].astype(np.float64)
            zero = values[f"{name}_zero_point"].astype(np.float64)
            weight = (q - zero) * values[f"{name}_scale"].astype(np.float64)
            # MatMulInteger holds the Linear weight transposed ([in, out]).
            weights[name] = weight.T if weight.shape != tuple(param.shape) else weight
    quantizers = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    for node in quantizers:
        model.graph.output.extend(
            onnx.helper.make_empty_tensor_value_info(name) for name in node.output[1:]
        )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [name for node in quantizers for name in node.output[1:]]
    run = dict(zip(names, session.run(names, {"input": x}), strict=True))
    points = {
        node.input[0]: (float(run[node.output[1]]), int(run[node.output[2]]), 0, 255)
        for node in quantizers
    }
    return fake_quantized(with_weights(net, weights), points).eval()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("module", ["relu2", "relu4", "fc1"])
def test_dynamic_quantization_matches_the_fake_quantized_twin(
    zfnet: Quantized, module: str, rule: str, record_property: pytest.RecordProperty
) -> None:
    model = onnx.load(str(zfnet.paths["dynamic"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    layer = {"relu2": "/relu2/Relu_output_0", "relu4": "/relu4/Relu_output_0"}.get(
        module, "/fc1/Gemm_output_0"
    )
    projector = Projector(zfnet.paths["dynamic"], layer=layer, rule=rule, device="cpu")
    forward = projector.forward(zfnet.inputs)
    selections = [
        pick for image in range(2) for pick in projector.strongest(forward, TOP, image=image)
    ]
    projections = projector.project(forward, selections)
    twin_net = dynamic_twin(zfnet.net, zfnet.paths["dynamic"], zfnet.inputs)
    references = captum_references(twin_net, module, rule, zfnet.inputs, selections)
    errors = [relative_error(p, r) for p, r in zip(projections, references, strict=True)]
    assert max(float(np.abs(r).max()) for r in references) > 0
    record_property("relative_error", max(errors))
    assert max(errors) <= TOLERANCE, errors


def test_dynamic_quantization_is_exact_for_a_linear_stack(tmp_path: Path) -> None:
    # Conv -> Conv -> Linear with no rectifier or pool: the projection is the transpose of the
    # float map with the dequantized weights, exactly (the input scales cancel).
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 6),
    ).eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    float_path, dynamic_path = tmp_path / "f.onnx", tmp_path / "d.onnx"
    export(net, torch.from_numpy(x[:1]), "legacy", float_path)
    quantization.quantize_dynamic(float_path, dynamic_path, per_channel=True)
    model = onnx.load(str(dynamic_path))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = []
    for index in (0, 1, 3):
        q = values[f"{index}.weight_quantized"].astype(np.float64)
        zero = values[f"{index}.weight_zero_point"].astype(np.float64)
        scale = values[f"{index}.weight_scale"].astype(np.float64)
        if index == 3:
            weights.append(((q - zero) * scale).T)
        else:
            weights.append((q - zero.reshape(-1, 1, 1, 1)) * scale.reshape(-1, 1, 1, 1))
    output = model.graph.output[0].name
    projector = Projector(dynamic_path, layer=output, rule="deconvnet", device="cpu")
    forward = projector.forward(x)
    signal = np.random.default_rng(4).standard_normal((2, 6)).astype(np.float32)
    back = projector.project_signal(forward, signal)
    xt = torch.zeros((2, 3, 8, 8), dtype=torch.float64, requires_grad=True)
    c1 = torch.nn.functional.conv2d(xt, torch.from_numpy(weights[0]), stride=2, padding=1)
    c2 = torch.nn.functional.conv2d(c1, torch.from_numpy(weights[1]), padding=1)
    y = c2.flatten(1) @ torch.from_numpy(weights[2]).T
    (expected,) = torch.autograd.grad(y, xt, torch.from_numpy(signal).double())
    assert relative_error(back, expected.numpy()) <= TOLERANCE


# --- refused ---------------------------------------------------------------------------------


def test_qoperator_models_are_refused_naming_the_op(zfnet: Quantized) -> None:
    prepared = prepare(load_model(zfnet.paths["qoperator"]))
    conv1 = next(n.output[0] for n in prepared.graph.node if n.op_type == "QLinearConv")
    with pytest.raises(UnsupportedOpError, match="QLinearConv") as info:
        Projector(prepared, layer=conv1, device="cpu")
    assert "QDQ" in str(info.value) and "constant factor" not in str(info.value)


def test_integer_product_without_its_scale_is_exact_in_integer_units(tmp_path: Path) -> None:
    # ConvInteger straight to the output (no Mul by the scales): y = w * (q - z) with
    # q = round(x / s) + z, s = (max(x, 0) - min(x, 0)) / 255 held at the forward batch's value,
    # so the projection of a signal g from y is conv_transpose(g, w) / s.
    from onnx import TensorProto, helper

    weight = np.array([[[[2, -1]]], [[[1, 3]]]], np.int8)  # [M=2, C=1, 1, 2]
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"),
            helper.make_node("ConvInteger", ["q", "w", "z"], ["acc"], name="conv_integer"),
            helper.make_node("Cast", ["acc"], ["y"], name="cast", to=TensorProto.FLOAT),
        ],
        "bare",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    x = np.random.default_rng(5).standard_normal((2, 1, 3, 3)).astype(np.float32)
    signal = np.random.default_rng(6).standard_normal((2, 2, 3, 2)).astype(np.float32)
    projector = Projector(model, layer="y", rule="gradient", device="cpu")
    back = projector.project_signal(projector.forward(x), signal)
    scale = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / 255
    expected = (
        torch.nn.functional.conv_transpose2d(
            torch.from_numpy(signal).double(), torch.from_numpy(weight.astype(np.float64))
        ).numpy()
        / scale
    )
    assert relative_error(back, expected) <= TOLERANCE


# --- check -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["qdq", "dynamic"])
def test_check_finds_every_layer_projectable_and_adjoint(zfnet: Quantized, model_name: str) -> None:
    # The linearised quantizers are the maps the straight-through rules transpose.
    from onnxdeconv.check.config import CheckConfig
    from onnxdeconv.check.run import run_checks

    every_layer = CheckConfig(adjoint_layers=0)  # not the default sample: all of them
    report = run_checks(load_model(zfnet.paths[model_name]), zfnet.inputs[:1], config=every_layer)
    findings = [f for f in report.findings if f.check.startswith(("analyzable", "faithful"))]
    adjoint = [f for f in findings if f.check == "faithful.adjoint"]
    assert len(adjoint) >= 19
    assert [f for f in findings if f.status != "pass"] == []
