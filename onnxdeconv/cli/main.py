"""Entry point of the ``onnxdeconv`` command: the command group and its error handling.

Each command lives in ``onnxdeconv/cli/<name>_command.py`` and loads only when it runs, so that
neither this module nor ``onnxdeconv --help`` imports ONNX, ONNX Runtime, numpy or matplotlib.
"""

from __future__ import annotations

import ast
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from onnxdeconv import __version__
from onnxdeconv.cli import CONTEXT
from onnxdeconv.cli.parse import refuse_overwriting_inputs
from onnxdeconv.errors import OnnxDeconvError, interrupted


class _LazyGroup(click.Group):
    """Loads each command module of onnxdeconv/cli/<name>_command.py only when it is run.

    Importing every analysis (and matplotlib) would cost a one-off projection a second, and the
    command list of ``--help`` a second and a half: it reads each command's docstring from the
    module's source instead.
    """

    def _modules(self) -> dict[str, Path]:
        return {path.stem.removesuffix("_command"): path for path in _COMMANDS.glob("*_command.py")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._modules()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._modules():
            module = importlib.import_module(f"onnxdeconv.cli.{cmd_name}_command")
            command = getattr(module, cmd_name)
        if command is not None and command.callback is not None:
            command.callback = _sparing_inputs(command.callback)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; Ctrl-C becomes :class:`InterruptError` before click says more."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise InterruptError from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with the first line of their help, importing none of them."""
        modules = self._modules()
        commands = {}
        for name in self.list_commands(ctx):
            commands[name] = super().get_command(ctx, name) or _described(name, modules[name])
        limit = formatter.width - 6 - max(map(len, commands))
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in commands.items()]
            )


class InterruptError(Exception):
    """The user pressed Ctrl-C (the command stops; atomic writes leave no partial file)."""


def _sparing_inputs(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback``, after refusing outputs that name one of the command's inputs.

    One check for every command, before any work (see :func:`parse.refuse_overwriting_inputs`).
    """
    if getattr(callback, "spares_inputs", False):
        return callback

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        refuse_overwriting_inputs(click.get_current_context())
        return callback(*args, **kwargs)

    checked.spares_inputs = True  # type: ignore[attr-defined]
    return checked


#: The folder of the command modules.
_COMMANDS = Path(__file__).parent


def _described(name: str, path: Path) -> click.Command:
    """A stand-in for command `name` that holds only its help, read from its module's source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    function = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    )
    return click.Command(name, help=ast.get_docstring(function))


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
    "address": "--address",
    "baseline": "--write-baseline",
    "batch_size": "--batch-size",
    "channels": "--channels",
    "device": "--device",
    "features": "--features",
    "engine": "--engine",
    "gpus_per_worker": "--gpus-per-worker",
    "images": "--images",
    "input_shape": "--size H,W",
    "labels": "--labels FILE",
    "layers": "--layers",
    "memory_budget": "--memory-budget",
    "model": "--model",
    "output": "-o/--output",
    "partial": "--partial",
    "per_channel": "--per-channel",
    "port": "--port",
    "preprocessing": "--preset (or --mean/--std/--scale/--bgr)",
    "rule": "--rule",
    "shard": "--shard",
    "skip_saturated": "--saturated",
    "top": "--top",  # channels: project, report
    "workers": "--workers",
}


def main() -> None:
    """Run the CLI; user errors print one line on stderr and exit 2 (1 for failed checks)."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        # Bare ``onnxdeconv``: the help with the command list, as click prints it (status 2).
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except (InterruptError, KeyboardInterrupt, click.exceptions.Abort):
        _exit_interrupted()
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()} (see --help)", err=True)
        sys.exit(exc.exit_code)
    except OnnxDeconvError as exc:
        option = OPTIONS.get(exc.parameter or "")
        hint = f" (option {option})" if option and option.split()[0] not in str(exc) else ""
        click.echo(f"error: {exc}{hint}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if interrupted(exc):
            _exit_interrupted()
        # The machine, not the code: a full disk, a read-only folder, a file that went away.
        where = f" '{exc.filename}'" if exc.filename else ""
        click.echo(f"error: cannot use{where}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        # Ctrl-C inside a library's own handling surfaces as another error raised while handling
        # it: ONNX Runtime's import gives an ImportError, tqdm's lock set-up an AttributeError.
        if not interrupted(exc):
            raise
        _exit_interrupted()


def _exit_interrupted() -> NoReturn:
    click.echo("error: interrupted", err=True)
    sys.exit(130)
