"""Options the commands share, so that an option means one thing everywhere.

Every command that runs a model takes the same model options (:func:`model_options`:
preprocessing, ``--size``, ``--device``), the same words for its outputs (:func:`output_option`,
:func:`json_option`, :func:`csv_option`) and for what it works on (:func:`images_option`,
:func:`layers_option`, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from onnxdeconv.cli import CONTEXT as CONTEXT  # every command reads it from here
from onnxdeconv.cli.parse import floats, int_pair, position
from onnxdeconv.deconv.rules import RULES
from onnxdeconv.inputs import PRESETS, ModelInputSpec, Preprocessing, input_shape_for
from onnxdeconv.inputs import preprocessing_from_metadata as declared_preprocessing

if TYPE_CHECKING:
    # Importing the runtime (and ONNX Runtime) would slow every --help.
    from onnxdeconv.runtime import Device

F = TypeVar("F", bound=Callable[..., Any])
PATH = click.Path(path_type=Path)


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

    def preprocessing(self, loaded: ModelInputSpec) -> tuple[Preprocessing, str]:
        """The preprocessing: a preset, custom values, the metadata or ImageNet; and which."""
        custom = self.mean is not None or self.std is not None or self.scale is not None
        if self.preset and (custom or self.bgr):
            raise click.UsageError("use either --preset or --mean/--std/--scale/--bgr, not both")
        if self.preset:
            return PRESETS[self.preset], f"preset {self.preset}"
        if custom or self.bgr:
            scale = 1.0 if self.scale is None else self.scale
            mean, std = floats(self.mean, "--mean") or (0.0,), floats(self.std, "--std") or (1.0,)
            return Preprocessing(scale, mean, std, self.bgr), "custom"
        declared = declared_preprocessing(loaded)
        if declared is not None:
            return declared, "from the model's metadata"
        return PRESETS["imagenet"], "preset imagenet (default; see --preset)"

    def input_shape(self, loaded: ModelInputSpec) -> tuple[int, ...] | None:
        """The per-sample input shape ``--size`` asks for (None: the model's own)."""
        return input_shape_for(loaded, self.size)


def together(*chosen: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, listed in ``--help`` in the order given."""
    return lambda command: functools.reduce(lambda f, option: option(f), reversed(chosen), command)


def device_option(default: str = "auto") -> Callable[[F], F]:
    """``--device``: where ONNX Runtime runs."""
    choice, text = click.Choice(["auto", "cpu", "cuda"]), "Where ONNX Runtime runs."
    return click.option("--device", type=choice, default=default, show_default=True, help=text)


_PRESET = "Image preprocessing preset; default: the model's metadata, else imagenet."
_PREPROCESSING = together(
    click.option("--preset", type=click.Choice(sorted(PRESETS)), help=_PRESET),
    click.option(
        "--mean", metavar="M[,M,M]", help="Per-channel mean, in the model's channel order."
    ),
    click.option("--std", metavar="S[,S,S]", help="Per-channel standard deviation."),
    click.option("--scale", type=float, help="Pixel (0-255) multiplier applied before the mean."),
    click.option("--bgr", is_flag=True, help="Feed channels in BGR order."),
)
_SIZE_HELP = "Input size H,W, for models with dynamic spatial dims."
_SIZE = click.option("--size", metavar="H,W", help=_SIZE_HELP)


def model_options(images: bool = True, device: str | None = "auto") -> Callable[[F], F]:
    """Add the model options and pass them to the command as ``model_options: ModelOptions``.

    Args:
        images: Whether the command reads images (adds the preprocessing options).
        device: The default of ``--device``; None for commands that run no model (no option).
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **kwargs: Any) -> Any:
            names = ("preset", "mean", "std", "scale", "bgr", "device")
            given = {name: v for name in names if (v := kwargs.pop(name, None)) is not None}
            chosen = ModelOptions(size=int_pair(kwargs.pop("size"), "--size"), **given)
            return function(*args, model_options=chosen, **kwargs)

        added = (*((_PREPROCESSING,) if images else ()), _SIZE)
        return cast(F, together(*added, *((device_option(device),) if device else ()))(command))

    return decorate


def output_option(text: str, required: bool = False) -> Callable[[F], F]:
    """``-o/--output PATH``: the command's main output, described by ``text``."""
    return click.option("-o", "--output", type=PATH, required=required, help=text)


def json_option(what: str) -> Callable[[F], F]:
    """``--json PATH``: also write ``what`` as JSON."""
    return click.option("--json", "json_path", type=PATH, help=f"Also write {what} as JSON.")


def csv_option(what: str) -> Callable[[F], F]:
    """``--csv PATH``: also write ``what`` as CSV."""
    return click.option("--csv", "csv_path", type=PATH, help=f"Also write {what} as CSV.")


def count_option(*names: str, text: str, default: int | None = None, least: int = 1) -> Any:
    """An option that counts something: an integer of at least ``least``."""
    shown = default is not None
    kind = click.IntRange(min=least)
    return click.option(*names, type=kind, default=default, show_default=shown, help=text)


def images_option(purpose: str, required: bool = False) -> Callable[[F], F]:
    """``--images DIR``: a folder of images, searched recursively, used for ``purpose``."""
    text = f"Folder of images (searched recursively) {purpose}."
    return click.option("--images", type=PATH, required=required, help=text)


def layer_option(default: str) -> Callable[[F], F]:
    """``--layer``: one tensor name or alias, ``default`` when not given."""
    return click.option("--layer", help=f"Tensor name or alias (see 'layers'); default: {default}.")


def layers_option(default: str, multiple: bool = False) -> Callable[[F], F]:
    """``--layers A,B,..``: tensor names or aliases, passed on as a list (None: ``default``)."""

    def names(_: click.Context, __: click.Parameter, value: str | tuple[str, ...] | None) -> Any:
        given = (value,) if isinstance(value, str) else value or ()
        return [name.strip() for part in given for name in part.split(",") if name.strip()] or None

    how = "comma-separated or repeated" if multiple else "comma-separated"
    text = f"Tensor names or aliases ({how}); default: {default}."
    return click.option("--layers", metavar="A,B,..", multiple=multiple, callback=names, help=text)


def position_option(allow_all: bool = False) -> Callable[[F], F]:
    """``--position H,W``: the unit's position in its feature map (``all``: the whole map)."""
    every = "; 'all' projects the whole map" if allow_all else ""
    text = f"Position of the unit in the feature map{every}; default: its arg-max."
    metavar = "H,W|all" if allow_all else "H,W"
    parse = lambda _, __, value: position(value, allow_all)  # noqa: E731
    return click.option("--position", metavar=metavar, callback=parse, help=text)


def label_option(default: str) -> Callable[[F], F]:
    """``--label``: the class to track, as an index or a name."""
    text = f"Class to track, as an index or a name; default: {default}."
    return click.option("--label", help=text)


def seed_option(of: str) -> Callable[[F], F]:
    """``--seed``: the seed of the random ``of``."""
    text = f"Seed of the random {of}."
    return click.option("--seed", type=int, default=0, show_default=True, help=text)


_LIMIT, _CHANNEL = "Use at most N images (sorted by path).", "Channel (feature map) of the unit"
limit_option = click.option("--limit", type=click.IntRange(min=1), help=_LIMIT)
channel_option = click.option("--channel", type=int, help=f"{_CHANNEL}; default: the strongest.")
_RULE = "What rectifiers pass back (see docs/rules.md)."
rule_option = click.option(
    "--rule", type=click.Choice(RULES), default="deconvnet", show_default=True, help=_RULE
)
_LABELS = "Class names, one per line or 'index,name'; default: the model's metadata."
labels_option = click.option("--labels", "labels_path", type=PATH, help=_LABELS)
