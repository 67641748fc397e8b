"""PaddlePaddle: the text-direction classifier and the text detector of PaddleOCR.

Both ship in the ``rapidocr-onnxruntime`` wheel as paddle2onnx exports (see
``frameworks_fixtures`` for how they are fetched; the recognizer is in ``test_paddle_rec.py``).
``layers`` must mark every tensor projectable or name the node and op that stop it, and
``project`` must succeed from the projectable ones: from an even spread of them here (every one
with ``ONNXDECONV_ALL_LAYERS=1``, about 2 minutes for the three models on 2 cores; CI sets it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from frameworks_fixtures import (
    project_each,
    rapidocr_models,  # noqa: F401 - the fixture
    refused_op,
    spread,
)
from helpers import run

from onnxdeconv import load_model, prepare


def test_direction_classifier(rapidocr_models: dict[str, Path]) -> None:  # noqa: F811
    """MobileNetV3 (HardSigmoid gates, HardSwish as Clip/Div/Mul, squeeze-excitation, BN): every
    tensor up to the logits projects; only the Softmax and the Identity behind it do not."""
    prepared = prepare(load_model(rapidocr_models["cls"]), (3, 48, 192))
    layers = prepared.layers()
    refused = [layer for layer in layers if not layer.projectable]
    assert [layer.op for layer in refused] == ["Softmax", "Identity"]
    assert {refused_op(layer) for layer in refused} == {"Softmax"}
    projectable = [layer for layer in layers if layer.projectable]
    assert len(projectable) == 232
    ops = {layer.op for layer in projectable}
    assert {"Conv", "BatchNormalization", "Clip", "HardSigmoid", "Mul", "Div", "MatMul"} <= ops
    project_each(prepared, spread(projectable, 10))


def test_detector(rapidocr_models: dict[str, Path]) -> None:  # noqa: F811
    """PP-OCRv4 DBNet: backbone, FPN with nearest Resize upsampling, ConvTranspose head and the
    Sigmoid probability map: every tensor projects."""
    prepared = prepare(load_model(rapidocr_models["det"]), (3, 320, 320))
    layers = prepared.layers()
    assert [layer.alias for layer in layers if not layer.projectable] == []
    ops = {layer.op for layer in layers}
    assert {"Conv", "Resize", "ConvTranspose", "Concat", "Sigmoid", "HardSigmoid"} <= ops
    project_each(prepared, spread(layers, 6))


def test_cli_projects_a_paddle_model(
    rapidocr_models: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The dynamic-size classifier through the command line, sized with --size."""
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
    np.save(tmp_path / "line.npy", x)
    out = tmp_path / "p.npy"
    args = ["project", rapidocr_models["cls"], tmp_path / "line.npy", "--size", "48,192"]
    code, _, err = run([*args, "--layer", "hardsigmoid3", "--top", "3", "-o", out], capsys)
    assert code == 0, err
    assert np.load(out).shape == (3, 3, 48, 192)
