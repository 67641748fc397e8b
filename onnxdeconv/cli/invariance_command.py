"""``onnxdeconv invariance``: feature distance and label probability under transforms (Fig. 5)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import click
import numpy as np
from tqdm import tqdm

from onnxdeconv.analysis.invariance import (
    BORDERS,
    IDENTITY,
    TRANSFORMS,
    Border,
    FeatureReader,
    InvarianceCurves,
    TransformKind,
    invariance_curves,
    model_image_size,
    sweep,
    transform_image,
)
from onnxdeconv.analysis.layers import invariance_layers
from onnxdeconv.cli import options
from onnxdeconv.errors import InputError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import IMAGE_SUFFIXES, fit_image, read_image
from onnxdeconv.labels import read_labels, resolve_label
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.invariance import Distance, invariance_figure
from onnxdeconv.runtime import Device, provider_of

CONTEXT = options.CONTEXT
#: Transformed copies of the first image shown in each row of the picture.
EXAMPLES = 5
CSV_COLUMNS = (
    "image",
    "transform",
    "parameter",
    "layer",
    "tensor",
    "distance",
    "relative_distance",
    "probability",
    "label",
)


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--transform",
    "transforms",
    multiple=True,
    type=click.Choice(TRANSFORMS),
    help="Transform to sweep; repeat for several (default: all three, one row each).",
)
@click.option(
    "--label",
    help="Class whose probability is plotted: an index or a class name (default: each original "
    "image's predicted class).",
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(path_type=Path),
    help="Class names file (one per line, or 'index,name' lines) for models without labels.",
)
@click.option(
    "--layers", help="Comma-separated tensor names or aliases (default: bottom and top layers)."
)
@click.option(
    "--steps",
    type=click.IntRange(min=2),
    help="Amounts per sweep (default: 13 shifts, 11 scales, 25 rotations); the identity is added.",
)
@click.option(
    "--range",
    "amount_range",
    metavar="LO,HI",
    help="Sweep range in the transform's unit: pixels, factor or degrees (one --transform only).",
)
@click.option(
    "--border",
    type=click.Choice(BORDERS),
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
@options.preset_option
@options.size_option
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png; default: invariance_TRANSFORM.png (invariance.png for several).",
)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Also write every value as CSV."
)
def invariance(
    model: Path,
    images: tuple[Path, ...],
    transforms: tuple[str, ...],
    label: str | None,
    labels_file: Path | None,
    layers: str | None,
    steps: int | None,
    amount_range: str | None,
    border: str,
    distance: str,
    preset: str | None,
    size: str | None,
    device: str,
    output: Path | None,
    csv_path: Path | None,
) -> None:
    """Measure how features and the prediction change as images are shifted, scaled or rotated.

    Reproduces Fig. 5 of Zeiler & Fergus: each image is transformed at the model's input size
    before preprocessing (bilinear, about the centre, border filled by --border), and for each
    chosen layer the Euclidean distance between the flattened activations of the original and the
    transformed image is plotted against the amount, with the probability of the image's label.
    IMAGES are image files or folders (searched recursively); unreadable ones are skipped.

    Example: onnxdeconv invariance models/digitnet.onnx models/examples --border replicate
    """
    kinds = cast(tuple[TransformKind, ...], tuple(dict.fromkeys(transforms)) or TRANSFORMS)
    if output is None:
        output = Path(f"invariance_{kinds[0]}.png" if len(kinds) == 1 else "invariance.png")
    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"'{output}' must end in .png", param_hint="-o")
    if csv_path is not None and csv_path.suffix.lower() != ".csv":
        raise click.BadParameter(f"'{csv_path}' must end in .csv", param_hint="--csv")
    for path, hint in ((output, "-o"), (csv_path, "--csv")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise click.BadParameter(
                f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
            )
    low_high = _range(amount_range, kinds)
    loaded = load_model(model)
    prepared = prepare(loaded, options.input_shape_for(loaded, options.int_pair(size, "--size")))
    preprocessing, source = options.resolve_preprocessing(loaded, preset, None, None, None, False)
    names = (
        [prepared.resolve(n.strip()) for n in layers.split(",") if n.strip()]
        if layers
        else invariance_layers(prepared)
    )
    if not names:
        raise click.BadParameter("give at least one layer, e.g. relu1,relu3", param_hint="--layers")
    class_names = read_labels(labels_file) if labels_file is not None else loaded.labels
    label_index = resolve_label(label, class_names) if label is not None else None
    size_hw = model_image_size(prepared)
    pictures, picture_names = _read_images(images, size_hw)
    reader = FeatureReader(prepared, names, cast(Device, device))
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    click.echo(f"running on {provider_of(reader.session)}", err=True)
    results: list[InvarianceCurves] = []
    examples: dict[str, list[tuple[float, np.ndarray]]] = {}
    with tqdm(total=len(kinds) * len(pictures), unit="image", disable=None) as bar:
        for kind in kinds:
            amounts = sweep(kind, size_hw[0], steps, *low_high)
            results.append(
                invariance_curves(
                    prepared,
                    pictures,
                    preprocessing,
                    kind,
                    amounts,
                    label=label_index,
                    border=cast(Border, border),
                    reader=reader,
                    progress=bar.update,
                )
            )
            shown = np.unique(np.linspace(0, len(amounts) - 1, EXAMPLES).round().astype(int))
            examples[kind] = [
                (
                    float(amounts[i]),
                    transform_image(pictures[0], kind, float(amounts[i]), cast(Border, border)),
                )
                for i in shown
            ]
    aliases = {tensor: alias for alias, tensor in prepared.aliases.items()}
    titles = {name: _layer_title(prepared, name, aliases) for name in names}
    figure = invariance_figure(
        results,
        picture_names,
        layer_titles=titles,
        class_names=class_names,
        examples=examples,
        distance=cast(Distance, distance),
        title=f"{model.name} · invariance of features and prediction ({border} border)",
    )
    save_figure(figure, output)
    if csv_path is not None:
        write_csv(csv_path, results, picture_names, aliases)
    for curves in results:
        click.echo(_summary(curves, aliases))
    click.echo(str(output))
    if csv_path is not None:
        click.echo(str(csv_path))


def write_csv(
    path: Path,
    results: Sequence[InvarianceCurves],
    image_names: Sequence[str],
    aliases: dict[str, str],
) -> None:
    """Write one row per image, transform, amount and layer, atomically."""
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for curves in results:
            relative = curves.relative_distances
            for image, name in enumerate(image_names):
                for step, amount in enumerate(curves.amounts):
                    for column, layer in enumerate(curves.layers):
                        writer.writerow(
                            (
                                name,
                                curves.kind,
                                f"{amount:g}",
                                aliases.get(layer, layer),
                                layer,
                                f"{curves.distances[image, step, column]:.6g}",
                                f"{relative[image, step, column]:.6g}",
                                f"{curves.probabilities[image, step]:.6g}",
                                int(curves.labels[image]),
                            )
                        )


def _range(value: str | None, kinds: Sequence[str]) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if len(kinds) != 1:
        raise click.UsageError("--range needs exactly one --transform: its unit depends on it")
    pair = options.floats(value, "--range")
    if pair is None or len(pair) != 2 or not pair[0] < pair[1]:
        raise click.BadParameter(
            f"expected LO,HI with LO < HI, got '{value}'", param_hint="--range"
        )
    return pair[0], pair[1]


def _read_images(
    paths: Sequence[Path], size: tuple[int, int]
) -> tuple[list[np.ndarray], list[str]]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                click.echo(f"skipped {path}: no images in this folder", err=True)
            files.extend(found)
        else:
            files.append(path)
    pictures, names = [], []
    for path in files:
        try:
            pictures.append(fit_image(read_image(path), size))
            names.append(path.name)
        except InputError as exc:
            click.echo(f"skipped {path}: {exc}", err=True)
    if not pictures:
        raise InputError(f"none of the {len(files)} images is readable: check the IMAGES paths")
    return pictures, names


def _layer_title(prepared: PreparedModel, name: str, aliases: dict[str, str]) -> str:
    shape = "x".join(map(str, prepared.info[name].per_sample))
    alias = aliases.get(name)
    return f"{alias} {shape}" if alias else f"{name} {shape}"


def _summary(curves: InvarianceCurves, aliases: dict[str, str]) -> str:
    # The identity (and a full turn) would pull every mean towards zero.
    period = 360.0 if curves.kind == "rotate" else np.inf
    moved = ~np.isclose(np.fmod(curves.amounts - IDENTITY[curves.kind], period), 0.0)
    relative = curves.relative_distances[:, moved]
    parts = [
        f"{aliases.get(layer, layer)} {np.nanmean(relative[..., column]):.3f}"
        for column, layer in enumerate(curves.layers)
    ]
    probability = float(curves.probabilities.mean())
    original = float(curves.original_probabilities.mean())
    return (
        f"{curves.kind:<9}  mean relative distance: {'  '.join(parts)}  "
        f"mean P(label) {probability:.3f} (original {original:.3f})"
    )
