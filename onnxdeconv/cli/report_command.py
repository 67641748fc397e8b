"""``onnxdeconv report``: one self-contained HTML page with the analyses that apply to a model."""

from __future__ import annotations

import time
from pathlib import Path

import click

from onnxdeconv.analysis.report import (
    ANALYSES,
    DEFAULT_LAYERS,
    INVARIANCE_IMAGES,
    build_report,
    report_layers,
)
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, output_folder, progress, read_images
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.engines import engine_named
from onnxdeconv.inputs import read_image
from onnxdeconv.labels import read_labels
from onnxdeconv.outputs.report import write_report


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.images_option("to analyse", required=True)
@options.labels_option
@options.layers_option(f"up to {DEFAULT_LAYERS} rectified layers spread over the depth")
@options.limit_option
@options.count_option(
    "--show", default=3, text="Images whose projections are shown for each layer."
)
@options.count_option("--top", default=4, text="Strongest channels projected per image and layer.")
@options.rule_option
@options.engine_options
@options.model_options()
@options.output_option("Folder to write index.html into (created if missing); default: report.")
def report(
    model: Path,
    images: Path,
    labels_path: Path | None,
    layers: list[str] | None,
    limit: int | None,
    show: int,
    top: int,
    rule: Rule,
    engine: str,
    address: str | None,
    gpus_per_worker: float,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Write one self-contained HTML page that shows a model layer by layer.

    The page (OUTPUT/index.html) holds the model summary, the table of layers, the predictions on
    the images, the first-layer filter diagnostics, the occlusion maps of the first image, the
    feature invariance under rotation, and for each chosen layer the projections of the
    strongest channels on the first images, each beside the image patch its unit sees. Every
    picture is embedded, so the page opens from disk with no server. An analysis that does not
    apply to the model becomes a note on the page; unreadable images are skipped. With
    --engine ray each layer's projections run in a Ray task of their own (same page).

    Example: onnxdeconv report models/digitnet.onnx --images models/examples -o report
    """
    started = time.monotonic()
    chosen_engine = engine_named(engine, address=address, gpus_per_worker=gpus_per_worker)
    files = find_images(images, limit)
    folder = output_folder(output or Path("report"))
    loaded, prepared, preprocessing, how = model_options.load(model)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    chosen = report_layers(prepared, layers)
    info(f"preprocessing: {how}")
    found = read_images(files, prepared, preprocessing, images)
    # The invariance curves transform the pictures before preprocessing.
    pictures = [read_image(images / name) for name in found.names[:INVARIANCE_IMAGES]]
    sections = len(ANALYSES) + len(chosen)
    with progress(sections, "report", "section") as advance:
        result = build_report(
            prepared,
            found.batch,
            found.names,
            labels=labels,
            layers=chosen,
            top=top,
            show=show,
            pictures=pictures,
            preprocessing=preprocessing,
            rule=rule,
            device=model_options.device,
            progress=advance,
            mapper=None if chosen_engine is None else chosen_engine.map,
        )
    info(f"running on {result.provider}")
    for key, note in result.notes.items():
        info(f"{prepared.alias_of.get(key, key)}: not shown: {note}")
    target = write_report(
        folder,
        result,
        prepared,
        found.inputs,
        model=model,
        preprocessing=how,
        images=f"{len(found.inputs)} of {len(files)} from {images}",
        skipped=[f"{name}: {reason}" for name, reason in found.skipped],
        started=started,
    )
    info(f"{sections} sections in {time.monotonic() - started:.1f} s")
    click.echo(str(target))
