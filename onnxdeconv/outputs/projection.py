"""The file of ``project``: the projections as a picture, or as an array."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxdeconv.files import save_npy
from onnxdeconv.inputs import ModelInput
from onnxdeconv.projector import ProjectionCrops, Projector, Selection


def write_projections(
    path: Path,
    projections: ProjectionCrops,
    projector: Projector,
    model_input: ModelInput,
    picks: Sequence[Selection],
    *,
    model: Path,
    input: Path,
) -> None:
    """Write the projections as ``path`` asks: a float32 array (.npy) or a picture (.png).

    Args:
        path: Where to write: a .npy file or a picture.
        projections: One projection per pick, as crops (pasted into whole inputs for .npy).
        projector: The projector that made them, for the picture's labels.
        model_input: The input projected, for the picture.
        picks: What each projection shows.
        model: The model file, named in the picture.
        input: The input file, likewise.
    """
    if path.suffix.lower() == ".npy":
        save_npy(path, projections.paste())
        return
    # matplotlib loads only for pictures, not for a run that writes arrays.
    from onnxdeconv.render import projection_picture, save_figure

    figure = projection_picture(
        projector,
        model_input,
        projections,
        picks,
        input_title=input.name,
        model_name=model.name,
    )
    save_figure(figure, path)
