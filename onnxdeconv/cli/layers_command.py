"""``onnxdeconv layers``: the tensors a projection can start from."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.outputs import json_text
from onnxdeconv.outputs.layers import layers_table


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.model_options(images=False, device=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(model: Path, model_options: options.ModelOptions, as_json: bool) -> None:
    """List the tensors a projection can start from.

    Shows each tensor's short alias, op, shape, receptive field (size and stride in input pixels)
    and whether it is projectable, with the reason when it is not.

    Example: onnxdeconv layers models/digitnet.onnx
    """
    rows = model_options.prepared(model).layers()
    if as_json:
        click.echo(json_text([row.to_json() for row in rows]))
        return
    for line in layers_table(rows):
        click.echo(line)
