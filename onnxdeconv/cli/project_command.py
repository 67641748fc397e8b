"""``onnxdeconv project``: project the strongest activations of a layer back to the input."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info
from onnxdeconv.cli.parse import check_output
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.files import save_npy
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.projector import Projector


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("input", type=options.PATH)
@options.layer_option("the deepest projectable")
@options.channel_option
@options.position_option(allow_all=True)
@options.count_option("--top", text="Project the K strongest channels, each at its arg-max.")
@options.rule_option
@options.model_options()
@options.output_option(
    "OUT.png (picture) or OUT.npy (float32 [K, *input_shape]); default: INPUT-stem_projection.png"
)
def project(
    model: Path,
    input: Path,
    layer: str | None,
    channel: int | None,
    position: tuple[int, ...] | str | None,
    top: int | None,
    rule: Rule,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Project the strongest activations of a layer back to the input image.

    INPUT is an image (jpg, png, bmp, webp) preprocessed by --preset, or a .npy array in the
    model's input layout and dtype, fed as is.

    Example: onnxdeconv project models/digitnet.onnx models/examples/digit_7.png --top 8
    """
    output = output or Path(f"{input.stem}_projection.png")
    check_output(output, "-o", (".png", ".npy"))
    if channel is not None and top is not None:
        raise click.UsageError("use --channel or --top, not both")
    loaded = load_model(model)
    preprocessing, source = model_options.preprocessing(loaded)
    model_input = load_input(input, loaded, preprocessing, model_options.size)
    projector = Projector(
        loaded, layer, rule, model_options.device, input_shape=tuple(model_input.array.shape[1:])
    )
    forward = projector.forward(model_input.array)
    picks = projector.strongest(forward, top=top or 1, channel=channel, position=position)
    if input.suffix.lower() != ".npy":
        info(f"preprocessing: {source}: {preprocessing.describe()}")
    info(f"running on {projector.provider}")
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
    info(f"projected {len(picks)} from layer {projector.layer}")
    click.echo(str(output))
