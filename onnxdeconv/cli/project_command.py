"""``onnxdeconv project``: project the strongest activations of a layer back to the input."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli.options import CONTEXT, ModelOptions, model_options
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.files import save_npy
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.projector import Projector


def _parse_position(value: str | None) -> tuple[int, ...] | str | None:
    if value is None or value == "all":
        return value
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected H,W or 'all', got '{value}'", param_hint="--position"
        ) from None


def _check_output(output: Path) -> None:
    if output.suffix.lower() not in (".png", ".npy"):
        raise click.BadParameter(f"'{output}' must end in .png or .npy", param_hint="-o")
    if not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise click.BadParameter(
            f"output folder '{output.parent}' does not exist: create it first", param_hint="-o"
        )


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--layer", help="Tensor name or alias (see 'layers'); default: deepest projectable.")
@click.option("--channel", type=int, help="Channel to project; default: the strongest.")
@click.option(
    "--position",
    metavar="H,W|all",
    help="Position in the feature map; 'all' projects the whole map; default: arg-max.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="Project the K strongest channels, each at its arg-max.",
)
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default="deconvnet",
    show_default=True,
    help="What rectifiers pass back (see README).",
)
@model_options()
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png (picture) or OUT.npy (float32 [K, *input_shape]); "
    "default: INPUT-stem_projection.png",
)
def project(
    model: Path,
    input: Path,
    layer: str | None,
    channel: int | None,
    position: str | None,
    top: int | None,
    rule: Rule,
    model_options: ModelOptions,
    output: Path | None,
) -> None:
    """Project the strongest activations of a layer back to the input image.

    INPUT is an image (jpg, png, bmp, webp) preprocessed by --preset, or a .npy array in the
    model's input layout and dtype, fed as is.

    Example: onnxdeconv project models/digitnet.onnx models/examples/digit_7.png --top 8
    """
    output = output or Path(f"{input.stem}_projection.png")
    _check_output(output)
    if channel is not None and top is not None:
        raise click.UsageError("use --channel or --top, not both")
    where = _parse_position(position)
    loaded = load_model(model)
    preprocessing, source = model_options.preprocessing(loaded)
    model_input = load_input(input, loaded, preprocessing, model_options.size)
    projector = Projector(
        loaded, layer, rule, model_options.device, input_shape=tuple(model_input.array.shape[1:])
    )
    forward = projector.forward(model_input.array)
    picks = projector.strongest(forward, top=top or 1, channel=channel, position=where)
    if input.suffix.lower() != ".npy":
        click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    click.echo(f"running on {projector.provider}", err=True)
    projections = projector.project(forward, picks)
    if output.suffix.lower() == ".npy":
        save_npy(output, projections)
    else:
        # matplotlib loads only for pictures, not for a run that writes arrays.
        from onnxdeconv.render import projection_picture, save_figure

        figure = projection_picture(
            projector,
            model_input,
            projections,
            picks,
            input_title=input.name,
            model_name=model.name,
        )
        save_figure(figure, output)
    click.echo(f"projected {len(picks)} from layer {projector.layer}", err=True)
    click.echo(str(output))
