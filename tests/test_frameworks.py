"""Models from other frameworks: Keras via tf2onnx, and a Keras net with its PyTorch twin.

* The Keras exports in ``tests/data`` (made by ``tests/data/make_keras.py``) take NHWC images: the
  projection comes back in that layout, ``[K, H, W, C]``.
* The cross-framework oracle: the same net with the same weights in Keras (exported by tf2onnx)
  and in PyTorch (exported here). Both ONNX projections, the Keras one transposed from NHWC, must
  equal captum on the PyTorch net.

The PaddleOCR models are in ``test_paddle.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from frameworks_fixtures import DATA
from helpers import run
from oracle_nets import all_tensor_values, captum_references, export, relative_error
from torch import nn
from torch.nn import functional as F

from onnxdeconv import OnnxDeconvError, Projector, Selection, load_model, prepare
from onnxdeconv.inputs import Preprocessing, load_input
from onnxdeconv.prepared import PreparedModel

RULES = ("deconvnet", "guided", "gradient")
TOLERANCE = 1e-3

# --------------------------------------------------------------------------------------------
# Keras via tf2onnx
# --------------------------------------------------------------------------------------------

#: Each committed Keras export, its image size (H, W, C) and the ops its graph must contain, so
#: that a regenerated file cannot silently drop what these tests cover.
KERAS = {
    "keras_nhwc": (
        (32, 32, 3),
        {"Mul", "Add", "Transpose", "Conv", "Relu", "MaxPool", "BatchNormalization", "MatMul"},
    ),
    "keras_norm": (
        (24, 24, 3),
        {"Sub", "Mul", "Transpose", "Conv", "Pad", "MaxPool", "AveragePool", "GlobalAveragePool"},
    ),
    "keras_uint8": ((32, 32, 3), {"Cast", "Mul", "Add", "Transpose", "Conv", "Squeeze"}),
    "keras_twin": ((20, 20, 3), {"Transpose", "Conv", "MaxPool", "Reshape", "MatMul", "Add"}),
}


def keras_input(name: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Random images 0..255 in the model's NHWC layout and input dtype."""
    shape, _ = KERAS[name]
    pixels = np.random.default_rng(seed).uniform(0, 255, (batch, *shape))
    if name == "keras_uint8":
        return pixels.round().astype(np.uint8)
    if name == "keras_twin":  # no preprocessing in the graph: feed normalised values
        return ((pixels - 127.5) / 64).astype(np.float32)
    return pixels.astype(np.float32)


class KerasModels(dict[str, PreparedModel]):
    """Each Keras export, loaded and prepared on first use."""

    def __missing__(self, name: str) -> PreparedModel:
        self[name] = prepare(load_model(DATA / f"{name}.onnx"))
        return self[name]


@pytest.fixture(scope="module")
def keras_prepared() -> KerasModels:
    return KerasModels()


@pytest.mark.parametrize("name", list(KERAS))
def test_keras_export_has_the_intended_ops(name: str) -> None:
    model = onnx.load(DATA / f"{name}.onnx")
    _, ops = KERAS[name]
    assert ops <= {node.op_type for node in model.graph.node}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


@pytest.mark.parametrize("name", list(KERAS))
def test_keras_every_layer_projects_in_nhwc(name: str, keras_prepared: KerasModels) -> None:
    prepared = keras_prepared[name]
    layers = prepared.layers()
    refused = {layer.alias: layer.reason for layer in layers if not layer.projectable}
    assert not refused
    x = keras_input(name)
    for layer in layers:
        projector = Projector(prepared, layer=layer.name, device="cpu")
        forward = projector.forward(x)
        picks = projector.strongest(forward, top=2, image=1)
        projections = projector.project(forward, picks)
        assert projections.shape == (len(picks), *KERAS[name][0]), layer.alias
        assert projections.dtype == np.float32
        assert np.isfinite(projections).all(), layer.alias
        assert np.abs(projections).max() > 0, layer.alias


def test_keras_projection_is_in_the_models_nhwc_layout(
    keras_prepared: KerasModels,
) -> None:
    """One unit of the first conv (3x3, stride 2, SAME: pads 0 before, 1 after) sees input rows and
    columns 2h..2h+2: the projection is non-zero there only, on axes 1 and 2 of [K, H, W, C]."""
    prepared = keras_prepared["keras_nhwc"]
    conv = next(layer.name for layer in prepared.layers() if layer.op == "Conv")
    projector = Projector(prepared, layer=conv, rule="gradient", device="cpu")
    forward = projector.forward(keras_input("keras_nhwc"))
    assert projector.layer_shape == (8, 16, 16)
    for h, w in [(0, 0), (5, 9), (15, 15)]:
        signal = np.zeros((1, 8, 16, 16), np.float32)
        signal[0, 3, h, w] = 1.0
        back = projector.project_signal(forward, signal)[0]
        assert back.shape == (32, 32, 3)
        support = np.argwhere(np.abs(back).sum(axis=2) > 0)
        rows, cols = set(support[:, 0]), set(support[:, 1])
        assert rows == set(range(2 * h, min(2 * h + 3, 32))), (h, w, rows)
        assert cols == set(range(2 * w, min(2 * w + 3, 32))), (h, w, cols)


