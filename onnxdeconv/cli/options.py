"""Parsing helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from onnxdeconv.errors import InputError
from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.inputs import (
    IMAGE_SUFFIXES,
    PRESETS,
    Preprocessing,
    image_layout,
    load_input,
    preprocessing_from_metadata,
)

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}


def int_pair(value: str | None, option: str) -> tuple[int, int] | None:
    """Parse ``H,W``."""
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        pair = tuple(int(p) for p in parts)
    except ValueError:
        pair = ()
    if len(pair) != 2 or min(pair) < 0:
        raise click.BadParameter(
            f"expected two integers H,W such as 224,224, got '{value}'", param_hint=option
        )
    return pair[0], pair[1]


def floats(value: str | None, option: str) -> tuple[float, ...] | None:
    """Parse a comma-separated list of numbers."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, got '{value}'", param_hint=option
        ) from None


def resolve_preprocessing(
    loaded: LoadedModel,
    preset: str | None,
    mean: str | None,
    std: str | None,
    scale: float | None,
    bgr: bool,
) -> tuple[Preprocessing, str]:
    """Pick the preprocessing: a preset, custom values, the model's metadata, or ImageNet."""
    custom = mean is not None or std is not None or scale is not None or bgr
    if preset and custom:
        raise click.UsageError("use either --preset or --mean/--std/--scale/--bgr, not both")
    if preset:
        return PRESETS[preset], f"preset {preset}"
    if custom:
        return Preprocessing(
            scale=1.0 if scale is None else scale,
            mean=floats(mean, "--mean") or (0.0,),
            std=floats(std, "--std") or (1.0,),
            bgr=bgr,
        ), "custom"
    declared = preprocessing_from_metadata(loaded)
    if declared is not None:
        return declared, "from the model's metadata"
    return PRESETS["imagenet"], "preset imagenet (default; see --preset)"


def input_shape_for(loaded: LoadedModel, size: tuple[int, int] | None) -> tuple[int, ...] | None:
    """Per-sample input shape for ``--size H,W`` (None keeps the model's own)."""
    if size is None:
        return None
    layout, channels = image_layout(tuple(loaded.input_shape[1:]))
    return (channels, *size) if layout == "NCHW" else (*size, channels)


def image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; at most ``limit``."""
    if not folder.is_dir():
        raise InputError(f"image folder '{folder}' does not exist: check the --images path")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in '{folder}': point --images at a "
            "folder of photos"
        )
    return files[:limit] if limit else files


def load_images(
    files: list[Path],
    loaded: LoadedModel,
    preprocessing: Preprocessing,
    input_shape: tuple[int, ...],
    folder: Path,
) -> tuple[np.ndarray, list[str]]:
    """Preprocess every readable image into one batch; skip and report the unreadable ones.

    Returns:
        The batch and the image names (paths relative to ``folder``).
    """
    layout, _ = image_layout(input_shape)
    spatial = input_shape[1:] if layout == "NCHW" else input_shape[:-1]
    arrays, names = [], []
    for path in files:
        try:
            arrays.append(load_input(path, loaded, preprocessing, (spatial[0], spatial[1])).array)
            names.append(str(path.relative_to(folder)))
        except InputError as exc:
            click.echo(f"skipped {path}: {exc}", err=True)
    if not arrays:
        raise InputError(f"none of the {len(files)} images in '{folder}' is readable: check them")
    click.echo(f"using {len(arrays)} of {len(files)} images from {folder}", err=True)
    return np.concatenate(arrays), names


def device_option(function: F) -> F:
    """The ``--device`` option shared by the commands that run ONNX Runtime."""
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where ONNX Runtime runs.",
    )(function)


def preset_option(function: F) -> F:
    """The ``--preset`` option shared by the commands that read images."""
    return click.option(
        "--preset", type=click.Choice(sorted(PRESETS)), help="Image preprocessing preset."
    )(function)


def size_option(function: F) -> F:
    """The ``--size`` option shared by the commands that read images."""
    return click.option(
        "--size", metavar="H,W", help="Input size, for models with dynamic spatial dims."
    )(function)


def labels_option(function: F) -> F:
    """The ``--labels FILE`` option of the commands that name classes."""
    return click.option(
        "--labels",
        "labels_path",
        type=click.Path(path_type=Path),
        help="Class names, one per line or 'index,name'; default: the model's metadata.",
    )(function)
