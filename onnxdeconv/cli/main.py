"""Entry point of the ``onnxdeconv`` command: the command group and its error handling.

Each command lives in ``onnxdeconv/cli/<name>_command.py`` and loads only when it runs (or when
``--help`` lists it), so that this module imports neither ONNX, ONNX Runtime nor matplotlib.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from onnxdeconv import __version__
from onnxdeconv.cli import CONTEXT
from onnxdeconv.errors import OnnxDeconvError


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


#: The option behind each library parameter that an error can name (``OnnxDeconvError.parameter``).
OPTIONS = {
    "baseline": "--write-baseline",
    "channels": "--channels",
    "device": "--device",
    "images": "--images",
    "input_shape": "--size H,W",
    "labels": "--labels FILE",
    "layers": "--layers",
    "model": "--model",
    "output": "-o/--output",
    "partial": "--partial",
    "preprocessing": "--preset (or --mean/--std/--scale/--bgr)",
    "rule": "--rule",
    "shard": "--shard",
    "top": "--top",
}


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
        click.echo(f"error: {exc.format_message()} (see --help)", err=True)
        sys.exit(exc.exit_code)
    except OnnxDeconvError as exc:
        option = OPTIONS.get(exc.parameter or "")
        hint = f" (option {option})" if option and option.split()[0] not in str(exc) else ""
        click.echo(f"error: {exc}{hint}", err=True)
        sys.exit(exc.exit_code)