def _float_input_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The uint8 model with a float32 input: its Cast becomes an Identity."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for node in out.graph.node:
        if node.op_type == "Cast" and node.input[0] == out.graph.input[0].name:
            node.op_type = "Identity"
            del node.attribute[:]
    return out


@pytest.mark.parametrize("rule", RULES)
def test_uint8_input_projects_like_its_float_twin(rule: str, keras_prepared: KerasModels) -> None:
    """A uint8 image cast to float in the graph: the projection is float32 in the input's shape,
    the same as for the same graph with a float input."""
    pixels = keras_input("keras_uint8")
    as_float = prepare(load_model(_float_input_copy(onnx.load(DATA / "keras_uint8.onnx"))))
    for layer in ("relu1", "conv2", "matmul1"):
        results = []
        for prepared, x in ((keras_prepared["keras_uint8"], pixels), (as_float, pixels * 1.0)):
            projector = Projector(prepared, layer=layer, rule=rule, device="cpu")  # type: ignore[arg-type]
            forward = projector.forward(x.astype(prepared.loaded.input_dtype))
            picks = projector.strongest(forward, top=3, image=0)
            results.append(projector.project(forward, picks))
        assert results[0].dtype == np.float32 and results[0].shape == (3, 32, 32, 3)
        assert np.abs(results[1]).max() > 0
        np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6, err_msg=layer)


def test_cast_from_bool_is_refused() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["x"], ["y"], name="from_bool", to=1)],
        "bool_input",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.BOOL, ["N", 1, 2, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 2, 2])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 7
    # Refused when the model is loaded or by the Cast rule: never a projection.
    with pytest.raises(OnnxDeconvError, match="BOOL"):
        Projector(model, layer="y", device="cpu")


def test_keras_cli_layers_and_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = DATA / "keras_nhwc.onnx"
    code, out, err = run(["layers", model], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert rows and all(row[-1] == "yes" for row in rows), out
    image = tmp_path / "stripes.png"
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::4] = (255, 0, 0)  # vertical red stripes
    cv2.imwrite(str(image), stripes[..., ::-1])
    # The model's metadata asks for raw pixels; fed NHWC, the stripes stay columns of channel 0.
    fed = load_input(image, load_model(model), Preprocessing(1.0, (0.0,), (1.0,))).array
    assert fed.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(fed[0, :, :, 0], np.tile(stripes[0, :, 0], (32, 1)))
    assert not fed[..., 1:].any()
    code, _, err = run(["project", model, image, "--top", "2", "-o", tmp_path / "p.npy"], capsys)
    assert code == 0, err
    assert "mean [0.0]" in err  # the metadata's preprocessing, not ImageNet's
    assert np.load(tmp_path / "p.npy").shape == (2, 32, 32, 3)
    code, _, err = run(["project", model, image, "--top", "2", "-o", tmp_path / "p.png"], capsys)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "p.png")) is not None


