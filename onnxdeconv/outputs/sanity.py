"""The files of ``sanity``: the figure of the cascade, the scores as CSV and JSON."""

from __future__ import annotations

from pathlib import Path

from onnxdeconv.analysis.sanity import CSV_COLUMNS, SanityReport, input_layout
from onnxdeconv.inputs import ModelInput
from onnxdeconv.outputs.tables import OutputPaths, write_csv, write_json
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.render import save_figure
from onnxdeconv.render.sanity import sanity_figure, sanity_text


def write_sanity(
    report: SanityReport,
    model_input: ModelInput,
    paths: OutputPaths,
    *,
    prepared: PreparedModel,
    model: Path,
    image: Path,
    seed: int,
) -> str:
    """Write the figure, and the CSV and JSON ``paths`` ask for; return the text summary.

    Args:
        report: The scores of the cascade.
        model_input: The image the cascade projected, for the figure.
        paths: Where to write.
        prepared: The model, for the layer's alias and the image layout.
        model: The model file, named in the title and the JSON.
        image: The image file, likewise.
        seed: The seed of the random weights, named in the title.
    """
    shown = prepared.alias_of.get(report.layer, report.layer)
    title = (
        f"{model.name} · {image.name} · layer {shown} · cascading randomisation of "
        f"{len(report.layers)} weighted layers, top first (seed {seed})"
    )
    bgr = bool(model_input.preprocessing and model_input.preprocessing.bgr)
    layout = input_layout(prepared)
    figure = sanity_figure(report, model_input.display, layout=layout, bgr=bgr, title=title)
    save_figure(figure, paths.output)
    if paths.csv is not None:
        write_csv(paths.csv, report.rows(), CSV_COLUMNS)
    if paths.json is not None:
        write_json(paths.json, {"model": str(model), "image": str(image), **report.to_json()})
    return sanity_text(report)
