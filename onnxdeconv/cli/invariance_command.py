"""``onnxdeconv invariance``: feature distance and label probability under transforms (Fig. 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from onnxdeconv.analysis import invariance as analysis
from onnxdeconv.analysis.invariance import TRANSFORMS
from onnxdeconv.cli import options, parse
from onnxdeconv.cli.feedback import info, list_skipped, progress
from onnxdeconv.labels import read_labels, resolve_label
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.invariance import write_invariance
from onnxdeconv.render.invariance import Distance


def _default_output(given: dict[str, Any]) -> str:
    kinds = tuple(dict.fromkeys(given["transforms"])) or TRANSFORMS
    return f"invariance_{kinds[0]}.png" if len(kinds) == 1 else "invariance.png"


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("images", nargs=-1, required=True, type=options.PATH)
@click.option(
    "--transform",
    "transforms",
    multiple=True,
    type=click.Choice(analysis.TRANSFORMS),
    help="Transform to sweep; repeat for several (default: all three, one row each).",
)
@options.label_option("each image's prediction")
@options.labels_option
@options.layers_option("bottom, top")
@options.count_option(
    "--steps",
    least=2,
    text="Amounts per sweep (default: 13 shifts, 11 scales, 25 rotations); the identity is added.",
)
@click.option(
    "--range",
    "amount_range",
    metavar="LO,HI",
    help="Sweep range in the transform's unit: pixels, factor or degrees (one --transform only).",
)
@click.option(
    "--border",
    type=click.Choice(analysis.BORDERS),
    default="reflect",
    show_default=True,
    help="How transforms fill pixels from outside the image.",
)
@click.option(
    "--distance",
    type=click.Choice(["relative", "euclidean"]),
    default="relative",
    show_default=True,
    help="Plot ||f(Tx)-f(x)|| divided by ||f(x)||, or the raw Euclidean distance.",
)
@options.model_options()
@options.outputs(
    _default_output,
    "OUT.png; default: invariance_TRANSFORM.png (invariance.png for several).",
    csv_suffix=".csv",
    csv="every value",
)
def invariance(
    model: Path,
    images: tuple[Path, ...],
    transforms: tuple[str, ...],
    label: str | None,
    labels_path: Path | None,
    layers: list[str] | None,
    steps: int | None,
    amount_range: str | None,
    border: analysis.Border,
    distance: Distance,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Measure how features and the prediction change as images are shifted, scaled or rotated.

    Reproduces Fig. 5 of Zeiler & Fergus: each image is transformed at the model's input size
    before preprocessing (bilinear, about the centre, border filled by --border), and for each
    chosen layer the Euclidean distance between the flattened activations of the original and the
    transformed image is plotted against the amount, with the probability of the image's label.
    IMAGES are image files or folders (searched recursively); unreadable ones are skipped.

    Example: onnxdeconv invariance models/digitnet.onnx models/examples --border replicate
    """
    kinds: tuple[str, ...] = tuple(dict.fromkeys(transforms)) or TRANSFORMS
    if amount_range is not None and len(kinds) != 1:
        raise click.UsageError("--range needs exactly one --transform: its unit depends on it")
    bounds = parse.float_range(amount_range, "--range")
    loaded, prepared, preprocessing, how = model_options.load(model)
    names = analysis.chosen_layers(prepared, layers)
    class_names = read_labels(labels_path) if labels_path is not None else loaded.labels
    label_index = resolve_label(label, class_names) if label is not None else None
    read = analysis.read_pictures(images, analysis.model_image_size(prepared))
    list_skipped(read.skipped)
    runner = analysis.invariance_runner(prepared, names, model_options.device)
    info(f"preprocessing: {how}")
    info(f"running on {runner.provider}")
    with progress(len(kinds) * len(read.pictures), "sweeps", "image") as advance:
        results = analysis.sweep_transforms(
            prepared,
            read.pictures,
            preprocessing,
            kinds,
            steps=steps,
            amount_range=bounds,
            layers=names,
            label=label_index,
            border=border,
            runner=runner,
            progress=advance,
        )
    summary = write_invariance(
        results,
        read.names,
        paths,
        prepared=prepared,
        picture=read.pictures[0],
        class_names=class_names,
        border=border,
        distance=distance,
        model_name=model.name,
    )
    click.echo(summary)