@pytest.mark.parametrize("name", ["keras_nhwc", "keras_norm", "keras_twin"])
def test_keras_check_adjoint_passes(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check``'s dot-product test on the real export: at every layer the generated graph is the
    adjoint of the frozen forward graph (random weights: the filter checks are off)."""
    config = tmp_path / "check.toml"
    config.write_text('[check.severity]\narchitecture = "off"\nfilters = "off"\n')
    report = tmp_path / "check.json"
    args = ["check", DATA / f"{name}.onnx", "--config", config, "--json", report]
    code, _, err = run(args, capsys)
    assert code == 0, err
    findings = json.loads(report.read_text())["findings"]
    adjoint = [f for f in findings if f["check"] == "faithful.adjoint"]
    assert len(adjoint) >= 10 and all(f["status"] == "pass" for f in adjoint), adjoint


# --------------------------------------------------------------------------------------------
# The cross-framework oracle: a Keras net and its PyTorch twin
# --------------------------------------------------------------------------------------------


class NHWCFlatten(nn.Module):
    """Keras' Flatten of an NHWC map: rows, then columns, then channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class Twin(nn.Module):
    """``make_keras.twin()`` in PyTorch. Keras' SAME padding of a 3x3 stride-2 conv on 20 pixels
    pads 0 before and 1 after, which PyTorch's symmetric ``padding`` cannot say: F.pad does it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-3)
        self.relu2 = nn.ReLU()
        self.flatten = NHWCFlatten()
        self.fc1 = nn.Linear(200, 12)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(F.pad(x, (0, 1, 0, 1)))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


def load_twin() -> Twin:
    """The PyTorch twin with the Keras weights: HWIO kernels become OIHW, Dense [in, out] Linear
    [out, in]."""
    saved = np.load(DATA / "twin_weights.npz")
    net = Twin()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            conv = getattr(net, name)
            conv.weight.copy_(torch.from_numpy(saved[f"{name}.kernel"].transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.from_numpy(saved[f"{name}.bias"]))
        for name in ("fc1", "fc2"):
            linear = getattr(net, name)
            linear.weight.copy_(torch.from_numpy(saved[f"{name}.kernel"].T))
            linear.bias.copy_(torch.from_numpy(saved[f"{name}.bias"]))
        net.bn2.weight.copy_(torch.from_numpy(saved["bn2.gamma"]))
        net.bn2.bias.copy_(torch.from_numpy(saved["bn2.beta"]))
        net.bn2.running_mean.copy_(torch.from_numpy(saved["bn2.moving_mean"]))
        net.bn2.running_var.copy_(torch.from_numpy(saved["bn2.moving_variance"]))
    return net.eval()


#: Twin layers compared with captum (torch module names): the SAME-padded conv before its ReLU,
#: the pool, the rectified conv + BN (folded into the Conv by both tf2onnx and PyTorch), the
#: Dense/Linear layer behind the NHWC flatten, and the logits.
TWIN_LAYERS = ("conv1", "pool1", "relu2", "fc1", "fc2")


class TwinCase:
    """The twin, its two ONNX exports and the tensor of each compared module in each."""

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        self.net = load_twin()
        self.x = np.random.default_rng(3).standard_normal((2, 3, 20, 20)).astype(np.float32)
        self.x_nhwc = np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))
        hooked: dict[str, np.ndarray] = {}
        handles = [
            getattr(self.net, name).register_forward_hook(
                lambda _m, _i, out, name=name: hooked.__setitem__(name, out.detach().numpy())
            )
            for name in TWIN_LAYERS
        ]
        with torch.no_grad():
            self.logits = self.net(torch.from_numpy(self.x)).numpy()
        for handle in handles:
            handle.remove()
        self.activations = hooked
        self.models = {"keras": (prepare(load_model(DATA / "keras_twin.onnx")), self.x_nhwc)}
        # The legacy exporter computes F.pad's pads with a ConstantOfShape/Concat/Reshape chain
        # that the library must fold. (The dynamo exporter, which takes 8 s more here, folds them
        # into the Conv's own pads, as tf2onnx does.)
        path = folder / "twin_torch.onnx"
        self.torch_ops = {
            n.op_type
            for n in export(self.net, torch.from_numpy(self.x[:1]), "legacy", path).graph.node
        }
        self.models["torch"] = (prepare(load_model(path)), self.x)
        #: (export, module) -> (tensor, whether the tensor is NHWC where the module is NCHW).
        self.tensors: dict[tuple[str, str], tuple[str, bool]] = {}
        for export_name, (prepared, x) in self.models.items():
            values = all_tensor_values(prepared.loaded.model, x)
            for module in TWIN_LAYERS:
                self.tensors[export_name, module] = self._find(values, hooked[module])

    @staticmethod
    def _find(values: dict[str, np.ndarray], ref: np.ndarray) -> tuple[str, bool]:
        layouts = [(False, ref)]
        if ref.ndim == 4:
            layouts.append((True, ref.transpose(0, 2, 3, 1)))
        for name, value in values.items():
            for nhwc, want in layouts:
                if value.shape == want.shape and np.allclose(value, want, rtol=1e-4, atol=1e-4):
                    return name, nhwc
        raise LookupError("no ONNX tensor holds this module's output")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> TwinCase:
    return TwinCase(tmp_path_factory.mktemp("twin"))


def test_twin_outputs_agree(twin: TwinCase) -> None:
    """The PyTorch twin computes what the Keras export computes: the weights were moved right."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(DATA / "keras_twin.onnx"), providers=["CPUExecutionProvider"]
    )
    keras_logits = session.run(None, {"image": twin.x_nhwc})[0]
    np.testing.assert_allclose(keras_logits, twin.logits, rtol=1e-4, atol=1e-5)
    # PyTorch pads with a Pad node whose pads are computed in the graph; tf2onnx folds them.
    assert {"Pad", "ConstantOfShape", "Conv"} <= twin.torch_ops


