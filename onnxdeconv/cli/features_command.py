"""``onnxdeconv features``: the top-k activations of each channel over an image folder (Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.features import (
    FeaturesState,
    feature_channels,
    feature_layer_names,
    saturation_bounds,
)
from onnxdeconv.cli import options, parse
from onnxdeconv.cli.features_options import describe_ray, interrupted, page_options, write_pages
from onnxdeconv.cli.feedback import info, output_folder, progress
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.engines import dataset_images, engine_named, file_meta, run_meta
from onnxdeconv.engines import features as mine_on
from onnxdeconv.errors import InputError


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("images")
@options.layers_option("the deepest rectified layer at each resolution")
@click.option(
    "--channels",
    default="0-15",
    show_default=True,
    help="'all', a range (0-15) or a list (0,3,7); channels a layer lacks are left out.",
)
@options.count_option(
    "--per-channel", default=9, text="Images kept per channel (the paper's top-9)."
)
@click.option("--shard", metavar="i/n", help="Process only images whose index % n == i.")
@click.option("--resume", is_flag=True, help="Continue from the state's last checkpoint.")
@click.option(
    "--state",
    "state_path",
    type=options.PATH,
    help="State file (.npz); default: OUTDIR/features_state.npz (…_state_IofN.npz for a shard).",
)
@options.count_option("--checkpoint-every", default=20, text="Save the state every N batches.")
@page_options
@options.rule_option
@options.memory_budget_option
@click.option(
    "--saturated",
    is_flag=True,
    help="Let the top-k take units at the layer's upper bound (a ReLU6 at 6), whose gradient "
    "and guided projections are zero; by default they are skipped.",
)
@options.engine_options
@options.model_options()
@options.output_option("Output folder (created); default: MODEL-stem_features.")
def features(
    model: Path,
    images: str,
    layers: list[str] | None,
    channels: str,
    per_channel: int,
    shard: str | None,
    resume: bool,
    state_path: Path | None,
    checkpoint_every: int,
    per_page: int,
    batch_size: int | None,
    workers: int | None,
    rule: Rule,
    memory_budget: str | None,
    saturated: bool,
    engine: str,
    address: str | None,
    gpus_per_worker: float,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Find each channel's top-k activations over a folder of images and show them (Fig. 2).

    Streams the images of IMAGES (a folder, searched recursively; a text file listing one image
    per line; with --engine ray also a URI such as s3://bucket/val) through the model in
    batches and keeps, per layer and channel, the k images with the highest maximum activation
    (one per image). Then projects each of them, at the position of that maximum, back to pixel
    space (--rule; a resumed or merged run keeps the rule it started with) and writes, per
    layer, a picture of the projections beside the image patches their units see, and a JSON
    of the entries. Units at a layer's upper bound (a ReLU6 at 6) are left out unless
    --saturated. Unreadable images are skipped and listed. With --shard the run writes only
    its state, for 'onnxdeconv merge'; an interrupted run continues with --resume. --engine
    ray runs the decoding, the forward passes and the projections on a Ray cluster (same
    results).

    Example: onnxdeconv features models/digitnet.onnx models/examples --layers relu2 --per-channel 4
    """
    index, count = parse.shard(shard)
    chosen = parse.channel_ranges(channels)
    chosen_engine = engine_named(
        engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker
    )
    names, root = dataset_images(images)
    per_channel = min(per_channel, len(names))  # one entry per image: no slots to stay empty
    _, prepared, preprocessing, how = model_options.load(model)
    tracked = feature_channels(prepared, feature_layer_names(prepared, layers or []), chosen)
    outdir = output_folder(output or Path(f"{model.stem}_features"))
    stem = "features_state" if count == 1 else f"features_state_{index}of{count}"
    state_path = state_path or outdir / f"{stem}.npz"
    files = file_meta(model, root)
    bounds = {} if saturated else saturation_bounds(prepared, tracked)
    meta = {**files, **run_meta(prepared, preprocessing, (index, count), rule, bool(bounds))}
    state = FeaturesState.resume(state_path, names, tracked, per_channel, meta) if resume else None
    if resume and state is None:
        info(f"no checkpoint at {state_path}: starting from the beginning")
    elif state is not None:
        info(f"resuming from {state_path}: {state.processed} images done")
    mine = len(range(index, len(names), count))
    todo = len(state.todo((index, count))) if state else mine
    info(f"preprocessing: {how}")
    shard_note = f" (shard {index}/{count} of {len(names)})" if count > 1 else ""
    layer_list = ", ".join(prepared.alias_of.get(n, n) for n in tracked)
    info(f"layers {layer_list}; {todo} of {mine} images to stream{shard_note}")
    for name, bound in bounds.items():
        at = f"the bound {bound:g} of layer {prepared.alias_of.get(name, name)}"
        info(f"saturated units (at {at}) are left out; --saturated takes them")
    with (
        interrupted(state_path),
        progress(todo, "streaming", "img", so_far=True, logged=True) as advance,
    ):
        result = mine_on(
            prepared,
            names,
            layers=list(tracked),
            channels=chosen,
            per_channel=per_channel,
            state=state,
            batch_size=batch_size,
            checkpoint=state_path,
            checkpoint_every=checkpoint_every,
            shard=(index, count),
            root=root,
            preprocessing=preprocessing,
            meta=files,
            engine=chosen_engine or "local",
            workers=workers,
            rule=rule,
            skip_saturated=not saturated,
            device=model_options.device,
            memory_budget=memory_budget,
            progress=advance,
            on_skip=lambda _, reason: info(f"skipped: {reason}"),
        )
    if result.provider:
        info(f"running on {result.provider}")
    if chosen_engine is not None:
        info(f"ray: {describe_ray(chosen_engine.describe())}")
    if result.state.skipped:
        info(f"skipped {len(result.state.skipped)} unreadable images (listed in the JSON)")
    click.echo(str(state_path))
    if count > 1:
        merge = f"onnxdeconv merge {outdir}/features_state_*of{count}.npz -o {outdir}"
        info(f"shard {index}/{count} done; when all are, run: {merge}")
    elif result.state.counted == 0:
        raise InputError(f"none of the {len(names)} images in '{images}' is readable")
    else:
        write_pages(result, outdir, model, per_page, state_path)
