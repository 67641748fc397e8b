"""The picture of ``project``: each cropped unit's input patch beside its projection."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from conftest import DIGIT_7, DIGITNET

from onnxdeconv import Projector, load_model, prepare
from onnxdeconv.analysis.features import crop_padded, unit_box
from onnxdeconv.inputs import load_input, preprocessing_from_metadata
from onnxdeconv.render.picture import display_projection
from onnxdeconv.render.projection import projection_picture


def test_each_unit_shows_its_input_patch() -> None:
    loaded = load_model(DIGITNET)
    declared = preprocessing_from_metadata(loaded)
    assert declared is not None
    model_input = load_input(DIGIT_7, loaded, declared)
    prepared = prepare(loaded)
    projector = Projector(prepared, "relu2", device="cpu")
    forward = projector.forward(model_input.array)
    picks = projector.strongest(forward, top=2)
    projections = projector.project(forward, picks)
    figure = projection_picture(
        projector, model_input, projections, picks, input_title="7", model_name="digitnet"
    )
    try:
        shown = [axis.images[0].get_array() for axis in figure.axes if axis.images]
        titles = [axis.get_title() for axis in figure.axes if axis.images]
    finally:
        plt.close(figure)
    assert len(shown) == 3
    np.testing.assert_array_equal(shown[0], model_input.display)
    field = prepared.receptive_fields[projector.layer]
    for picture, title, pick, projection in zip(
        shown[1:], titles[1:], picks, projections, strict=True
    ):
        assert pick.position is not None
        box = unit_box(field, pick.position, (28, 28))
        (top, bottom), (left, right) = box
        assert f"patch y{top}:{bottom} x{left}:{right}" in title
        patch = crop_padded(model_input.display, box, 128).astype(np.float32) / 255
        cropped = crop_padded(display_projection(projection), box, 0.5)
        width = right - left
        np.testing.assert_allclose(np.asarray(picture)[:, :width], patch)
        np.testing.assert_allclose(np.asarray(picture)[:, -width:], cropped)
        assert np.asarray(picture).shape[1] > 2 * width  # a gap between the two
