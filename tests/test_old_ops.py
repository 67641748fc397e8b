"""Old exports with the experimental ops of opsets 1 to 9: ImageScaler, Crop, Affine, Scale.

The models are written with ``onnx.helper`` as onnx-caffe2 and CNTK wrote them (IR 3, weights
also listed as graph inputs, opset 7 with an ImageScaler before the first Conv) and go through the
normal loading path. The oracle is captum on a PyTorch twin that computes the same ops by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import run
from onnx import TensorProto, helper, numpy_helper
from oracle_nets import captum_references, relative_error
from torch import nn

from onnxdeconv import ModelLoadError, Projector, UnsupportedOpError, load_model, prepare
from onnxdeconv.check import CheckConfig, run_checks
from onnxdeconv.graph.experimental import with_stand_ins

RULES = ("deconvnet", "guided", "gradient")
TOLERANCE = 1e-5
SCALE, BIAS = 0.02, (-2.1, -2.0, -1.8)
BORDER = (1, 2, 3, 0)  # left, top, right, bottom
ALPHA, BETA = 0.8, 0.1
SCALE2 = 1.5


class OldNet(nn.Module):
    """The twin: ImageScaler, Crop, Conv, ReLU, overlapping MaxPool, Affine, Conv, ReLU, Scale."""

    input_shape = (3, 20, 21)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 5, 2)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = SCALE * x + torch.tensor(BIAS).view(1, 3, 1, 1)  # ImageScaler
        left, top, right, bottom = BORDER
        x = x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]  # Crop
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(ALPHA * x + BETA))  # Affine
        return self.relu3(self.conv3(SCALE2 * x))  # Scale


def _weights(net: OldNet) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in net.named_parameters()}


def old_export(net: OldNet, opset: int = 7) -> onnx.ModelProto:
    """The twin as an old Caffe2 export writes it: IR 3, weights also as inputs."""
    weights = [numpy_helper.from_array(v, k) for k, v in _weights(net).items()]
    node = helper.make_node
    nodes = [
        node("ImageScaler", ["data"], ["scaled"], name="scaler", scale=SCALE, bias=list(BIAS)),
        node("Crop", ["scaled"], ["cropped"], name="crop", border=list(BORDER)),
        node("Conv", ["cropped", "conv1.weight", "conv1.bias"], ["conv1"], pads=[1, 1, 1, 1]),
        node("Relu", ["conv1"], ["relu1"]),
        node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[3, 3], strides=[2, 2]),
        node("Affine", ["pool1"], ["affine"], name="affine", alpha=ALPHA, beta=BETA),
        node("Conv", ["affine", "conv2.weight", "conv2.bias"], ["conv2"], pads=[1, 1, 1, 1]),
        node("Relu", ["conv2"], ["relu2"]),
        node("Scale", ["relu2"], ["scale"], name="scale", scale=SCALE2),
        node("Conv", ["scale", "conv3.weight", "conv3.bias"], ["conv3"]),
        node("Relu", ["conv3"], ["relu3"]),
    ]
    graph = helper.make_graph(
        nodes,
        "old_caffe2",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, *OldNet.input_shape]),
            *(helper.make_tensor_value_info(w.name, TensorProto.FLOAT, w.dims) for w in weights),
        ],
        [helper.make_tensor_value_info("relu3", TensorProto.FLOAT, [2, 5, "h", "w"])],
        initializer=weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2"
    )
    model.ir_version = 3
    return model


@pytest.fixture(scope="module")
def twin() -> tuple[OldNet, onnx.ModelProto, np.ndarray]:
    net = OldNet().eval()
    x = np.random.default_rng(1).uniform(0, 255, (2, *OldNet.input_shape)).astype(np.float32)
    return net, old_export(net), x


def _ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize(
    ("op", "attrs", "shape"),
    [
        ("ImageScaler", {"scale": 2.0, "bias": [1.0, 2.0]}, (1, 2, 3, 4)),
        ("Crop", {"border": [1, 0, 1, 2]}, (1, 2, 3, 4)),
        ("Affine", {"alpha": 2.0, "beta": 1.0}, (1, 2, 3, 4)),
        ("Scale", {"scale": 2.0}, (1, 2, 3, 4)),
    ],
)
def test_onnx_runtime_runs_them_up_to_opset_9(op: str, attrs: dict, shape: tuple) -> None:
    """The documented fact the loading path relies on (onnxruntime 1.31)."""

    def model(opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"], **attrs)],
            "one_op",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        made.ir_version = 4
        return made

    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    for opset in (7, 8, 9):
        (y,) = _ort_session(model(opset)).run(None, {"x": x})
        if op == "Crop":
            np.testing.assert_array_equal(y, x[:, :, 0:1, 1:3])
        elif op == "ImageScaler":
            np.testing.assert_array_equal(y, 2 * x + np.array([1, 2]).reshape(1, 2, 1, 1))
        else:
            np.testing.assert_array_equal(y, 2 * x + (1 if op == "Affine" else 0))
    with pytest.raises(Exception, match="not a registered function/op"):
        _ort_session(model(10))


def test_opset_7_is_converted_to_9_around_them(twin: tuple) -> None:
    net, model, x = twin
    loaded = load_model(model)
    assert loaded.opset == 9  # the newest opset at which ONNX Runtime still runs them
    ops = [n.op_type for n in loaded.model.graph.node]
    assert ops[:2] == ["ImageScaler", "Crop"] and "Affine" in ops and "Scale" in ops
    # The converted model computes what the PyTorch twin computes.
    (y,) = _ort_session(loaded.model).run(None, {"data": x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_opset_9_keeps_its_opset(twin: tuple) -> None:
    net, _, _ = twin
    assert load_model(old_export(net, opset=9)).opset == 9


def test_loading_prints_nothing(twin: tuple, capfd: pytest.CaptureFixture[str]) -> None:
    """The checker prints a warning on stdout for experimental ops; the stand-ins avoid it."""
    _, model, _ = twin
    prepare(load_model(model)).layers()
    out, err = capfd.readouterr()
    assert out == "" and "experimental" not in err


def test_models_without_them_are_checked_as_they_are() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
    )
    model = helper.make_model(graph)
    assert with_stand_ins(model) is model


def test_shapes_are_those_onnx_runtime_computes(twin: tuple) -> None:
    _, model, x = twin
    prepared = prepare(load_model(model))
    probe = onnx.ModelProto()
    probe.CopyFrom(prepared.loaded.model)
    names = ["scaled", "cropped", "pool1", "affine", "scale"]
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
    )
    values = _ort_session(probe).run(names, {"data": x})
    for name, value in zip(names, values, strict=True):
        assert prepared.info[name].shape == value.shape, name


@pytest.mark.parametrize("layer", ["relu1", "relu2", "relu3"])
@pytest.mark.parametrize("rule", RULES)
def test_projection_equals_captum_on_the_twin(twin: tuple, layer: str, rule: str) -> None:
    net, model, x = twin
    projector = Projector(load_model(model), layer=layer, rule=rule, device="cpu")  # type: ignore[arg-type]
    forward = projector.forward(x)
    selections = [p for image in (0, 1) for p in projector.strongest(forward, 3, image=image)]
    assert all(p.value > 0 for p in selections)
    projections = projector.project(forward, selections)
    references = captum_references(net, layer, rule, x, selections)
    assert max(float(np.abs(r).max()) for r in references) > 0
    # The cropped border (top 2 rows, left 1 and right 3 columns) gets no signal.
    assert not projections[:, :, :2].any() and not projections[:, :, :, -3:].any()
    worst = max(relative_error(p, r) for p, r in zip(projections, references, strict=True))
    assert worst <= TOLERANCE


def test_layers_lists_them_projectable(
    twin: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model, _ = twin
    rows = {row.name: row for row in prepare(load_model(model)).layers()}
    for name, op in [("scaled", "ImageScaler"), ("cropped", "Crop"), ("affine", "Affine")]:
        assert rows[name].op == op and rows[name].projectable, rows[name]
    assert all(row.projectable for row in rows.values())
    # The Crop moves the field's offset by its corner: 2 rows down, 1 column right.
    assert list(rows["cropped"].receptive_field.offset) == [2, 1]
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    code, out, _ = run(["layers", path], capsys)
    assert code == 0
    for name in ("imagescaler1", "crop1", "affine1", "scale1"):
        assert name in out


def test_check_runs(twin: tuple) -> None:
    _, model, _ = twin
    report = run_checks(load_model(model), config=CheckConfig(), device="cpu")
    assert report.passed, [f for f in report.findings if f.status == "fail"]
    adjoint = {f.subject for f in report.findings if f.check == "faithful.adjoint"}
    assert {"scaled", "cropped", "affine", "scale", "relu3"} <= adjoint


def _with_node(op: str, opset: int, **attrs: object) -> onnx.ModelProto:
    """data -> Conv -> Relu -> ``op`` (named 'old_op') -> Conv -> Relu."""
    rng = np.random.default_rng(3)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "w2": rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
    }
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("Conv", ["data", "w1"], ["conv1"], name="conv1"),
            node("Relu", ["conv1"], ["relu1"], name="relu1"),
            node(op, ["relu1"], ["old"], name="old_op", **attrs),
            node("Conv", ["old", "w2"], ["conv2"], name="conv2"),
            node("Relu", ["conv2"], ["relu2"], name="relu2"),
        ],
        "with_old_op",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("relu2", TensorProto.FLOAT, [1, 4, "h", "w"])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 4
    return model


@pytest.mark.parametrize("op", ["ScaledTanh", "ParametricSoftplus"])
def test_an_op_without_a_rule_stops_in_one_line(op: str) -> None:
    prepared = prepare(load_model(_with_node(op, 7, alpha=1.0, beta=0.5)))
    rows = {row.name: row for row in prepared.layers()}
    assert rows["conv1"].projectable and rows["relu1"].projectable
    for name in ("old", "conv2", "relu2"):
        assert not rows[name].projectable
    with pytest.raises(UnsupportedOpError) as info:
        prepared.plan("relu2")
    message = str(info.value)
    assert "\n" not in message and "'old_op'" in message and op in message
    assert message.endswith("the nearest projectable layer before it is relu1 ('relu1')")
    assert "experimental op" in message and "opset 8" not in message


def test_at_opset_10_they_are_refused_in_one_line() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(_with_node("Affine", 10, alpha=2.0))
    message = str(info.value)
    assert "\n" not in message and "'old_op'" in message and "Affine" in message
    assert "opset 9" in message and "has no registered schema" not in message


def test_an_unreadable_one_is_refused_in_one_line() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(_with_node("DynamicSlice", 7))
    message = str(info.value)
    assert "\n" not in message and "'old_op'" in message and "DynamicSlice" in message
    assert "registered schema" not in message and "opset 8" not in message


def test_standard_equivalents_compute_the_same(twin: tuple) -> None:
    """ImageScaler, Crop, Affine and Scale as Mul/Add/Slice: the same outputs in ONNX Runtime."""
    from onnxdeconv.graph.experimental import with_standard_ops

    _, model, x = twin
    standard = with_standard_ops(model, np.dtype(np.float32))
    assert not {"ImageScaler", "Crop", "Affine", "Scale"} & {n.op_type for n in standard.graph.node}
    original = _ort_session(model).run(None, {"data": x})[0]
    np.testing.assert_array_equal(_ort_session(standard).run(None, {"data": x})[0], original)


def test_export_carries_them_to_a_newer_opset(twin: tuple, tmp_path: Path) -> None:
    """export converts to opset 17, where ONNX Runtime no longer runs the originals."""
    from onnxdeconv.export import ExportOptions, export_projector

    _, model, x = twin
    exported = export_projector(load_model(model), ExportOptions(layer="relu2"))
    session = _ort_session(exported)
    out = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {"data": x[:1], "channel": np.array([0], np.int64)}),
            strict=True,
        )
    )
    projector = Projector(prepare(load_model(model)), "relu2", device="cpu")
    forward = projector.forward(x[:1])
    pick = projector.strongest(forward, channel=0)
    expected = projector.project(forward, pick)
    assert relative_error(out["projection"], expected) <= TOLERANCE
