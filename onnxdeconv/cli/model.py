"""The model options every command that runs a model shares: preprocessing, input size, device."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import click

from onnxdeconv import inputs
from onnxdeconv.cli.parse import floats, int_pair
from onnxdeconv.inputs import ModelInput, ModelInputSpec, Preprocessing
from onnxdeconv.runtime.sessions import Device

if TYPE_CHECKING:
    # Loading and preparing import ONNX: only commands that build graphs pay for it.
    from onnxdeconv.graph.load import LoadedModel
    from onnxdeconv.prepared import PreparedModel
    from onnxdeconv.projector import ModelSpec

F = TypeVar("F", bound=Callable[..., Any])


class ModelSetup(NamedTuple):
    """A command's model: as loaded, prepared for its input size, and its preprocessing."""

    loaded: LoadedModel
    prepared: PreparedModel
    preprocessing: Preprocessing
    #: Which preprocessing, and its values: what the ``preprocessing:`` line says.
    how: str


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
        """The preprocessing (a preset, custom values, the metadata or ImageNet); which, and how."""
        mean, std = floats(self.mean, "--mean"), floats(self.std, "--std")
        chosen, how = inputs.choose_preprocessing(
            loaded, self.preset, mean, std, self.scale, self.bgr
        )
        if self.given() is None and inputs.declares_no_preprocessing(loaded):
            model = getattr(loaded, "path", None) or "MODEL"
            check = f"check with 'onnxdeconv preprocess {model} IMAGE'"
            how = f"assumed preset imagenet (the model declares none; {check}): {chosen.describe()}"
        return chosen, how

    def given(self) -> tuple[str, Preprocessing] | None:
        """The preprocessing the options give (a preset's name, or ``custom``); None: none."""
        mean, std = floats(self.mean, "--mean"), floats(self.std, "--std")
        custom = (mean, std, self.scale) != (None, None, None) or self.bgr
        if self.preset and custom:
            raise click.UsageError("use either --preset or --mean/--std/--scale/--bgr, not both")
        if self.preset:
            return self.preset, inputs.PRESETS[self.preset]
        if custom:
            return "custom", inputs.custom_preprocessing(mean, std, self.scale, self.bgr)
        return None

    def input_shape(self, loaded: ModelInputSpec) -> tuple[int, ...] | None:
        """The per-sample input shape ``--size`` asks for (None: the model's own)."""
        return inputs.input_shape_for(loaded, self.size)

    def prepared(self, model: Path) -> PreparedModel:
        """Load ``model`` and prepare it at ``--size``."""
        from onnxdeconv.graph.load import load_model
        from onnxdeconv.prepared import prepare

        loaded = load_model(model)
        return prepare(loaded, self.input_shape(loaded))

    def load(self, model: Path) -> ModelSetup:
        """Load ``model``, prepare it at ``--size`` and choose its preprocessing."""
        prepared = self.prepared(model)
        return ModelSetup(prepared.loaded, prepared, *self.preprocessing(prepared.loaded))

    def load_input(self, model: Path, path: Path) -> tuple[ModelSetup, ModelInput]:
        """Load ``model`` and the input file ``path`` (an image, or a .npy fed as is) for it.

        The model is prepared at the input's size (an image is resized to ``--size``).
        """
        from onnxdeconv.graph.load import load_model
        from onnxdeconv.prepared import prepare

        loaded = load_model(model)
        preprocessing, how = self.preprocessing(loaded)
        model_input = inputs.load_input(path, loaded, preprocessing, self.size)
        prepared = prepare(loaded, tuple(model_input.array.shape[1:]))
        return ModelSetup(loaded, prepared, preprocessing, how), model_input

    def spec_input(self, model: Path, path: Path) -> tuple[ModelSpec, str, ModelInput]:
        """Like :meth:`load_input`, from the model's cached input facts where the cache has them.

        Returns the model's :class:`~onnxdeconv.projector.ModelSpec` (a
        :class:`~onnxdeconv.projector.Projector` takes it), what the ``preprocessing:`` line
        says, and the input. Nothing is prepared: the projector builds or finds its graphs.
        """
        from onnxdeconv.projector import model_spec

        spec = model_spec(model)
        preprocessing, how = self.preprocessing(spec)
        return spec, how, inputs.load_input(path, spec, preprocessing, self.size)


def together(*chosen: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, listed in ``--help`` in the order given."""
    return lambda command: functools.reduce(lambda f, option: option(f), reversed(chosen), command)


def device_option(default: str = "auto") -> Callable[[F], F]:
    """``--device``: where ONNX Runtime runs."""
    choice, text = click.Choice(["auto", "cpu", "cuda"]), "Where ONNX Runtime runs."
    return click.option("--device", type=choice, default=default, show_default=True, help=text)


_PRESET = (
    "Image preprocessing preset; default: the model's metadata, else imagenet (check which with "
    "'onnxdeconv preprocess'). "
    "imagenet: RGB /255, minus the mean and over the std of ImageNet; "
    "caffe: BGR 0-255 minus the means 104,117,123; "
    "tf: RGB scaled to [-1,1]; "
    "raw: pixels 0-255 as they are."
)
_PREPROCESSING = together(
    click.option("--preset", type=click.Choice(sorted(inputs.PRESETS)), help=_PRESET),
    click.option(
        "--mean", metavar="M[,M,M]", help="Per-channel mean, in the model's channel order."
    ),
    click.option("--std", metavar="S[,S,S]", help="Per-channel standard deviation."),
    click.option("--scale", type=float, help="Pixel (0-255) multiplier applied before the mean."),
    click.option("--bgr", is_flag=True, help="Feed channels in BGR order."),
)
_SIZE_HELP = "Input size H,W (one number N: N,N), for models with dynamic spatial dims."
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
