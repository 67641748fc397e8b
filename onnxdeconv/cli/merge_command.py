"""``onnxdeconv merge``: combine the shard states of ``onnxdeconv features`` into one result."""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import click

from onnxdeconv.analysis.features import MATCHING, FeaturesState
from onnxdeconv.cli import options
from onnxdeconv.cli.features_options import page_options, write_pages
from onnxdeconv.cli.feedback import info, output_folder
from onnxdeconv.cli.model import device_option
from onnxdeconv.engines import FeaturesResult, default_batch, default_workers, preprocessing_of
from onnxdeconv.errors import InputError
from onnxdeconv.graph.load import load_model
from onnxdeconv.outputs.features import model_digest
from onnxdeconv.prepared import prepare
from onnxdeconv.runtime import Device


@click.command(context_settings=options.CONTEXT)
@click.argument("states", nargs=-1, required=True, type=options.PATH)
@options.output_option("Output folder (created).", required=True)
@click.option(
    "--state",
    "state_path",
    type=options.PATH,
    help="Where to write the merged state; default: OUTDIR/features_state.npz.",
)
@click.option("--model", type=options.PATH, help="The model, if it moved.")
@options.images_option("the states were made from, if it moved")
@click.option("--partial", is_flag=True, help="Render even if some images were not processed.")
@page_options
@device_option()
def merge(
    states: tuple[Path, ...],
    output: Path,
    state_path: Path | None,
    model: Path | None,
    images: Path | None,
    partial: bool,
    per_page: int,
    batch_size: int | None,
    workers: int | None,
    device: Device,
) -> None:
    """Merge the states of 'onnxdeconv features --shard i/n' runs and write the result.

    The merged top-k equals that of one run over all the images, entry for entry. Every shard
    must be complete (finish an interrupted one with --resume); the pictures and JSON are the
    ones 'onnxdeconv features' writes, and so is the merged state.

    Example: onnxdeconv merge out/features_state_0of2.npz out/features_state_1of2.npz -o out
    """
    loaded_states = [FeaturesState.load(path) for path in states]
    first = loaded_states[0]
    for path, state in zip(states[1:], loaded_states[1:], strict=True):
        differ = [key for key in MATCHING if state.meta.get(key) != first.meta.get(key)]
        if differ:
            raise InputError(
                f"'{path}' was made with another {', '.join(differ)} than '{states[0]}': merge "
                "only shards of one run"
            )
    merged = reduce(FeaturesState.merge, loaded_states)
    missing = len(merged.images) - merged.processed
    if missing and not partial:
        raise InputError(
            f"{missing} of {len(merged.images)} images are in none of the states (a shard is "
            "missing or unfinished): give every shard, finish one with --resume, or pass --partial"
        )
    model = model or Path(first.meta["model"])
    if not model.is_file():
        raise InputError(f"model '{model}' does not exist: give its new path with --model")
    if model_digest(model) != first.meta["model_sha256"]:
        raise InputError(f"'{model}' is not the model the states were made with: check --model")
    folder = images or Path(first.meta["folder"])
    if not folder.is_dir():
        raise InputError(f"image folder '{folder}' does not exist: give it with --images")
    prepared = prepare(load_model(model), tuple(int(d) for d in first.meta["input_shape"]))
    merged.meta = {**first.meta, "shard": [0, 1]}
    outdir = output_folder(output)
    state_path = state_path or outdir / "features_state.npz"
    merged.save(state_path)
    click.echo(str(state_path))
    info(
        f"merged {len(states)} states: {merged.processed} of {len(merged.images)} images, "
        f"{len(merged.skipped)} skipped"
    )
    result = FeaturesResult(
        merged,
        prepared,
        preprocessing_of(merged.meta),
        root=folder,
        device=device,
        batch_size=batch_size or default_batch(prepared),
        workers=workers or default_workers(),
    )
    write_pages(result, outdir, model, per_page, state_path)
