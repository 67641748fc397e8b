"""The real ImageNet SqueezeNet 1.1 (Caffe origin, fp16, IR 3, opset 7) from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxdeconv import Projector, load_model, prepare
from onnxdeconv.inputs import PRESETS, load_input


@pytest.fixture(scope="module")
def prepared(squeezenet_path: Path):  # type: ignore[no-untyped-def]
    return prepare(load_model(squeezenet_path))


@pytest.fixture(scope="module")
def kitten(prepared, images_dir: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    return load_input(images_dir / "kitten_224.png", prepared.loaded, PRESETS["caffe"]).array


def test_kitten_is_a_tabby(prepared, kitten: np.ndarray, squeezenet_path: Path) -> None:  # type: ignore[no-untyped-def]
    projector = Projector(prepared)  # the deepest projectable layer: the class scores
    forward = projector.forward(kitten)
    best = projector.strongest(forward, top=1)[0]
    labels = (squeezenet_path.parent / "Labels.txt").read_text().splitlines()
    assert "tabby" in labels[best.channel]


def test_every_layer_projects(prepared, kitten: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    layers = prepared.layers()
    projectable = [layer for layer in layers if layer.projectable]
    refused = [layer for layer in layers if not layer.projectable]
    # Only the softmax (and the reshape the opset upgrade put after it) lie beyond the rules.
    assert {layer.op for layer in refused} == {"Softmax", "Reshape"}
    assert all("Softmax" in layer.reason for layer in refused)
    assert len(projectable) == len(layers) - 2
    for layer in projectable:
        projector = Projector(prepared, layer=layer.name, device="cpu")
        forward = projector.forward(kitten)
        pick = projector.strongest(forward, top=1)[0]
        projection = projector.project(forward, [pick])[0]
        assert projection.shape == (3, 224, 224), layer.name
        assert np.isfinite(projection).all(), layer.name
        assert np.abs(projection).max() > 0, layer.name
        box = layer.receptive_field.box(pick.position) if pick.position else None
        if box is not None:
            # A single activation can only come from pixels inside its receptive field.
            inside = np.zeros((224, 224), bool)
            (top, bottom), (left, right) = box
            inside[max(top, 0) : bottom, max(left, 0) : right] = True
            assert not np.abs(projection).sum(axis=0)[~inside].any(), layer.name


def test_guided_and_gradient_on_deep_layer(prepared, kitten: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    results = {}
    for rule in ("deconvnet", "guided", "gradient"):
        projector = Projector(prepared, layer="relu18", rule=rule)  # type: ignore[arg-type]
        forward = projector.forward(kitten)
        picks = projector.strongest(forward, top=4)
        results[rule] = projector.project(forward, picks)
    # The three rules treat rectifiers differently, so they must give different projections.
    assert not np.allclose(results["guided"], results["deconvnet"])
    assert not np.allclose(results["guided"], results["gradient"])
