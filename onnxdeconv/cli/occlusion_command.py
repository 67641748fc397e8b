"""``onnxdeconv occlusion``: occlusion sensitivity maps, Zeiler & Fergus Fig. 7."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click
import numpy as np
from tqdm import tqdm

from onnxdeconv.analysis.layers import occlusion_layer
from onnxdeconv.analysis.occlusion import (
    OcclusionResult,
    default_size,
    default_stride,
    mid_grey,
    occluder_starts,
    occlusion_maps,
    occlusion_projections,
    spatial_axes,
)
from onnxdeconv.cli import options
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.labels import read_labels, resolve_label
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.projector import Projector
from onnxdeconv.render import save_figure
from onnxdeconv.render.occlusion import occlusion_figure, short_label
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--label", help="Class to track, as an index or a name; default: the predicted one.")
@options.labels_option
@click.option(
    "--size",
    type=click.IntRange(min=1),
    help="Occluder side in pixels; default: a sixth of the image side.",
)
@click.option(
    "--stride", type=click.IntRange(min=1), help="Step between occluders; default: size / 2."
)
@click.option(
    "--layer", help="Tensor name or alias; default: the deepest layer with a spatial map."
)
@click.option("--channel", type=int, help="Feature map to track; default: the strongest.")
@click.option(
    "--projections",
    "count",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Occluder positions shown in the projection panel (c).",
)
@options.preset_option
@click.option("--mean", metavar="M[,M,M]", help="Per-channel mean, in the model's channel order.")
@click.option("--std", metavar="S[,S,S]", help="Per-channel standard deviation.")
@click.option("--scale", type=float, help="Pixel (0-255) multiplier applied before the mean.")
@click.option("--bgr", is_flag=True, help="Feed channels in BGR order.")
@click.option(
    "--input-size", metavar="H,W", help="Resize the image to H,W (models with dynamic size)."
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Occluded images per forward run.",
)
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png; default: IMAGE-stem_occlusion.png",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the maps as JSON."
)
def occlusion(
    model: Path,
    image: Path,
    label: str | None,
    labels_path: Path | None,
    size: int | None,
    stride: int | None,
    layer: str | None,
    channel: int | None,
    count: int,
    preset: str | None,
    mean: str | None,
    std: str | None,
    scale: float | None,
    bgr: bool,
    input_size: str | None,
    batch: int,
    device: str,
    output: Path | None,
    json_path: Path | None,
) -> None:
    """Slide a grey square over the image and map what the model loses (Zeiler & Fergus Fig. 7).

    For every occluder position: the total activation of the feature map that is strongest on the
    unoccluded image (b), the probability of the class (d) and the most probable class (e); and
    that feature map projected back to pixels with the occluder at a few positions (c). The
    occluder is a mid-grey pixel (128) after preprocessing; for a .npy input, the input's mean.

    Example: onnxdeconv occlusion models/digitnet.onnx models/examples/digit_7.png --label 7
    """
    output = output or Path(f"{image.stem}_occlusion.png")
    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"'{output}' must end in .png", param_hint="-o")
    for path, hint in ((output, "-o"), (json_path, "--json")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise click.BadParameter(
                f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
            )
    loaded = load_model(model)
    labels = read_labels(labels_path) if labels_path is not None else loaded.labels
    preprocessing, source = options.resolve_preprocessing(loaded, preset, mean, std, scale, bgr)
    model_input = load_input(
        image, loaded, preprocessing, options.int_pair(input_size, "--input-size")
    )
    prepared = prepare(loaded, tuple(model_input.array.shape[1:]))
    # Check the options before the long run starts, so a mistake costs nothing.
    height, width = (prepared.input_shape[a] for a in spatial_axes(prepared.input_shape))
    side = size or default_size(height, width)
    step = stride or default_stride(side)
    total = len(occluder_starts(height, side, step)) * len(occluder_starts(width, side, step))
    target = resolve_label(label, labels, _class_count(prepared)) if label is not None else None
    projector = Projector(
        prepared,
        layer=prepared.resolve(layer) if layer else occlusion_layer(prepared),
        device=cast(Device, device),
        keep_outputs=True,
    )
    channels = projector.layer_shape[0]
    if channel is not None and not 0 <= channel < channels:
        raise SelectionError(
            f"channel {channel} is out of range: layer '{projector.layer}' has {channels} "
            f"channels (0..{channels - 1})"
        )
    fill = None
    if model_input.preprocessing is not None:
        click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
        fill = mid_grey(preprocessing, prepared.input_shape, loaded.input_dtype)
    click.echo(f"running on {projector.provider}", err=True)
    with tqdm(total=total, desc="occluded images", unit="img", leave=False, disable=None) as bar:
        result = occlusion_maps(
            projector,
            model_input.array,
            channel=channel,
            label=target,
            size=size,
            stride=stride,
            fill=fill,
            batch_size=batch,
            progress=bar.update,
        )
    panel = None
    if count:
        panel = occlusion_projections(projector, model_input.array, result, count=count)
    alias = {v: k for k, v in prepared.aliases.items()}.get(result.layer, result.layer)
    bgr_order = bool(model_input.preprocessing and model_input.preprocessing.bgr)
    figure = occlusion_figure(
        result,
        model_input.display,
        panel,
        labels=labels,
        layout=model_input.layout,
        bgr=bgr_order,
        layer_name=alias,
        title=f"{model.name} · {image.name} · occlusion sensitivity",
    )
    save_figure(figure, output)
    if json_path is not None:
        data = {
            "model": str(model),
            "image": str(image),
            "layer_alias": alias,
            **result.to_json(labels),
        }
        with atomic_path(json_path) as temp:
            temp.write_text(json.dumps(data, indent=2) + "\n")
    for line in _summary(result, labels, alias):
        click.echo(line)
    click.echo(str(output))
    if json_path is not None:
        click.echo(str(json_path))


def _class_count(prepared: PreparedModel) -> int:
    info = prepared.info.get(prepared.loaded.model.graph.output[-1].name)
    if info is None:
        raise InputError("the model's last output has no known shape: cannot read class scores")
    return int(np.prod(info.per_sample))


def _summary(result: OcclusionResult, labels: list[str] | None, alias: str) -> list[str]:
    name = short_label(result.label, labels)
    i, j = np.unravel_index(int(result.probability.argmin()), result.probability.shape)
    fi, fj = np.unravel_index(int(result.feature_map.argmin()), result.feature_map.shape)
    scores = "logits, softmax applied" if result.softmax_applied else "probabilities"
    changed = int((result.top_label != result.label).sum())
    drop = (
        f" ({1 - result.feature_map.min() / result.baseline_activation:.0%} drop)"
        if result.baseline_activation > 0
        else ""
    )
    return [
        f"class {result.label} ({name}): p = {result.baseline_probability:.3f} unoccluded, "
        f"predicted {result.predicted} ({short_label(result.predicted, labels)}); "
        f"class output read as {scores}",
        f"occluder {result.size}x{result.size} px, stride {result.stride}: "
        f"{len(result.rows)}x{len(result.columns)} positions",
        f"lowest p = {result.probability.min():.3f} with the occluder at y {result.rows[i]}, "
        f"x {result.columns[j]}; another class wins at {changed} of {result.top_label.size} "
        "positions",
        f"{alias} channel {result.channel}: total {result.baseline_activation:.4g} unoccluded, "
        f"lowest {result.feature_map.min():.4g}{drop} with the occluder at y {result.rows[fi]}, "
        f"x {result.columns[fj]}",
    ]
