"""``onnxdeconv report``: one self-contained HTML page with the analyses that apply to a model."""

from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from onnxdeconv.analysis.report import (
    ANALYSES,
    DEFAULT_LAYERS,
    INVARIANCE_IMAGES,
    build_report,
    report_layers,
)
from onnxdeconv.cli import options
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import read_image
from onnxdeconv.labels import read_labels
from onnxdeconv.outputs.report import write_report
from onnxdeconv.prepared import prepare

CONTEXT = options.CONTEXT


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of images (searched recursively) to analyse.",
)
@options.labels_option
@click.option(
    "--layers",
    help=f"Comma-separated tensor names or aliases to project; default: up to {DEFAULT_LAYERS} "
    "rectified layers spread over the depth.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use at most N images (sorted by path).")
@click.option(
    "--show",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Images whose projections are shown for each layer.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Strongest channels projected per image and layer.",
)
@options.model_options()
@options.output_option("Folder to write index.html into (created if missing); default: report.")
def report(
    model: Path,
    images: Path,
    labels_path: Path | None,
    layers: str | None,
    limit: int | None,
    show: int,
    top: int,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Write one self-contained HTML page that shows a model layer by layer.

    The page (OUTPUT/index.html) holds the model summary, the table of layers, the predictions on
    the images, the first-layer filter diagnostics, the occlusion maps of the first image, the
    feature invariance under rotation, and for each chosen layer the projections of the
    strongest channels on the first images, each beside the image patch its unit sees. Every
    picture is embedded, so the page opens from disk with no server. An analysis that does not
    apply to the model becomes a note on the page; unreadable images are skipped.

    Example: onnxdeconv report models/digitnet.onnx --images models/examples -o report
    """
    started = time.monotonic()
    files = options.image_files(images, limit)
    folder = _output_folder(output or Path("report"))
    loaded = load_model(model)
    prepared = prepare(loaded, model_options.input_shape(loaded))
    preprocessing, source = model_options.preprocessing(loaded)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    wanted = [name.strip() for name in layers.split(",") if name.strip()] if layers else None
    chosen = report_layers(prepared, wanted)
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    found = options.read_images(files, loaded, preprocessing, prepared.input_shape, images)
    # The invariance curves transform the pictures before preprocessing.
    pictures = [read_image(images / name) for name in found.names[:INVARIANCE_IMAGES]]
    sections = len(ANALYSES) + len(chosen)
    with tqdm(total=sections, desc="report", unit="section", leave=False, disable=None) as bar:
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
            device=model_options.device,
            progress=bar.update,
        )
    click.echo(f"running on {result.provider}", err=True)
    aliases = prepared.alias_of
    for key, note in result.notes.items():
        click.echo(f"{aliases.get(key, key)}: not shown: {note}", err=True)
    target = write_report(
        folder,
        result,
        prepared,
        found.inputs,
        model=model,
        preprocessing=f"{source}: {preprocessing.describe()}",
        images=f"{len(found.inputs)} of {len(files)} from {images}",
        skipped=found.skipped,
        started=started,
    )
    click.echo(f"{sections} sections in {time.monotonic() - started:.1f} s", err=True)
    click.echo(str(target))


def _output_folder(output: Path) -> Path:
    if output.exists() and not output.is_dir():
        raise click.BadParameter(
            f"'{output}' is a file: give a folder for index.html", param_hint="-o"
        )
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise click.BadParameter(
            f"the folder above '{output}' does not exist: create it first", param_hint="-o"
        )
    output.mkdir(exist_ok=True)
    return output
