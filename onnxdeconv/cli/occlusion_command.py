"""``onnxdeconv occlusion``: occlusion sensitivity maps, Zeiler & Fergus Fig. 7."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.layers import occlusion_layer
from onnxdeconv.analysis.occlusion import check_choice, occluder_grid, occlusion_maps
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, progress
from onnxdeconv.labels import read_labels
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.occlusion import write_occlusion
from onnxdeconv.projector import Projector


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("image", type=options.PATH)
@options.label_option("the predicted one")
@options.labels_option
@options.count_option(
    "--occluder", text="Occluder side in pixels; default: a sixth of the image side."
)
@options.count_option("--stride", text="Step between occluders; default: occluder / 2.")
@options.layer_option("the deepest layer with a spatial map")
@options.channel_option
@options.count_option(
    "--projections",
    "count",
    default=3,
    least=0,
    text="Occluder positions shown in the projection panel (c).",
)
@options.count_option("--batch-size", default=32, text="Occluded images per forward pass.")
@options.model_options()
@options.outputs("{image.stem}_occlusion.png", json="the maps")
def occlusion(
    model: Path,
    image: Path,
    label: str | None,
    labels_path: Path | None,
    occluder: int | None,
    stride: int | None,
    layer: str | None,
    channel: int | None,
    count: int,
    batch_size: int,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Slide a grey square over the image and map what the model loses (Zeiler & Fergus Fig. 7).

    For every occluder position: the total activation of the feature map that is strongest on the
    unoccluded image (b), the probability of the class (d) and the most probable class (e); and
    that feature map projected back to pixels with the occluder at a few positions (c). The
    occluder (--occluder pixels a side) is a mid-grey pixel (128) after preprocessing; for a .npy
    input, the input's mean. --size resizes the image (models with dynamic size).

    Example: onnxdeconv occlusion models/digitnet.onnx models/examples/digit_7.png --label 7
    """
    (loaded, prepared, _, how), model_input = model_options.load_input(model, image)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    # The grid is checked before the projector is built, so that a mistake costs nothing.
    _, _, rows, columns = occluder_grid(prepared.input_shape, occluder, stride)
    target = layer or occlusion_layer(prepared)
    projector = Projector(prepared, target, device=model_options.device, keep_outputs=True)
    chosen = check_choice(projector, channel, label, labels)
    if model_input.preprocessing is not None:
        info(f"preprocessing: {how}")
    info(f"running on {projector.provider}")
    with progress(len(rows) * len(columns), "occluded images", "img") as advance:
        result = occlusion_maps(
            projector,
            model_input.array,
            channel=channel,
            label=chosen,
            size=occluder,
            stride=stride,
            preprocessing=model_input.preprocessing,
            projections=count,
            batch_size=batch_size,
            progress=advance,
        )
    alias = prepared.alias_of.get(result.layer, result.layer)
    summary = write_occlusion(
        result, model_input, paths, labels=labels, layer_name=alias, model=model, image=image
    )
    click.echo(summary)
