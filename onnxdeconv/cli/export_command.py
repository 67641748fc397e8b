"""``onnxdeconv export``: write a self-contained projector graph for other runtimes."""

from __future__ import annotations

from pathlib import Path

import click
import onnx

from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info
from onnxdeconv.cli.parse import check_output
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.export import ExportOptions, export_projector
from onnxdeconv.files import atomic_path


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@options.layer_option("the deepest projectable")
@options.rule_option
@click.option(
    "--position-input",
    is_flag=True,
    help="Take the position as an input instead of finding the arg-max in the graph.",
)
@click.option("--batch", is_flag=True, help="Take K channels at once: channel is int64 [K].")
@options.model_options(images=False, device=None)
@options.output_option("Where to write the projector graph (.onnx).", required=True)
def export(
    model: Path,
    layer: str | None,
    rule: Rule,
    position_input: bool,
    batch: bool,
    model_options: options.ModelOptions,
    output: Path,
) -> None:
    """Write one ONNX graph that projects a layer's activations, for any ONNX runtime.

    The graph takes the model's input (batch 1) and `channel` (int64 [1], or [K] with --batch)
    and returns `projection`, `activation` and `position` (docs/commands/export.md has a Node.js
    and a C++ example). It uses opset 16 to 18 and the lowest IR version that opset allows.
    --size fixes the input size of a model whose size is dynamic.

    Example: onnxdeconv export models/digitnet.onnx --layer relu2 -o digitnet_relu2.onnx
    """
    check_output(output, "-o", ".onnx")
    prepared = model_options.prepared(model)
    projector = export_projector(prepared, ExportOptions(layer, rule, position_input, batch))
    with atomic_path(output) as temp:
        onnx.save(projector, str(temp))
    layer_name = next(p.value for p in projector.metadata_props if p.key == "onnxdeconv.layer")
    opset = projector.opset_import[0].version
    info(f"exported layer {layer_name} (rule {rule}, opset {opset}, IR {projector.ir_version})")
    click.echo(str(output))
