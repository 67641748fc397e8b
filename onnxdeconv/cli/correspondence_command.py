"""``onnxdeconv correspondence``: do deep layers mask the same part alike? (Table 1)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.correspondence import correspondence_scores, read_boxed_images
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, list_skipped, progress
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.correspondence import write_correspondence


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("more_images", metavar="[IMAGES]...", nargs=-1, type=options.PATH)
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=options.PATH,
    help="An image, or a folder searched for the images the boxes file names; more images may "
    "follow as arguments. Default: beside the boxes file.",
)
@click.option(
    "--boxes",
    "boxes_path",
    required=True,
    type=options.PATH,
    help='JSON: {"images": {"A.jpg": {"nose": [x0, y0, x1, y1], ...}, ...}} in original pixels.',
)
@click.option("--parts", help="Comma-separated parts to mask (default: every part in the file).")
@options.layers_option("the deepest spatial layer and the one before it", multiple=True)
@options.count_option(
    "--random",
    "draws",
    default=10,
    least=0,
    text="Random boxes per image for the baseline (0: none).",
)
@options.seed_option("boxes")
@options.model_options()
@options.outputs("{model.stem}_correspondence.png", json="the table", csv="the table")
def correspondence(
    model: Path,
    more_images: tuple[Path, ...],
    image_paths: tuple[Path, ...],
    boxes_path: Path,
    parts: str | None,
    layers: list[str] | None,
    draws: int,
    seed: int,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Correspondence analysis (Zeiler & Fergus, Table 1): does a layer see object parts alike?

    Masks the same part (say the left eye) with a grey box in every image and measures how
    consistently a layer's features change: ε_i = x_i - x̃_i per image i, and
    Δ = Σ over ordered pairs i≠j of the Hamming distance between sign(ε_i) and sign(ε_j), shown
    normalised as the fraction of signs that differ. A part the layer represents consistently
    scores lower than boxes of the same size at random places (--random draws, inside each image's
    'objects' region when the boxes file gives one). Boxes are [x0, y0, x1, y1] in the original
    image's pixels, x1 and y1 exclusive; optional 'crops' use part of a photo (to centre the
    faces) and a key 'A.jpg#label' names one object of a photo. An unreadable image is skipped
    and listed.

    Example: onnxdeconv correspondence model.onnx --images cat.jpg dog.jpg fox.jpg --boxes b.json
    """
    wanted = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
    read = read_boxed_images(boxes_path, [*image_paths, *more_images], wanted)
    list_skipped(read.skipped)
    _, prepared, preprocessing, how = model_options.load(model)
    total = len(read.keys) * (1 + len(read.boxes) + draws)
    with progress(total, "masked copies", "input", so_far=True) as advance:
        result = correspondence_scores(
            prepared,
            read.pictures,
            read.boxes,
            layers,
            preprocessing,
            draws,
            seed,
            crops=read.crops,
            objects=read.objects,
            names=read.keys,
            device=model_options.device,
            progress=advance,
        )
    # Said after the run, so that an error stays the only line on stderr.
    info(f"preprocessing: {how}")
    info(f"running on {result.provider}")
    click.echo(write_correspondence(result, paths, model.name, read.skipped))
