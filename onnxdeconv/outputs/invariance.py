"""The files of ``invariance``: the curves (Zeiler & Fergus Fig. 5), and every value as CSV."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxdeconv.analysis.invariance import CSV_COLUMNS, Border, InvarianceCurves
from onnxdeconv.outputs.tables import OutputPaths, write_csv
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.render import save_figure
from onnxdeconv.render.invariance import Distance, examples_for, invariance_figure, layer_titles


def write_invariance(
    results: Sequence[InvarianceCurves],
    names: Sequence[str],
    paths: OutputPaths,
    *,
    prepared: PreparedModel,
    picture: np.ndarray,
    class_names: Sequence[str] | None = None,
    border: Border = "reflect",
    distance: Distance = "relative",
    model_name: str = "",
) -> str:
    """Write the figure, and the CSV ``paths`` ask for; return one summary line per sweep.

    Args:
        results: One set of curves per transform, over the same layers.
        names: The images' names, one per picture swept.
        paths: Where to write.
        prepared: The model, for the layers' titles.
        picture: The picture the figure shows transformed (the first image).
        class_names: The class names (None: indices).
        border: How the transforms filled pixels from outside the image.
        distance: Plot the relative or the raw Euclidean distance.
        model_name: The model, named in the title.
    """
    layers = list(results[0].layers) if results else []
    figure = invariance_figure(
        results,
        names,
        layer_titles=layer_titles(prepared, layers),
        class_names=class_names,
        examples=examples_for(results, picture, border),
        distance=distance,
        title=f"{model_name} · invariance of features and prediction ({border} border)",
    )
    save_figure(figure, paths.output)
    if paths.csv is not None:
        rows = [row for curves in results for row in curves.rows(names)]
        write_csv(paths.csv, rows, CSV_COLUMNS)
    return "\n".join(curves.summary() for curves in results)
