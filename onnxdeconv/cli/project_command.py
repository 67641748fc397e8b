"""``onnxdeconv project``: project the strongest activations of a layer back to the input."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info
from onnxdeconv.deconv.names import Rule
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.projection import write_projections
from onnxdeconv.projector import Projector


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("input", type=options.PATH)
@options.layer_option("the deepest projectable")
@options.channel_option
@options.position_option(allow_all=True)
@options.count_option("--top", text="Project the K strongest channels, each at its arg-max.")
@options.rule_option
@options.memory_budget_option
@click.option(
    "--saturated",
    is_flag=True,
    help="Let the arg-max take units at the layer's upper bound (a ReLU6 at 6), whose gradient "
    "and guided projections are zero; by default they are skipped.",
)
@options.model_options()
@options.outputs(
    "{input.stem}_projection.png",
    "OUT.png (picture) or OUT.npy (float32 [K, *input_shape]); default: INPUT-stem_projection.png",
    suffix=(".png", ".npy"),
)
def project(
    model: Path,
    input: Path,
    layer: str | None,
    channel: int | None,
    position: tuple[int, ...] | str | None,
    top: int | None,
    rule: Rule,
    memory_budget: str | None,
    saturated: bool,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Project the strongest activations of a layer back to the input image.

    INPUT is an image (jpg, png, bmp, webp) preprocessed by --preset, or a .npy array in the
    model's input layout and dtype, fed as is.

    Example: onnxdeconv project models/digitnet.onnx models/examples/digit_7.png --top 8
    """
    if channel is not None and top is not None:
        raise click.UsageError("use --channel or --top, not both")
    spec, how, model_input = model_options.spec_input(model, input)
    shape = tuple(model_input.array.shape[1:])
    projector = Projector(
        spec, layer, rule, model_options.device, input_shape=shape, memory_budget=memory_budget
    )
    forward = projector.forward(model_input.array)
    picks = projector.strongest(
        forward, top=top or 1, channel=channel, position=position, skip_saturated=not saturated
    )
    if projector.skipped_saturated:
        info(
            f"skipped {projector.skipped_saturated} saturated units (at the bound "
            f"{projector.saturation_bound:g} of layer {projector.layer}); --saturated takes them"
        )
    if input.suffix.lower() != ".npy":
        info(f"preprocessing: {how}")
    info(f"running on {projector.provider}")
    projections = projector.project_crops(forward, picks)
    write_projections(
        paths.output, projections, projector, model_input, picks, model=model, input=input
    )
    info(f"projected {len(picks)} from layer {projector.layer}")
