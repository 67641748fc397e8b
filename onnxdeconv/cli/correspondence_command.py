"""``onnxdeconv correspondence``: do deep layers mask the same part alike? (Table 1)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, cast

import click
import numpy as np
from tqdm import tqdm

from onnxdeconv.analysis.correspondence import (
    MASK_VALUE,
    BoxesFile,
    CorrespondenceResult,
    boxes_by_part,
    correspondence_scores,
    parse_boxes,
    plural,
)
from onnxdeconv.cli import options
from onnxdeconv.errors import InputError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import read_image
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.correspondence import correspondence_figure
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT
SCHEMA = "onnxdeconv.correspondence/1"
CSV_FIELDS = (
    "part",
    "layer",
    "alias",
    "kind",
    "delta",
    "normalised",
    "std",
    "std_over",
    "vs_random",
    "changed",
    "features",
    "images",
    "ordered_pairs",
)


@click.command(context_settings=CONTEXT)
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
@options.preset_option
@options.size_option
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png; default: MODEL-stem_correspondence.png",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the table as JSON."
)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the table as CSV."
)
def correspondence(
    model: Path,
    more_images: tuple[Path, ...],
    image_paths: tuple[Path, ...],
    boxes_path: Path,
    parts: str | None,
    layer_names: tuple[str, ...],
    draws: int,
    seed: int,
    preset: str | None,
    size: str | None,
    device: str,
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
    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"'{output}' must end in .png", param_hint="-o")
    for path, hint in ((output, "-o"), (json_path, "--json"), (csv_path, "--csv")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise click.BadParameter(
                f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
            )
    boxes_file = _read_boxes(boxes_path)
    chosen = _resolve_images(boxes_file, [*image_paths, *more_images], boxes_path)
    keys, pictures = [], []
    cache: dict[Path, np.ndarray] = {}
    for key, path in chosen:
        try:
            if path not in cache:
                cache[path] = read_image(path)
        except InputError as exc:
            click.echo(f"skipped {key}: {exc}", err=True)
            continue
        keys.append(key)
        pictures.append(cache[path])
    if len(keys) < 2:
        raise InputError(
            f"only {len(keys)} of {len(chosen)} images could be read; correspondence needs at "
            "least 2: check the image paths"
        )
    wanted = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
    boxes = boxes_by_part([boxes_file.images[key] for key in keys], keys, wanted)

    loaded = load_model(model)
    prepared = prepare(loaded, options.input_shape_for(loaded, options.int_pair(size, "--size")))
    layers = [name.strip() for value in layer_names for name in value.split(",") if name.strip()]
    preprocessing, source = options.resolve_preprocessing(loaded, preset, None, None, None, False)
    with tqdm(
        desc="masked copies", unit="input", file=sys.stderr, leave=False, disable=None
    ) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = correspondence_scores(
            prepared,
            pictures,
            boxes,
            layers or None,
            preprocessing,
            draws,
            seed,
            crops=[boxes_file.crops.get(key) for key in keys],
            objects=[boxes_file.objects.get(key) for key in keys],
            names=keys,
            device=cast(Device, device),
            progress=advance,
        )
    # Said after the run, so that an error stays the only line on stderr.
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    aliases = {name: alias for alias, name in prepared.aliases.items()}
    labels = {layer: _layer_label(prepared, layer, aliases) for layer in result.layers}
    title = (
        f"{model.name} · correspondence of {len(result.parts)} parts over {len(keys)} images "
        f"(grey {MASK_VALUE} masks; random: {draws} draws, seed {seed})"
    )
    save_figure(correspondence_figure(result, keys, labels, title), output)
    rows = _rows(result, aliases)
    if json_path is not None:
        report = _report(model, keys, boxes_file, result, rows, labels)
        with atomic_path(json_path) as temp:
            temp.write_text(json.dumps(report, indent=2) + "\n")
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_path(csv_path) as temp:
            temp.write_text(buffer.getvalue())
    click.echo(_table(result, labels))
    for path in (output, json_path, csv_path):
        if path is not None:
            click.echo(str(path))


def _read_boxes(path: Path) -> BoxesFile:
    if not path.is_file():
        raise InputError(f"boxes file '{path}' does not exist: check the --boxes path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "fix the file"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read boxes file '{path}': {exc}") from exc
    return parse_boxes(data, f"'{path}'")


def _file_of(key: str) -> Path:
    """The file part of a key ``A.jpg`` or ``A.jpg#label``."""
    return Path(key.split("#", 1)[0])


def _matches(key: str, path: Path) -> bool:
    wanted = _file_of(key).parts
    return path.parts[-len(wanted) :] == wanted


