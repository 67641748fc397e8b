"""Units at a ReLU6 bound project to zero (gradient, guided): the default choice skips them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv import Projector, load_model
from onnxdeconv.prepared import prepare

#: Channel 0 is x, channel 1 is x / 2, both through Clip(0, 6): channel 0 saturates at (0, 0).
X = np.array([[[[10.0, 3.0], [1.0, 0.5]]]], np.float32)


def relu6_model(form: str = "clip") -> onnx.ModelProto:
    """``Clip(Conv(x), 0, 6)`` (or ``Min(Relu(Conv(x)), 6)``), 1x1 conv to 2 channels."""
    weight = numpy_helper.from_array(np.array([1.0, 0.5], np.float32).reshape(2, 1, 1, 1), "w")
    low = numpy_helper.from_array(np.array(0.0, np.float32), "low")
    high = numpy_helper.from_array(np.array(6.0, np.float32), "high")
    if form == "clip":
        nodes = [helper.make_node("Clip", ["c", "low", "high"], ["y"])]
    else:
        nodes = [
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Min", ["r", "high"], ["y"]),
        ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), *nodes],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
        [weight, low, high],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("form", ["clip", "min"])
def test_upper_bound_from_the_producer(form: str) -> None:
    prepared = prepare(load_model(relu6_model(form)))
    assert prepared.upper_bound("y") == 6.0
    assert prepared.upper_bound("c") is None


def test_strongest_skips_saturated_units(caplog: pytest.LogCaptureFixture) -> None:
    projector = Projector(relu6_model(), layer="y", rule="guided", device="cpu")
    forward = projector.forward(X)
    assert projector.saturation_bound == 6.0
    with caplog.at_level(logging.INFO, logger="onnxdeconv.projector"):
        picks = projector.strongest(forward, top=1)
    # Channel 0's maximum 6 is saturated; its next unit (3) is weaker than channel 1's 5.
    assert [(p.channel, p.position, p.value) for p in picks] == [(1, (0, 0), 5.0)]
    assert projector.skipped_saturated == 1
    assert "skipped 1 saturated units" in caplog.text
    assert np.abs(projector.project(forward, picks)).max() > 0

    (own,) = projector.strongest(forward, channel=0)
    assert (own.position, own.value) == ((0, 1), 3.0)

    both = projector.strongest(forward, top=2, skip_saturated=False)
    assert [(p.channel, p.position, p.value) for p in both] == [(0, (0, 0), 6.0), (1, (0, 0), 5.0)]
    assert projector.skipped_saturated == 0
    # Why they are skipped: the saturated unit's guided projection is all zero.
    assert np.abs(projector.project(forward, both[:1])).max() == 0


def test_project_command_says_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "relu6.onnx"
    onnx.save(relu6_model(), model)
    image = tmp_path / "x.npy"
    np.save(image, X)
    out = tmp_path / "p.npy"
    code, _, err = run(["project", model, image, "--layer", "y", "-o", out], capsys)
    assert code == 0, err
    assert "skipped 1 saturated units (at the bound 6 of layer y)" in err
    expected = Projector(relu6_model(), layer="y", device="cpu")
    forward = expected.forward(X)
    np.testing.assert_array_equal(
        np.load(out), expected.project(forward, expected.strongest(forward))
    )
    code, _, err = run(["project", model, image, "--layer", "y", "--saturated", "-o", out], capsys)
    assert code == 0, err
    assert "saturated" not in err
    saturated = expected.strongest(forward, skip_saturated=False)
    np.testing.assert_array_equal(np.load(out), expected.project(forward, saturated))
