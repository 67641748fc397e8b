"""``onnxdeconv evolution``: feature maps through a series of training checkpoints (Fig. 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast

import click
from tqdm import tqdm

from onnxdeconv.analysis.evolution import (
    CHANNELS_PER_LAYER,
    THRESHOLD,
    EvolutionReport,
    LayerTrace,
    build_report,
    check_same_architecture,
    checkpoint_epoch,
    trace_checkpoint,
)
from onnxdeconv.analysis.layers import MAX_DEFAULT_LAYERS, evolution_layers
from onnxdeconv.cli import options
from onnxdeconv.errors import SelectionError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import image_layout
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.evolution import evolution_figure
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT


@click.command(context_settings=CONTEXT)
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--images",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of images (searched recursively) to find each map's strongest activation in.",
)
@click.option(
    "--layers",
    metavar="L1,L2,..",
    help="Tensor names or aliases; default: the Relu layers with spatial maps (at most "
    f"{MAX_DEFAULT_LAYERS}, spread over the depth).",
)
@click.option(
    "--channels",
    metavar="C1,C2,..",
    help="Feature maps to follow in every layer; default: per layer, the --count maps with the "
    "highest activation in the last checkpoint.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=CHANNELS_PER_LAYER,
    show_default=True,
    help="Maps per layer when --channels is not given.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=THRESHOLD,
    show_default=True,
    help="Similarity a layer must keep to the next checkpoint from where it converges on.",
)
@options.preset_option
@click.option("--limit", type=click.IntRange(min=1), help="Use at most N images (sorted by path).")
@options.size_option
@options.device_option
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="OUT.png; default: evolution.png"
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON."
)
def evolution(
    checkpoints: tuple[Path, ...],
    images: Path,
    layers: str | None,
    channels: str | None,
    count: int,
    threshold: float,
    preset: str | None,
    limit: int | None,
    size: str | None,
    device: str,
    output: Path | None,
    json_path: Path | None,
) -> None:
    """Follow feature maps through training checkpoints, as in Zeiler & Fergus' Fig. 4.

    CHECKPOINTS are ONNX files of one architecture, in training order (ordered by their
    onnxdeconv.epoch metadata when every file has one). At each checkpoint, each chosen map's
    strongest activation over all the images is projected back to pixel space (deconvnet) and cut
    to the unit's receptive field. The picture has one row per map and one column per checkpoint.
    The table gives, per layer, the mean cosine similarity of the crops between consecutive
    checkpoints, and where the layer converges: the first checkpoint after which that similarity
    stays at or above --threshold. Unreadable images are skipped.

    Example: onnxdeconv evolution models/digitnet_checkpoints/epoch_*.onnx --images models/examples
    """
    output = output or Path("evolution.png")
    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"'{output}' must end in .png", param_hint="-o")
    for path, hint in ((output, "-o"), (json_path, "--json")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise click.BadParameter(
                f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
            )
    if len(checkpoints) < 2:
        raise click.BadParameter(
            "give at least two checkpoints, in training order", param_hint="CHECKPOINTS"
        )
    wanted_channels = _channel_list(channels)
    files = options.image_files(images, limit)
    shape = None
    prepared: list[PreparedModel] = []
    for path in checkpoints:
        loaded = load_model(path)
        shape = shape or options.input_shape_for(loaded, options.int_pair(size, "--size"))
        prepared.append(prepare(loaded, shape))
    names = [str(path) for path in checkpoints]
    prepared, names = _training_order(prepared, names)
    first = prepared[0]
    chosen = (
        [first.resolve(name.strip()) for name in layers.split(",") if name.strip()]
        if layers
        else evolution_layers(first)
    )
    if not chosen:
        raise click.BadParameter("name at least one layer", param_hint="--layers")
    check_same_architecture(prepared, chosen, names)
    if wanted_channels is not None:
        for name in chosen:
            available = first.info[name].per_sample[0]
            if max(wanted_channels) >= available:
                alias = {v: k for k, v in first.aliases.items()}.get(name, name)
                raise SelectionError(
                    f"channel {max(wanted_channels)} is out of range: layer '{alias}' has "
                    f"{available} channels (0..{available - 1}); fix --channels"
                )
    preprocessing, source = options.resolve_preprocessing(
        first.loaded, preset, None, None, None, False
    )
    click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    batch, image_names = options.load_images(
        files, first.loaded, preprocessing, first.input_shape, images
    )
    traces: list[dict[str, LayerTrace] | None] = [None] * len(prepared)
    # The last checkpoint goes first: without --channels, the trained model picks the maps.
    order = [len(prepared) - 1, *range(len(prepared) - 1)]
    wanted: dict[str, list[int] | None] = dict.fromkeys(chosen, wanted_channels)
    for index in tqdm(order, desc="checkpoints", unit="ckpt", file=sys.stderr):
        trace = trace_checkpoint(prepared[index], batch, wanted, count, device=cast(Device, device))
        traces[index] = trace
        wanted = {name: layer.channels for name, layer in trace.items()}
    report = build_report(prepared, [t for t in traces if t is not None], threshold)
    layout, _ = image_layout(first.input_shape)
    title = f"{Path(names[0]).parent.name or 'checkpoints'} · {len(batch)} images"
    figure = evolution_figure(
        report, layout=layout, bgr=preprocessing.bgr, title=title, image_names=image_names
    )
    save_figure(figure, output)
    if json_path is not None:
        data = report.to_json(image_names, names)
        with atomic_path(json_path) as temp:
            temp.write_text(json.dumps(data, indent=2) + "\n")
    click.echo(_table(report))
    click.echo(str(output))
    if json_path is not None:
        click.echo(str(json_path))


def _channel_list(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        parsed = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) < 0:
        raise click.BadParameter(
            f"expected channel numbers separated by commas, such as 0,3,7, got '{value}'",
            param_hint="--channels",
        )
    return list(dict.fromkeys(parsed))


def _training_order(
    prepared: list[PreparedModel], names: list[str]
) -> tuple[list[PreparedModel], list[str]]:
    epochs = [checkpoint_epoch(p) for p in prepared]
    if any(epoch is None for epoch in epochs):
        return prepared, names
    order = sorted(range(len(prepared)), key=lambda i: cast(float, epochs[i]))
    if order != list(range(len(prepared))):
        click.echo("ordered the checkpoints by their onnxdeconv.epoch metadata", err=True)
    return [prepared[i] for i in order], [names[i] for i in order]


def _table(report: EvolutionReport) -> str:
    steps = [
        f"{_short(a)}→{_short(b)}" for a, b in zip(report.labels, report.labels[1:], strict=False)
    ]
    header = ["layer", "maps", *steps, "converges at"]
    rows = [header]
    for name in report.layers:
        stable = report.stability[name]
        converged = report.converged_label(name)
        if converged is None:
            last = float(stable.similarity[-1])
            converged = f"not yet (last {last:.2f} < {stable.threshold:g})"
        rows.append(
            [
                report.aliases.get(name, name),
                ",".join(map(str, report.channels[name])),
                *(f"{value:.3f}" for value in stable.similarity),
                converged,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _short(label: str) -> str:
    return label.removeprefix("epoch ")