def _resolve_images(
    boxes_file: BoxesFile, given: list[Path], boxes_path: Path
) -> list[tuple[str, Path]]:
    """Pair each image key of the boxes file with its file, in the file's order.

    Images given as files must each have an entry; keys are looked up among those files and in
    the folders given (every key must be found there), or beside the boxes file by default.
    """
    for path in given:
        if not path.exists():
            raise InputError(f"'{path}' does not exist: check the --images path")
    files = [p for p in given if not p.is_dir()]
    folders = [p for p in given if p.is_dir()]
    for path in files:
        if not any(_matches(key, path) for key in boxes_file.images):
            raise InputError(
                f"image '{path}' has no entry in the boxes file: add its boxes under 'images' "
                f"with the key '{path.name}', or leave it out"
            )
    searched = [f for folder in folders for f in options.image_files(folder)]
    chosen = []
    for key in boxes_file.images:
        if not given:
            chosen.append((key, (boxes_path.parent / _file_of(key))))
            continue
        explicit = [p for p in files if _matches(key, p)]
        found = explicit or [p for p in searched if _matches(key, p)]
        if len(found) > 1:
            shown = ", ".join(str(p) for p in found[:3])
            raise InputError(
                f"'{_file_of(key)}' matches {len(found)} images ({shown}): write its path "
                "relative to the folder in the boxes file"
            )
        if found:
            chosen.append((key, found[0]))
        elif folders:
            raise InputError(
                f"no image under {', '.join(map(str, folders))} is named '{_file_of(key)}' "
                f"(boxes file key '{key}'): fix the key or the --images folder"
            )
    return chosen


def _layer_label(prepared: PreparedModel, layer: str, aliases: dict[str, str]) -> str:
    shape = "x".join(map(str, prepared.info[layer].per_sample))
    alias = aliases.get(layer)
    return f"{alias} ({layer}, {shape})" if alias and alias != layer else f"{layer} ({shape})"


def _rows(result: CorrespondenceResult, aliases: dict[str, str]) -> list[dict[str, Any]]:
    count = result.image_count
    rows = []
    for row in result.rows():
        row = dict(row)
        row["alias"] = aliases.get(row["layer"], "")
        row["images"] = count
        row["ordered_pairs"] = count * (count - 1)
        rows.append({name: _plain(row.get(name)) for name in CSV_FIELDS})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _report(
    model: Path,
    keys: list[str],
    boxes_file: BoxesFile,
    result: CorrespondenceResult,
    rows: list[dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "model": str(model),
        "images": keys,
        "parts": result.parts,
        "layers": [{"name": layer, "label": labels[layer]} for layer in result.layers],
        "pairs": "ordered",
        "sign_of_zero": "0 is its own sign: it differs from -1 and +1",
        "mask_value": MASK_VALUE,
        "crops": {key: list(boxes_file.crops[key]) for key in keys if key in boxes_file.crops},
        "random": {
            "draws": result.draws,
            "seed": result.seed,
            "regions": {
                key: list(boxes_file.objects[key]) for key in keys if key in boxes_file.objects
            },
        },
        "boxes_in_input_pixels": {
            part: {key: [int(v) for v in result.boxes[part][i]] for i, key in enumerate(keys)}
            for part in result.parts
        },
        "table": rows,
    }


def _table(result: CorrespondenceResult, labels: dict[str, str]) -> str:
    count = result.image_count
    header = ["part", *(labels[layer] for layer in result.layers)]
    lines = []
    for part in result.parts:
        cells = [part]
        for layer in result.layers:
            found = result.part_scores[part][layer]
            cells.append(
                f"{found.normalised:.3f} ± {found.pair_std:.3f}  ({found.changed:.0%} changed)"
            )
        lines.append(cells)
    if result.draws:
        cells = ["random"]
        for layer in result.layers:
            mean, std = result.random_mean(layer)
            moved = float(np.mean([s.changed for s in result.random_scores[layer]]))
            cells.append(f"{mean:.3f} ± {std:.3f}  ({moved:.0%} changed)")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [
        f"normalised Δ: the fraction of feature signs that differ, over {count * (count - 1)} "
        f"ordered pairs of {count} images (lower = more consistent)",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
    ]
    text += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    ]
    baseline = (
        f"; random: mean ± std over {plural(result.draws, 'draw')} (seed {result.seed})"
        if result.draws
        else ""
    )
    pairs = plural(count * (count - 1) // 2, "image pair")
    text.append(f"parts: ± std over the {pairs}{baseline}")
    return "\n".join(text)
