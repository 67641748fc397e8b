"""The picture ``onnxdeconv project`` writes: the input, then each projection with its label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from onnxdeconv.inputs import ModelInput
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.render.picture import Panel, display_projection, projection_figure


def projection_label(layer: str, pick: Selection, labels: Sequence[str] | None = None) -> str:
    """``<layer> ch <channel> [<class>] @<position>`` and the activation, on two lines."""
    if pick.position is None:
        where = " (whole map)"
    else:
        where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
    name = f" {labels[pick.channel]}" if labels and pick.channel < len(labels) else ""
    return f"{layer} ch {pick.channel}{name}{where}\nact {pick.value:.3g}"


def _crop_to_field(
    picture: np.ndarray, box: tuple[tuple[int, int], ...] | None
) -> tuple[np.ndarray, str]:
    """The part of ``picture`` a unit sees, where that is under half of it; and a label suffix."""
    if box is None or len(box) != 2:
        return picture, ""
    (top, bottom), (left, right) = box
    height, width = picture.shape[:2]
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height), min(right, width)
    if (bottom - top) * (right - left) >= height * width / 2:
        return picture, ""
    return picture[top:bottom, left:right], f" · crop y{top}:{bottom} x{left}:{right}"


def projection_picture(
    projector: Projector,
    model_input: ModelInput,
    projections: np.ndarray,
    picks: Sequence[Selection],
    *,
    input_title: str,
    model_name: str,
) -> Figure:
    """The input beside each projection, labelled with its layer, channel, class and activation.

    A projection from a position shows only the unit's receptive field where that is under half
    of the input: deep units see a small patch, and Zeiler & Fergus show that patch.

    Args:
        projector: The projector that made ``projections``.
        model_input: The input, with the picture of it to show.
        projections: ``[K, *input_shape]``, one per pick.
        picks: What each projection started from.
        input_title: Title of the input's panel (its file name).
        model_name: The model's name, for the figure's title.
    """
    prepared = projector.prepared
    alias = prepared.alias_of.get(projector.layer)
    layer = alias or projector.layer
    loaded = prepared.loaded
    outputs = [output.name for output in loaded.model.graph.output]
    labels = loaded.labels if projector.layer in outputs else None
    field = prepared.receptive_fields[projector.layer]
    bgr = bool(model_input.preprocessing and model_input.preprocessing.bgr)
    panels = [Panel(model_input.display, input_title)]
    for projection, pick in zip(projections, picks, strict=True):
        picture = display_projection(projection, model_input.layout, bgr)
        box = field.box(pick.position) if pick.position else None
        picture, crop = _crop_to_field(picture, box)
        panels.append(Panel(picture, projection_label(layer, pick, labels) + crop))
    title = f"{model_name} · layer {layer} · rule {projector.rule}"
    return projection_figure(panels, title)
