"""``onnxdeconv export``: write a self-contained projector graph for other runtimes."""

from __future__ import annotations

from pathlib import Path

import click
import onnx

from onnxdeconv.cli.options import CONTEXT, ModelOptions, model_options
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.export import ExportOptions, export_projector
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.prepared import prepare


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--layer", help="Tensor name or alias (see 'layers'); default: deepest projectable.")
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default="deconvnet",
    show_default=True,
    help="What rectifiers pass back.",
)
@click.option(
    "--position-input",
    is_flag=True,
    help="Take the position as an input instead of finding the arg-max in the graph.",
)
@click.option("--batch", is_flag=True, help="Take K channels at once: channel is int64 [K].")
@model_options(images=False, device=None)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the projector graph (.onnx).",
)
def export(
    model: Path,
    layer: str | None,
    rule: Rule,
    position_input: bool,
    batch: bool,
    model_options: ModelOptions,
    output: Path,
) -> None:
    """Write one ONNX graph that projects a layer's activations, for any ONNX runtime.

    The graph takes the model's input (batch 1) and `channel` (int64 [1], or [K] with --batch)
    and returns `projection`, `activation` and `position` (see the README for a Node.js and a
    C++ example). It uses opset 16 to 18 and the lowest IR version that opset allows. --size
    fixes the input size of a model whose size is dynamic.

    Example: onnxdeconv export models/digitnet.onnx --layer relu2 -o digitnet_relu2.onnx
    """
    if output.suffix.lower() != ".onnx":
        raise click.BadParameter(f"'{output}' must end in .onnx", param_hint="-o")
    loaded = load_model(model)
    prepared = prepare(loaded, model_options.input_shape(loaded))
    projector = export_projector(prepared, ExportOptions(layer, rule, position_input, batch))
    with atomic_path(output) as temp:
        onnx.save(projector, str(temp))
    layer_name = next(p.value for p in projector.metadata_props if p.key == "onnxdeconv.layer")
    click.echo(
        f"exported layer {layer_name} (rule {rule}, opset {projector.opset_import[0].version}, "
        f"IR {projector.ir_version})",
        err=True,
    )
    click.echo(str(output))
