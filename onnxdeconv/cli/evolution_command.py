"""``onnxdeconv evolution``: feature maps through a series of training checkpoints (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.evolution import (
    CHANNELS_PER_LAYER,
    THRESHOLD,
    checked_layers,
    load_checkpoints,
    trace_evolution,
)
from onnxdeconv.analysis.layers import MAX_DEFAULT_LAYERS
from onnxdeconv.cli import options, parse
from onnxdeconv.cli.feedback import find_images, info, progress, read_images
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.engines import engine_named
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.evolution import write_evolution


@click.command(context_settings=options.CONTEXT)
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@options.images_option("to find each map's strongest activation in", required=True)
@options.layers_option(
    f"the Relu layers with spatial maps (at most {MAX_DEFAULT_LAYERS}, spread over the depth)"
)
@click.option(
    "--channels",
    metavar="C1,C2,..",
    help="Feature maps to follow in every layer; default: per layer, the --count maps with the "
    "highest activation in the last checkpoint.",
)
@options.count_option(
    "--count", default=CHANNELS_PER_LAYER, text="Maps per layer when --channels is not given."
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=THRESHOLD,
    show_default=True,
    help="Similarity a layer must keep to the next checkpoint from where it converges on.",
)
@options.limit_option
@options.rule_option
@options.engine_options
@options.model_options()
@options.outputs("evolution.png", json="the report")
def evolution(
    checkpoints: tuple[Path, ...],
    images: Path,
    layers: list[str] | None,
    channels: str | None,
    count: int,
    threshold: float,
    limit: int | None,
    rule: Rule,
    engine: str,
    address: str | None,
    gpus_per_worker: float,
    model_options: options.ModelOptions,
    paths: OutputPaths,
) -> None:
    """Follow feature maps through training checkpoints, as in Zeiler & Fergus' Fig. 4.

    CHECKPOINTS are ONNX files of one architecture, in training order (ordered by their
    onnxdeconv.epoch metadata when every file has one). At each checkpoint, each chosen map's
    strongest activation over all the images is projected back to pixel space (--rule) and cut
    to the unit's receptive field. The picture has one row per map and one column per checkpoint.
    The table gives, per layer, the mean cosine similarity of the crops between consecutive
    checkpoints, and where the layer converges: the first checkpoint after which that similarity
    stays at or above --threshold. Unreadable images are skipped and listed. With --engine ray the
    checkpoints are traced on a Ray cluster's workers, one task each (same results).

    Example: onnxdeconv evolution models/digitnet_checkpoints/epoch_*.onnx --images models/examples
    """
    wanted_channels = parse.int_list(channels, "--channels")
    chosen_engine = engine_named(engine, address=address, gpus_per_worker=gpus_per_worker)
    files = find_images(images, limit)
    prepared, names = load_checkpoints(checkpoints, model_options.size)
    if names != [str(path) for path in checkpoints]:
        info("ordered the checkpoints by their onnxdeconv.epoch metadata")
    chosen = checked_layers(prepared, layers, wanted_channels, names)
    preprocessing, how = model_options.preprocessing(prepared[0].loaded)
    info(f"preprocessing: {how}")
    found = read_images(files, prepared[0], preprocessing, images)
    with progress(len(prepared), "checkpoints", "ckpt", logged=True) as advance:
        report = trace_evolution(
            prepared,
            found.batch,
            chosen,
            wanted_channels,
            count,
            threshold,
            names=names,
            rule=rule,
            device=model_options.device,
            progress=advance,
            mapper=None if chosen_engine is None else chosen_engine.map,
        )
    info(f"running on {report.provider}")
    bgr, shape = preprocessing.bgr, prepared[0].input_shape
    summary = write_evolution(
        report,
        paths,
        checkpoints=names,
        image_names=found.names,
        input_shape=shape,
        bgr=bgr,
        skipped=found.skipped,
    )
    click.echo(summary)
