"""``onnxdeconv merge``: combine the shard states of ``onnxdeconv features`` into one result."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.cli.features_options import page_options, write_pages
from onnxdeconv.cli.feedback import info, output_folder
from onnxdeconv.cli.model import device_option
from onnxdeconv.engines import merge_states
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
    result = merge_states(
        states,
        model=model,
        images=images,
        partial=partial,
        device=device,
        batch_size=batch_size,
        workers=workers,
    )
    merged, outdir = result.state, output_folder(output)
    state_path = state_path or outdir / "features_state.npz"
    merged.save(state_path)
    click.echo(str(state_path))
    info(
        f"merged {len(states)} states: {merged.processed} of {len(merged.images)} images, "
        f"{len(merged.skipped)} skipped"
    )
    write_pages(result, outdir, model or Path(merged.meta["model"]), per_page, state_path)
