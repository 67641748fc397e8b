"""A negative unit projects as ``a · deconv(1)``: captum's Neuron* attribution times ``a``."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from oracle_nets import captum_references
from torch import nn

from onnxdeconv import Projector, load_model
from onnxdeconv.export import ExportOptions, export_projector

X = np.array([[[[2.0, 0.5], [0.25, 0.125]]]], np.float32)
#: By hand: the unit y[0, 0, 0, 0] = -relu(2) = -2. Under deconvnet and guided, the unit's
#: gradient -1 through Conv(-1) is clipped by the ReLU, so captum's attribution is 0 (times -2:
#: 0). Under gradient the ReLU is open at x = 2: d y / d x[0, 0] = -1, times -2 gives 2.
EXPECTED = {
    "deconvnet": [[[[0.0, 0.0], [0.0, 0.0]]]],
    "guided": [[[[0.0, 0.0], [0.0, 0.0]]]],
    "gradient": [[[[2.0, 0.0], [0.0, 0.0]]]],
}


def negating_model() -> onnx.ModelProto:
    """``y = Conv(-1)(Relu(Conv(1)(x)))``: 1 channel, 2x2, 1x1 convs without bias."""
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c1"]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["y"]),
        ],
        "negating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
        [
            numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w1"),
            numpy_helper.from_array(-np.ones((1, 1, 1, 1), np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


class Negating(nn.Module):
    """The same net in PyTorch, for captum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
            self.conv2.weight.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
def test_negative_unit_equals_captum_times_activation(rule: str) -> None:
    projector = Projector(load_model(negating_model()), layer="y", rule=rule, device="cpu")  # type: ignore[arg-type]
    forward = projector.forward(X)
    pick = projector.strongest(forward, channel=0, position=(0, 0))
    assert pick[0].value == -2.0
    projection = projector.project(forward, pick)
    reference = captum_references(Negating().eval(), "conv2", rule, X, pick)
    np.testing.assert_allclose(reference, EXPECTED[rule], atol=1e-7)
    np.testing.assert_allclose(projection, EXPECTED[rule], atol=1e-7)
    # The dense path (the windowed one above) and an arbitrary signal: sent as given.
    dense = projector.project_signal(forward, projector.signal(forward, pick))
    np.testing.assert_allclose(projector.signs(forward, pick)[0] * dense, EXPECTED[rule])
    signed = np.zeros((1, 1, 2, 2), np.float32)
    signed[0, 0, 0, 0] = -2.0
    as_given = projector.project_signal(forward, signed)
    if rule == "gradient":
        np.testing.assert_allclose(as_given, EXPECTED[rule])
    else:  # the signed value through the first rectifier: relu(-2 · -1) = 2 reaches x[0, 0]
        np.testing.assert_allclose(as_given, [[[[2.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
def test_exported_graph_signs_a_negative_unit(rule: str) -> None:
    model = negating_model()
    exported = export_projector(
        load_model(model),
        ExportOptions(layer="y", rule=rule, position_input=True, batch=True),  # type: ignore[arg-type]
    )
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    positions = np.array([[0, 0], [0, 1], [1, 1]], np.int64)
    projection, activation = session.run(
        ["projection", "activation"],
        {"x": X, "channel": np.zeros(3, np.int64), "position": positions},
    )
    projector = Projector(load_model(model), layer="y", rule=rule, device="cpu")  # type: ignore[arg-type]
    forward = projector.forward(X)
    picks = [projector.strongest(forward, channel=0, position=tuple(p))[0] for p in positions]
    np.testing.assert_array_equal(activation, [p.value for p in picks])
    assert all(p.value < 0 for p in picks)
    np.testing.assert_array_equal(projection, projector.project(forward, picks))
    np.testing.assert_allclose(projection[0], EXPECTED[rule][0])
