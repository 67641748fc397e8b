"""``onnxdeconv filters``: first-layer diagnostics for choosing an architecture (Fig. 6)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.filters import analyse_filters
from onnxdeconv.analysis.report import ALIASING_THRESHOLD
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, progress, read_images
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.filters import write_filters


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.images_option("to measure aliasing and never-active filters on")
@options.limit_option
@options.model_options()
@options.outputs("{model.stem}_filters.png", json="the report")
def filters(
    model: Path,
    images: Path | None,
    limit: int | None,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Diagnose the first convolutional layer, as Zeiler & Fergus did to choose their architecture.

    Reports each filter's energy in low, mid and high frequency bands, dead filters (tiny norm),
    and the aliasing score: the share of energy above the Nyquist limit of the layer's stride. With
    --images the score is measured on the layer's feature maps and filters that never fire are
    listed; without, the score comes from the filters alone. Unreadable images are skipped and
    listed.

    Example: onnxdeconv filters models/digitnet.onnx --images models/examples
    """
    files = find_images(images, limit) if images is not None else []
    prepared = model_options.prepared(model)
    batch, bgr, skipped = None, False, []
    if images is not None:
        preprocessing, how = model_options.preprocessing(prepared.loaded)
        bgr = preprocessing.bgr
        info(f"preprocessing: {how}")
        found = read_images(files, prepared, preprocessing, images)
        batch, skipped = found.batch, found.skipped
    with progress(0 if batch is None else len(batch), "first layer", "img") as advance:
        report = analyse_filters(
            prepared,
            batch,
            aliasing_threshold=ALIASING_THRESHOLD,
            device=model_options.device,
            progress=advance,
        )
    if report.provider:
        info(f"running on {report.provider}")
    images_seen = 0 if batch is None else len(batch)
    click.echo(write_filters(report, paths, model.name, images_seen, bgr, skipped))