def _twin_selections(twin: TwinCase, module: str) -> list[Selection]:
    """Top-2 channels of each image at their arg-max, from the PyTorch activations (NCHW)."""
    act = twin.activations[module]
    picks = []
    for image in range(len(act)):
        flat = act[image].reshape(act.shape[1], -1)
        for channel in np.argsort(-flat.max(axis=1), kind="stable")[:2]:
            where = np.unravel_index(int(flat[channel].argmax()), act.shape[2:])
            position = tuple(int(i) for i in where)
            value = float(act[(image, int(channel), *position)])
            picks.append(Selection(image, int(channel), position, value))
    return picks


@pytest.mark.parametrize("export_name", ["keras", "torch"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("module", TWIN_LAYERS)
def test_twin_projection_matches_captum(
    twin: TwinCase, module: str, rule: str, export_name: str, record_property: pytest.RecordProperty
) -> None:
    prepared, x = twin.models[export_name]
    tensor, nhwc = twin.tensors[export_name, module]
    projector = Projector(prepared, layer=tensor, rule=rule, device="cpu")  # type: ignore[arg-type]
    forward = projector.forward(x)
    selections = _twin_selections(twin, module)
    assert all(pick.value > 0 for pick in selections), selections
    signal = np.zeros((len(selections), *twin.activations[module].shape[1:]), np.float32)
    for row, pick in enumerate(selections):
        signal[(row, pick.channel, *pick.position)] = pick.value
    if nhwc:
        signal = signal.transpose(0, 2, 3, 1)
    projections = projector.project_signal(forward, signal, [s.image for s in selections])
    if export_name == "keras":
        assert projections.shape == (len(selections), 20, 20, 3)
        projections = projections.transpose(0, 3, 1, 2)
    references = captum_references(twin.net, module, rule, twin.x, selections)
    assert max(float(np.abs(r).max()) for r in references) > 0
    worst = max(relative_error(p, r) for p, r in zip(projections, references, strict=True))
    record_property("relative_error", worst)
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("rule", ["deconvnet", "gradient"])
def test_nhwc_map_is_shown_channels_first(rule: str) -> None:
    """An NHWC map (after tf2onnx's Transpose back) reads and projects like the NCHW one before.

    ``[N, H, W, C]`` comes out of the projector as ``[N, C, H, W]``: channel c at (h, w) of it is
    channel c at (h, w) of the Transpose's NCHW input, so both must give one projection.
    """
    prepared = prepare(load_model(DATA / "keras_nhwc.onnx"))
    producers = {out: node for node in prepared.graph.node for out in node.output}
    nhwc = [
        name
        for name in prepared.channels_first_orders
        if name in prepared.candidates and producers[name].op_type == "Transpose"
    ]
    assert nhwc, "the Keras export has a Transpose back to NHWC"
    layer = nhwc[0]
    before = producers[layer].input[0]
    assert prepared.channels_first_orders[layer] == (0, 3, 1, 2)
    x = keras_input("keras_nhwc")
    results = []
    for name in (layer, before):
        projector = Projector(prepared, layer=name, rule=rule, device="cpu")  # type: ignore[arg-type]
        forward = projector.forward(x)
        picks = projector.strongest(forward, top=3, image=1)
        results.append(
            (projector.layer_shape, forward.activations, picks, projector.project(forward, picks))
        )
    (shape_a, act_a, picks_a, proj_a), (shape_b, act_b, picks_b, proj_b) = results
    assert shape_a == shape_b == tuple(np.asarray(prepared.info[before].per_sample))
    np.testing.assert_array_equal(act_a, act_b)
    assert [(p.channel, p.position) for p in picks_a] == [(p.channel, p.position) for p in picks_b]
    np.testing.assert_allclose(proj_a, proj_b, rtol=1e-5, atol=1e-6 * np.abs(proj_b).max())
    field_a = prepared.receptive_fields[layer].box(picks_a[0].position)
    assert field_a == prepared.receptive_fields[before].box(picks_b[0].position)


def test_export_refuses_an_nhwc_map(tmp_path: Path) -> None:
    from onnxdeconv.export import ExportOptions, export_projector

    prepared = prepare(load_model(DATA / "keras_nhwc.onnx"))
    layer = next(n for n in prepared.channels_first_orders if n in prepared.candidates)
    with pytest.raises(OnnxDeconvError, match="channels-last"):
        export_projector(prepared, ExportOptions(layer=layer))
