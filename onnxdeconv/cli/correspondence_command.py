"""``onnxdeconv correspondence``: do deep layers mask the same part alike? (Table 1)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from onnxdeconv.analysis.correspondence import (
    CSV_FIELDS,
    correspondence_scores,
    read_boxed_images,
)
from onnxdeconv.cli import options
from onnxdeconv.graph.load import load_model
from onnxdeconv.outputs import write_csv, write_json
from onnxdeconv.prepared import prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.correspondence import correspondence_figure, correspondence_title


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("more_images", metavar="[IMAGES]...", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An image, or a folder searched for the images the boxes file names; more images may "
    "follow as arguments. Default: beside the boxes file.",
)
@click.option(
    "--boxes",
    "boxes_path",
    required=True,
    type=click.Path(path_type=Path),
    help='JSON: {"images": {"A.jpg": {"nose": [x0, y0, x1, y1], ...}, ...}} in original pixels.',
)
@click.option("--parts", help="Comma-separated parts to mask (default: every part in the file).")
@click.option(
    "--layers",
    "layer_names",
    multiple=True,
    help="Layers (tensor names or aliases, comma-separated or repeated). Default: the deepest "
    "spatial layer and the one before it.",
)
@click.option(
    "--random",
    "draws",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Random boxes per image for the baseline (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random boxes.")
@options.model_options()
@options.output_option("OUT.png; default: MODEL-stem_correspondence.png")
@options.json_option("the table")
@options.csv_option("the table")
def correspondence(
    model: Path,
    more_images: tuple[Path, ...],
    image_paths: tuple[Path, ...],
    boxes_path: Path,
    parts: str | None,
    layer_names: tuple[str, ...],
    draws: int,
    seed: int,
    model_options: options.ModelOptions,
    output: Path | None,
    json_path: Path | None,
    csv_path: Path | None,
) -> None:
    """Correspondence analysis (Zeiler & Fergus, Table 1): does a layer see object parts alike?

    Masks the same part (say the left eye) with a grey box in every image and measures how
    consistently a layer's features change: ε_i = x_i - x̃_i per image i, and
    Δ = Σ over ordered pairs i≠j of the Hamming distance between sign(ε_i) and sign(ε_j), shown
    normalised as the fraction of signs that differ. A part the layer represents consistently
    scores lower than boxes of the same size at random places (--random draws, inside each image's
    'objects' region when the boxes file gives one). Boxes are [x0, y0, x1, y1] in the original
    image's pixels, x1 and y1 exclusive; optional 'crops' use part of a photo (to centre the
    faces) and a key 'A.jpg#label' names one object of a photo. An unreadable image is skipped.

    Example: onnxdeconv correspondence model.onnx --images cat.jpg dog.jpg fox.jpg --boxes b.json
    """
    output = output or Path(f"{model.stem}_correspondence.png")
    options.check_output(output, "-o", ".png")
    options.check_output(json_path, "--json")
    options.check_output(csv_path, "--csv")
    wanted = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
    read = read_boxed_images(boxes_path, [*image_paths, *more_images], wanted)
    for key, why in read.skipped:
        click.echo(f"skipped {key}: {why}", err=True)
    loaded = load_model(model)
    prepared = prepare(loaded, model_options.input_shape(loaded))
    layers = [name.strip() for value in layer_names for name in value.split(",") if name.strip()]
    preprocessing, source = model_options.preprocessing(loaded)
    total = len(read.keys) * (1 + len(read.boxes) + draws)
    with tqdm(
        total=total, desc="masked copies", unit="input", file=sys.stderr, leave=False, disable=None
    ) as bar:
        result = correspondence_scores(
            prepared,
            read.pictures,
            read.boxes,
            layers or None,
            preprocessing,
            draws,
            seed,
            crops=read.crops,
            objects=read.objects,
            names=read.keys,
            device=model_options.device,
            progress=lambda done: bar.update(done - bar.n),
        )
    # Said after the run, so that an error stays the only line on stderr.
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    click.echo(f"running on {result.provider}", err=True)
    save_figure(
        correspondence_figure(result, title=correspondence_title(result, model.name)), output
    )
    if json_path is not None:
        write_json(json_path, result.to_json())
    if csv_path is not None:
        write_csv(csv_path, result.rows(), CSV_FIELDS)
    click.echo(result.text_table())
    click.echo("\n".join(str(path) for path in (output, json_path, csv_path) if path is not None))
