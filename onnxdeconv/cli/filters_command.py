"""``onnxdeconv filters``: first-layer diagnostics for choosing an architecture (Fig. 6)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.filters import analyse_filters
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, read_images, written
from onnxdeconv.cli.parse import check_output
from onnxdeconv.graph.load import load_model
from onnxdeconv.outputs import write_json
from onnxdeconv.prepared import prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.filters import filters_figure, filters_table

#: Aliasing scores above this are called high.
ALIASING_THRESHOLD = 0.1


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.images_option("to measure aliasing and never-active filters on")
@options.limit_option
@options.model_options()
@options.output_option("OUT.png; default: MODEL-stem_filters.png")
@options.json_option("the report")
def filters(
    model: Path,
    images: Path | None,
    limit: int | None,
    model_options: options.ModelOptions,
    output: Path | None,
    json_path: Path | None,
) -> None:
    """Diagnose the first convolutional layer, as Zeiler & Fergus did to choose their architecture.

    Reports each filter's energy in low, mid and high frequency bands, dead filters (tiny norm),
    and the aliasing score: the share of energy above the Nyquist limit of the layer's stride. With
    --images the score is measured on the layer's feature maps and filters that never fire are
    listed; without, the score comes from the filters alone. Unreadable images are skipped.

    Example: onnxdeconv filters models/digitnet.onnx --images models/examples
    """
    output = output or Path(f"{model.stem}_filters.png")
    check_output(output, "-o", ".png")
    check_output(json_path, "--json")
    files = find_images(images, limit) if images is not None else []
    loaded = load_model(model)
    prepared = prepare(loaded, model_options.input_shape(loaded))
    batch, bgr = None, False
    if images is not None:
        preprocessing, source = model_options.preprocessing(loaded)
        bgr = preprocessing.bgr
        info(f"preprocessing: {source}: {preprocessing.describe()}")
        batch = read_images(files, loaded, preprocessing, prepared.input_shape, images).batch
    report = analyse_filters(
        prepared, batch, aliasing_threshold=ALIASING_THRESHOLD, device=model_options.device
    )
    if report.provider:
        info(f"running on {report.provider}")
    title = f"{model.name} · first layer {report.layer}"
    figure = filters_figure(report, title=title, bgr=bgr, aliasing_threshold=ALIASING_THRESHOLD)
    save_figure(figure, output)
    if json_path is not None:
        write_json(json_path, report.to_json())
    click.echo(report.verdict)
    click.echo(filters_table(report, 0 if batch is None else len(batch), ALIASING_THRESHOLD))
    written(output, json_path)
