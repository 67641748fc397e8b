"""Entry point of the ``onnxdeconv`` command."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import sys
from pathlib import Path
from typing import cast

import click

from onnxdeconv import __version__
from onnxdeconv.cli import options
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.files import save_npy
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.prepared import prepare
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT


class _LazyGroup(click.Group):
    """Loads each command module of onnxdeconv/cli/<name>_command.py only when it is run.

    Importing every analysis (and matplotlib) would cost a one-off projection a second.
    """

    def _modules(self) -> dict[str, str]:
        import onnxdeconv.cli as package

        return {
            m.name.removesuffix("_command"): f"onnxdeconv.cli.{m.name}"
            for m in pkgutil.iter_modules(package.__path__)
            if m.name.endswith("_command")
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._modules()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._modules():
            module = importlib.import_module(self._modules()[cmd_name])
            command = getattr(module, cmd_name)
        return command


@click.group(cls=_LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="onnxdeconv")
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does.")
def cli(verbose: bool) -> None:
    """Project convnet activations back to pixel space: the Zeiler & Fergus deconvnet."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


def _info(message: str) -> None:
    click.echo(message, err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@options.size_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(model: Path, size: str | None, as_json: bool) -> None:
    """List the tensors a projection can start from.

    Shows each tensor's short alias, op, shape, receptive field (size and stride in input pixels)
    and whether it is projectable, with the reason when it is not.

    Example: onnxdeconv layers models/digitnet.onnx
    """
    loaded = load_model(model)
    input_shape = options.input_shape_for(loaded, options.int_pair(size, "--size"))
    rows = prepare(loaded, input_shape).layers()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "alias": r.alias,
                        "op": r.op,
                        "shape": list(r.shape),
                        "receptive_field": {
                            "size": r.receptive_field.size,
                            "stride": r.receptive_field.stride,
                            "offset": r.receptive_field.offset,
                        },
                        "projectable": r.projectable,
                        "reason": r.reason,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = [("alias", "tensor", "op", "shape", "receptive field", "projectable")]
    for r in rows:
        status = "yes" if r.projectable else f"no: {r.reason}"
        table.append(
            (
                r.alias,
                r.name,
                r.op,
                "x".join(map(str, r.shape)),
                r.receptive_field.describe(),
                status,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[5]
        )


def _parse_position(value: str | None) -> tuple[int, ...] | str | None:
    if value is None or value == "all":
        return value
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected H,W or 'all', got '{value}'", param_hint="--position"
        ) from None


@cli.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--layer", help="Tensor name or alias (see 'layers'); default: deepest projectable.")
@click.option("--channel", type=int, help="Channel to project; default: the strongest.")
@click.option(
    "--position",
    metavar="H,W|all",
    help="Position in the feature map; 'all' projects the whole map; default: arg-max.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="Project the K strongest channels, each at its arg-max.",
)
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default="deconvnet",
    show_default=True,
    help="What rectifiers pass back (see README).",
)
@options.preset_option
@click.option("--mean", metavar="M[,M,M]", help="Per-channel mean, in the model's channel order.")
@click.option("--std", metavar="S[,S,S]", help="Per-channel standard deviation.")
@click.option("--scale", type=float, help="Pixel (0-255) multiplier applied before the mean.")
@click.option("--bgr", is_flag=True, help="Feed channels in BGR order.")
@click.option("--size", metavar="H,W", help="Resize the image to H,W (models with dynamic size).")
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png (picture) or OUT.npy (float32 [K, *input_shape]); "
    "default: INPUT-stem_projection.png",
)
def project(
    model: Path,
    input: Path,
    layer: str | None,
    channel: int | None,
    position: str | None,
    top: int | None,
    rule: str,
    preset: str | None,
    mean: str | None,
    std: str | None,
    scale: float | None,
    bgr: bool,
    size: str | None,
    device: str,
    output: Path | None,
) -> None:
    """Project the strongest activations of a layer back to the input image.

    INPUT is an image (jpg, png, bmp, webp) preprocessed by --preset, or a .npy array in the
    model's input layout and dtype, fed as is.

    Example: onnxdeconv project models/digitnet.onnx models/examples/digit_7.png --top 8
    """
    output = output or Path(f"{input.stem}_projection.png")
    if output.suffix.lower() not in (".png", ".npy"):
        raise click.BadParameter(f"'{output}' must end in .png or .npy", param_hint="-o")
    if channel is not None and top is not None:
        raise click.UsageError("use --channel or --top, not both")
    if not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise click.BadParameter(
            f"output folder '{output.parent}' does not exist: create it first", param_hint="-o"
        )
    where = _parse_position(position)
    loaded = load_model(model)
    preprocessing, source = options.resolve_preprocessing(loaded, preset, mean, std, scale, bgr)
    model_input = load_input(input, loaded, preprocessing, options.int_pair(size, "--size"))
    projector = Projector(
        loaded,
        layer,
        cast(Rule, rule),
        cast(Device, device),
        input_shape=tuple(model_input.array.shape[1:]),
    )
    forward = projector.forward(model_input.array)
    picks = projector.strongest(forward, top=top or 1, channel=channel, position=where)
    if input.suffix.lower() != ".npy":
        _info(f"preprocessing: {source}: {preprocessing.describe()}")
    _info(f"running on {projector.provider}")
    projections = projector.project(forward, picks)
    if output.suffix.lower() == ".npy":
        save_npy(output, projections)
    else:
        # matplotlib loads only for pictures, not for a run that writes arrays.
        from onnxdeconv.render import Panel, display_projection, projection_figure, save_figure

        alias = {v: k for k, v in projector.prepared.aliases.items()}.get(projector.layer)
        name = alias or projector.layer
        panels = [Panel(model_input.display, input.name)]
        bgr_order = bool(model_input.preprocessing and model_input.preprocessing.bgr)
        outputs = [o.name for o in loaded.model.graph.output]
        labels = loaded.labels if projector.layer in outputs else None
        field = projector.prepared.receptive_fields[projector.layer]
        for projection, pick in zip(projections, picks, strict=True):
            picture = display_projection(projection, model_input.layout, bgr_order)
            label = _label(name, pick, labels)
            box = field.box(pick.position) if pick.position else None
            if box is not None and len(box) == 2:
                # Deep units see a small patch; show that patch, as Zeiler & Fergus do.
                (top, bottom), (left, right) = box
                height, width = picture.shape[:2]
                top, left = max(top, 0), max(left, 0)
                bottom, right = min(bottom, height), min(right, width)
                if (bottom - top) * (right - left) < height * width / 2:
                    picture = picture[top:bottom, left:right]
                    label += f" · crop y{top}:{bottom} x{left}:{right}"
            panels.append(Panel(picture, label))
        title = f"{model.name} · layer {name} · rule {rule}"
        save_figure(projection_figure(panels, title), output)
    _info(f"projected {len(picks)} from layer {projector.layer}")
    click.echo(str(output))


def _label(layer: str, pick: Selection, labels: list[str] | None) -> str:
    if pick.position is None:
        where = " (whole map)"
    else:
        where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
    name = f" {labels[pick.channel]}" if labels and pick.channel < len(labels) else ""
    return f"{layer} ch {pick.channel}{name}{where}\nact {pick.value:.3g}"


def main() -> None:
    """Run the CLI; user errors print one line on stderr and exit 2 (1 for failed checks)."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        command = click.get_current_context(silent=True)
        hint = " (see --help)"
        del command
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except OnnxDeconvError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
