"""Option groups and parsing helpers shared by the commands.

Every command that runs a model takes the same model options (:func:`model_options`:
preprocessing, ``--size``, ``--device``), and the same words for its outputs
(:func:`output_option`, :func:`json_option`, :func:`csv_option`), so that an option means one
thing everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
import numpy as np

from onnxdeconv.cli import CONTEXT as CONTEXT  # every command reads it from here
from onnxdeconv.errors import InputError
from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.inputs import (
    IMAGE_SUFFIXES,
    PRESETS,
    ModelInput,
    Preprocessing,
    image_layout,
    load_input,
    preprocessing_from_metadata,
)

if TYPE_CHECKING:
    # Importing the runtime (and ONNX Runtime) would slow every --help.
    from onnxdeconv.runtime import Device

F = TypeVar("F", bound=Callable[..., Any])


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


@dataclass
class LoadedImages:
    """Images preprocessed for a model: one batch, and each image's name and picture."""

    batch: np.ndarray
    #: Paths relative to the folder, one per row of ``batch``.
    names: list[str]
    #: Each image as loaded, with the picture a person recognises it by.
    inputs: list[ModelInput]
    #: ``name: reason`` for each image that could not be read.
    skipped: list[str]


def read_images(
    files: list[Path],
    loaded: LoadedModel,
    preprocessing: Preprocessing,
    input_shape: tuple[int, ...],
    folder: Path,
) -> LoadedImages:
    """Preprocess every readable image into one batch; skip and report the unreadable ones."""
    layout, _ = image_layout(input_shape)
    spatial = input_shape[1:] if layout == "NCHW" else input_shape[:-1]
    inputs, names, skipped = [], [], []
    for path in files:
        try:
            inputs.append(load_input(path, loaded, preprocessing, (spatial[0], spatial[1])))
            names.append(str(path.relative_to(folder)))
        except InputError as exc:
            click.echo(f"skipped {path}: {exc}", err=True)
            skipped.append(f"{path.relative_to(folder)}: {exc}")
    if not inputs:
        raise InputError(f"none of the {len(files)} images in '{folder}' is readable: check them")
    click.echo(f"using {len(inputs)} of {len(files)} images from {folder}", err=True)
    return LoadedImages(np.concatenate([i.array for i in inputs]), names, inputs, skipped)


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
    found = read_images(files, loaded, preprocessing, input_shape, folder)
    return found.batch, found.names


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


@dataclass(frozen=True)
class ModelOptions:
    """The model options of a command: how to preprocess images, the input size, the device."""

    preset: str | None = None
    mean: str | None = None
    std: str | None = None
    scale: float | None = None
    bgr: bool = False
    size: tuple[int, int] | None = None
    device: Device = "auto"

    def preprocessing(self, loaded: LoadedModel) -> tuple[Preprocessing, str]:
        """The preprocessing these options choose for ``loaded``, and where it came from."""
        return resolve_preprocessing(loaded, self.preset, self.mean, self.std, self.scale, self.bgr)

    def input_shape(self, loaded: LoadedModel) -> tuple[int, ...] | None:
        """The per-sample input shape ``--size`` asks for (None: the model's own)."""
        return input_shape_for(loaded, self.size)


_PREPROCESSING_OPTIONS = (
    click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        help="Image preprocessing preset; default: the model's metadata, else imagenet.",
    ),
    click.option(
        "--mean", metavar="M[,M,M]", help="Per-channel mean, in the model's channel order."
    ),
    click.option("--std", metavar="S[,S,S]", help="Per-channel standard deviation."),
    click.option("--scale", type=float, help="Pixel (0-255) multiplier applied before the mean."),
    click.option("--bgr", is_flag=True, help="Feed channels in BGR order."),
)
_SIZE_OPTION = click.option(
    "--size", metavar="H,W", help="Input size H,W, for models with dynamic spatial dims."
)


def _device_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=default,
        show_default=True,
        help="Where ONNX Runtime runs.",
    )


def model_options(images: bool = True, device: str | None = "auto") -> Callable[[F], F]:
    """Add the model options and pass them to the command as ``model_options: ModelOptions``.

    Args:
        images: Whether the command reads images (adds the preprocessing options).
        device: The default of ``--device``; None for commands that run no model (no option).
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **kwargs: Any) -> Any:
            chosen = ModelOptions(
                preset=kwargs.pop("preset", None),
                mean=kwargs.pop("mean", None),
                std=kwargs.pop("std", None),
                scale=kwargs.pop("scale", None),
                bgr=kwargs.pop("bgr", False),
                size=int_pair(kwargs.pop("size"), "--size"),
                device=cast("Device", kwargs.pop("device", "auto")),
            )
            return function(*args, model_options=chosen, **kwargs)

        decorated: Any = command
        chosen = (
            *(_PREPROCESSING_OPTIONS if images else ()),
            _SIZE_OPTION,
            *((_device_option(device),) if device else ()),
        )
        for option in reversed(chosen):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


def output_option(help_text: str, required: bool = False) -> Callable[[F], F]:
    """The ``-o/--output PATH`` option: the command's main output, described by ``help_text``."""
    return click.option(
        "-o", "--output", type=click.Path(path_type=Path), required=required, help=help_text
    )


def json_option(what: str) -> Callable[[F], F]:
    """The ``--json PATH`` option: also write ``what`` as JSON."""
    return click.option(
        "--json", "json_path", type=click.Path(path_type=Path), help=f"Also write {what} as JSON."
    )


def csv_option(what: str) -> Callable[[F], F]:
    """The ``--csv PATH`` option: also write ``what`` as CSV."""
    return click.option(
        "--csv", "csv_path", type=click.Path(path_type=Path), help=f"Also write {what} as CSV."
    )


def check_output(path: Path | None, hint: str, suffix: str | None = None) -> None:
    """Refuse, before any work, an output ``path`` without ``suffix`` or in a missing folder.

    Args:
        path: The output file (None: not asked for).
        hint: The option that names it, for the message (``-o``).
        suffix: The suffix it must have (``.png``), case-insensitive.
    """
    if path is None:
        return
    if suffix is not None and path.suffix.lower() != suffix:
        raise click.BadParameter(f"'{path}' must end in {suffix}", param_hint=hint)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise click.BadParameter(
            f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
        )
