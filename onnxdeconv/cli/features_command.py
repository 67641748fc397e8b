"""``onnxdeconv features``: the top-k activations of each channel over an image folder (Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.cli.features_options import (
    choose_channels,
    info,
    output_folder,
    page_options,
    parse_channels,
    parse_shard,
    progress_bar,
    resume_state,
    streaming,
    write_pages,
)
from onnxdeconv.engines import folder_images, mine_features, run_meta
from onnxdeconv.errors import InputError
from onnxdeconv.graph.load import load_model
from onnxdeconv.outputs.features import file_meta
from onnxdeconv.prepared import prepare


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images_dir", type=click.Path(path_type=Path))
@click.option(
    "--layers",
    metavar="A,B,..",
    help="Tensor names or aliases; default: the deepest rectified layer at each resolution.",
)
@click.option(
    "--channels",
    default="0-15",
    show_default=True,
    help="'all', a range (0-15) or a list (0,3,7); channels a layer lacks are left out.",
)
@click.option("--top", type=click.IntRange(min=1), default=9, show_default=True)
@click.option("--shard", metavar="i/n", help="Process only images whose index % n == i.")
@click.option("--resume", is_flag=True, help="Continue from the state's last checkpoint.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path),
    help="State file (.npz); default: OUTDIR/features_state.npz (…_state_IofN.npz for a shard).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Save the state every N batches.",
)
@page_options
@options.model_options()
@options.output_option("Output folder (created); default: MODEL-stem_features.")
def features(
    model: Path,
    images_dir: Path,
    layers: str | None,
    channels: str,
    top: int,
    shard: str | None,
    resume: bool,
    state_path: Path | None,
    checkpoint_every: int,
    per_page: int,
    batch_size: int | None,
    workers: int | None,
    model_options: options.ModelOptions,
    output: Path | None,
) -> None:
    """Find each channel's top-k activations over a folder of images and show them (Fig. 2).

    Streams every image under IMAGES_DIR (recursively) through the model in batches and keeps,
    per layer and channel, the k images with the highest maximum activation (one per image). Then
    projects each of them, at the position of that maximum, back to pixel space with the
    deconvnet and writes, per layer, a picture of the projections beside the image patches their
    units see, and a JSON of the entries. Unreadable images are skipped and listed. With --shard
    the run writes only its state, for 'onnxdeconv merge'; an interrupted run continues with
    --resume.

    Example: onnxdeconv features models/digitnet.onnx models/examples --layers relu2 --top 4
    """
    index, count = parse_shard(shard)
    chosen = parse_channels(channels)
    names = folder_images(images_dir)
    loaded = load_model(model)
    prepared = prepare(loaded, model_options.input_shape(loaded))
    tracked = choose_channels(prepared, layers, chosen)
    preprocessing, source = model_options.preprocessing(loaded)
    outdir = output_folder(output or Path(f"{model.stem}_features"))
    stem = "features_state" if count == 1 else f"features_state_{index}of{count}"
    state_path = state_path or outdir / f"{stem}.npz"
    files = file_meta(model, images_dir)
    meta = {**files, **run_meta(prepared, preprocessing, (index, count))}
    state = resume_state(state_path, resume, names, tracked, top, meta)
    mine = len(range(index, len(names), count))
    todo = len(state.todo((index, count))) if state else mine
    info(f"preprocessing: {source}: {preprocessing.describe()}")
    aliases = prepared.alias_of
    shard_note = f" (shard {index}/{count} of {len(names)})" if count > 1 else ""
    layer_list = ", ".join(aliases.get(n, n) for n in tracked)
    info(f"layers {layer_list}; {todo} of {mine} images to stream{shard_note}")
    bar, progress = progress_bar(todo, "img", "streaming")
    with streaming(state_path), bar:
        result = mine_features(
            prepared,
            names,
            layers=list(tracked),
            channels=chosen,
            top=top,
            state=state,
            batch_size=batch_size,
            checkpoint=state_path,
            checkpoint_every=checkpoint_every,
            shard=(index, count),
            root=images_dir,
            preprocessing=preprocessing,
            meta=files,
            workers=workers,
            device=model_options.device,
            progress=progress,
            on_skip=lambda _, reason: info(f"skipped: {reason}"),
        )
    if result.provider:
        info(f"running on {result.provider}")
    if result.state.skipped:
        info(f"skipped {len(result.state.skipped)} unreadable images (listed in the JSON)")
    click.echo(str(state_path))
    if count > 1:
        merge = f"onnxdeconv merge {outdir}/features_state_*of{count}.npz -o {outdir}"
        info(f"shard {index}/{count} done; when all are, run: {merge}")
    elif result.state.counted == 0:
        raise InputError(f"none of the {len(names)} images in '{images_dir}' is readable")
    else:
        write_pages(result, outdir, model, per_page, state_path)
