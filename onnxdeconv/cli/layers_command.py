"""``onnxdeconv layers``: the tensors a projection can start from."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.cli import options
from onnxdeconv.graph.load import load_model
from onnxdeconv.outputs import json_text
from onnxdeconv.prepared import Layer, prepare

_HEADER = ("alias", "tensor", "op", "shape", "receptive field", "projectable")


def _table(rows: list[Layer]) -> list[str]:
    """One line per layer, columns padded to their widest cell; the last column is free."""
    table = [_HEADER]
    for r in rows:
        status = "yes" if r.projectable else f"no: {r.reason}"
        shape = "x".join(map(str, r.shape))
        table.append((r.alias, r.name, r.op, shape, r.receptive_field.describe(), status))
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADER) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in table
    ]


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
    loaded = load_model(model)
    rows = prepare(loaded, model_options.input_shape(loaded)).layers()
    if as_json:
        click.echo(json_text([row.to_json() for row in rows]))
        return
    for line in _table(rows):
        click.echo(line)
