"""``onnxdeconv filters``: first-layer diagnostics for choosing an architecture (Fig. 6)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from onnxdeconv.analysis.filters import BAND_NAMES, FilterReport, analyse_filters
from onnxdeconv.cli import options
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.prepared import prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.filters import filters_figure

CONTEXT = options.CONTEXT
#: Aliasing scores above this are called high.
ALIASING_THRESHOLD = 0.1


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="Folder of images (searched recursively) to measure aliasing and never-active filters on.",
)
@options.preset_option
@click.option("--limit", type=click.IntRange(min=1), help="Use at most N images (sorted by path).")
@options.size_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png; default: MODEL-stem_filters.png",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON."
)
def filters(
    model: Path,
    images: Path | None,
    preset: str | None,
    limit: int | None,
    size: str | None,
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
    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"'{output}' must end in .png", param_hint="-o")
    for path, hint in ((output, "-o"), (json_path, "--json")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise click.BadParameter(
                f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
            )
    files = options.image_files(images, limit) if images is not None else []
    loaded = load_model(model)
    input_shape = options.input_shape_for(loaded, options.int_pair(size, "--size"))
    prepared = prepare(loaded, input_shape)
    batch: np.ndarray | None = None
    bgr = False
    if images is not None:
        preprocessing, source = options.resolve_preprocessing(
            loaded, preset, None, None, None, False
        )
        bgr = preprocessing.bgr
        click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
        batch, _ = options.load_images(files, loaded, preprocessing, prepared.input_shape, images)
    report = analyse_filters(prepared, batch, aliasing_threshold=ALIASING_THRESHOLD)
    title = f"{model.name} · first layer {report.layer}"
    figure = filters_figure(report, title=title, bgr=bgr, aliasing_threshold=ALIASING_THRESHOLD)
    save_figure(figure, output)
    if json_path is not None:
        with atomic_path(json_path) as temp:
            temp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    click.echo(report.verdict)
    click.echo(_table(report, 0 if batch is None else len(batch)))
    click.echo(str(output))
    if json_path is not None:
        click.echo(str(json_path))


def _indices(values: list[int] | None, count: int, images: int) -> str:
    if values is None:
        return "not measured (give --images)"
    if not values:
        return "none" if images == 0 else f"none (on {images} images)"
    shown = ", ".join(map(str, values[:12])) + (", ..." if len(values) > 12 else "")
    where = f" (on {images} images)" if images else ""
    return f"{len(values)} of {count}: {shown}{where}"


def _table(report: FilterReport, images: int) -> str:
    count, channels = report.weights.shape[:2]
    kernel = "x".join(map(str, report.kernel))
    stride = "x".join(map(str, report.stride))
    coverage = "  ".join(
        f"{name} {value:.2f}" for name, value in zip(BAND_NAMES, report.coverage, strict=True)
    )
    rows = [
        ("layer", f"{report.layer} ({count} filters {channels}x{kernel}, stride {stride})"),
        ("dead filters", _indices(report.dead, count, 0)),
        ("never active", _indices(report.never_active, count, images)),
        ("coverage", coverage),
        (
            "aliasing",
            f"{report.aliasing:.3f} (from {report.aliasing_source}; "
            f"threshold {ALIASING_THRESHOLD:g})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
