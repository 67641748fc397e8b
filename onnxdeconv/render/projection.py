"""The picture ``onnxdeconv project`` writes: the input, then each projection with its label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from onnxdeconv.analysis.features import crop_padded
from onnxdeconv.inputs import ModelInput
from onnxdeconv.projector import ProjectionCrops, Projector, Selection
from onnxdeconv.render.picture import Panel, display_projection, plain_text, projection_figure


def projection_label(layer: str, pick: Selection, labels: Sequence[str] | None = None) -> str:
    """``<layer> ch <channel> [<class>] @<position>`` and the activation, on two lines."""
    if pick.position is None:
        where = " (whole map)"
    else:
        where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
    name = f" {labels[pick.channel]}" if labels and pick.channel < len(labels) else ""
    return f"{layer} ch {pick.channel}{name}{where}\nact {pick.value:.3g}"


def _field_box(
    box: tuple[tuple[int, int], ...] | None, height: int, width: int
) -> tuple[tuple[int, int], ...] | None:
    """The unit's ``[begin, end)`` box where the part inside the image is under half of it."""
    if box is None or len(box) != 2:
        return None
    (top, bottom), (left, right) = box
    inside = (min(bottom, height) - max(top, 0)) * (min(right, width) - max(left, 0))
    return None if inside >= height * width / 2 else box


def _side_by_side(patch: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The input patch (uint8) and the projection ([0, 1]) in one float picture, a gap between."""
    shown = patch.astype(np.float32) / 255.0
    if shown.ndim != projection.ndim:  # a gray input beside a colour projection, or the reverse
        shown, projection = (np.dstack([a] * 3) if a.ndim == 2 else a for a in (shown, projection))
    gap = np.ones((shown.shape[0], max(1, shown.shape[1] // 16), *shown.shape[2:]), np.float32)
    return np.concatenate([shown, gap, projection], axis=1)


@plain_text
def projection_picture(
    projector: Projector,
    model_input: ModelInput,
    projections: ProjectionCrops | np.ndarray,
    picks: Sequence[Selection],
    *,
    input_title: str,
    model_name: str,
) -> Figure:
    """The input beside each projection, labelled with its layer, channel, class and activation.

    A projection from a position shows only the unit's receptive field where that is under half
    of the input, beside the input patch the unit sees (as the features pages do): deep units see
    a small patch, and Zeiler & Fergus show that patch. Parts of the field past the image border
    are grey (zero in the projection).

    Args:
        projector: The projector that made ``projections``.
        model_input: The input, with the picture of it to show.
        projections: One per pick: crops (:meth:`Projector.project_crops`), or whole
            projections ``[K, *input_shape]``. Where a unit's box is shown, only its crop is
            read; no whole projection is made.
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
    height, width = model_input.display.shape[:2]
    crops = projections if isinstance(projections, ProjectionCrops) else None
    if crops is None:
        crops = ProjectionCrops.whole(np.asarray(projections))
    if len(crops) != len(picks):
        raise ValueError(f"{len(crops)} projections for {len(picks)} picks")
    everything = [(0, size) for size in crops.input_shape]
    for row, pick in enumerate(picks):
        label = projection_label(layer, pick, labels)
        box = _field_box(field.box(pick.position) if pick.position else None, height, width)
        # Zero is mid-grey, inside the box past the image's borders too.
        if box is None:
            values = crops.region(row, everything)
        else:
            values = crops.cut(row, box, model_input.layout)
        picture = display_projection(values, model_input.layout, bgr)
        if box is not None:
            patch = crop_padded(model_input.display, box, 128)
            picture = _side_by_side(patch, picture)
            (top, bottom), (left, right) = box
            label += f" · patch y{top}:{bottom} x{left}:{right}"
        panels.append(Panel(picture, label))
    title = f"{model_name} · layer {layer} · rule {projector.rule}"
    return projection_figure(panels, title)
