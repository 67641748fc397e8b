"""PaddlePaddle: the PP-OCRv4 text recognizer (PaddleOCR, paddle2onnx), from the
``rapidocr-onnxruntime`` wheel (see ``frameworks_fixtures``).

Its convolutional backbone projects, and so does the LayerNorm that opens its SVTR neck. The
attention after it splits heads with a Transpose that moves the batch axis, then multiplies two
image-dependent tensors (MatMul) and takes a Softmax: no transpose rule applies there, so every
tensor from there on must be refused, naming the node and op. ``project`` runs from an even spread
of the projectable tensors (every one with ``ONNXDECONV_ALL_LAYERS=1``).
"""

from __future__ import annotations

from pathlib import Path

from frameworks_fixtures import (
    project_each,
    rapidocr_models,  # noqa: F401 - the fixture
    refused_op,
    spread,
)

from onnxdeconv import load_model, prepare

#: The backbone: the tensors before the neck's first LayerNorm (its ReduceMean is tensor 279).
BACKBONE = 279
#: Ops a refusal may name: the attention's head split and merge, its MatMul of two
#: image-dependent tensors and Softmax, and (while no rule covers them) the LayerNorm's Pow, Sqrt
#: and division by a statistic of the image.
NECK_OPS = {"Transpose", "Slice", "Squeeze", "MatMul", "Softmax", "Pow", "Sqrt", "Div"}


def test_recognizer(rapidocr_models: dict[str, Path]) -> None:  # noqa: F811
    prepared = prepare(load_model(rapidocr_models["rec"]), (3, 48, 320))
    layers = prepared.layers()
    assert layers[BACKBONE].op == "ReduceMean"
    flags = [layer.projectable for layer in layers]
    first_refused = flags.index(False)
    assert first_refused >= BACKBONE, layers[first_refused]
    assert not any(flags[first_refused:]), "the projectable tensors are a prefix of the graph"
    assert {refused_op(layer) for layer in layers[first_refused:]} <= NECK_OPS
    projectable = layers[:first_refused]
    ops = {layer.op for layer in projectable}
    assert {"Conv", "BatchNormalization", "HardSigmoid", "AveragePool", "ReduceMean"} <= ops
    project_each(prepared, spread(projectable, 8))
