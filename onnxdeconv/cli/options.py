"""Options the commands share, so that an option means one thing everywhere.

Every command that runs a model takes the same model options (:func:`model_options`:
preprocessing, ``--size``, ``--device``), the same words for its outputs (:func:`output_option`,
:func:`json_option`, :func:`csv_option`) and for what it works on (:func:`images_option`,
:func:`layers_option`, ...).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from onnxdeconv.cli import CONTEXT as CONTEXT  # every command reads it from here
from onnxdeconv.cli.feedback import written
from onnxdeconv.cli.model import ModelOptions as ModelOptions  # commands reach every option here
from onnxdeconv.cli.model import model_options as model_options
from onnxdeconv.cli.model import together
from onnxdeconv.cli.parse import check_output, position, refuse_overwriting_inputs
from onnxdeconv.deconv.names import RULES
from onnxdeconv.outputs import OutputPaths

F = TypeVar("F", bound=Callable[..., Any])
PATH = click.Path(path_type=Path)


def output_option(text: str, required: bool = False) -> Callable[[F], F]:
    """``-o/--output PATH``: the command's main output, described by ``text``."""
    return click.option("-o", "--output", type=PATH, required=required, help=text)


def json_option(what: str) -> Callable[[F], F]:
    """``--json PATH``: also write ``what`` as JSON."""
    return click.option("--json", "json_path", type=PATH, help=f"Also write {what} as JSON.")


def csv_option(what: str) -> Callable[[F], F]:
    """``--csv PATH``: also write ``what`` as CSV."""
    return click.option("--csv", "csv_path", type=PATH, help=f"Also write {what} as CSV.")


def outputs(
    default: str | Callable[[dict[str, Any]], str],
    text: str | None = None,
    suffix: str | tuple[str, ...] = ".png",
    csv_suffix: str | tuple[str, ...] = (),
    **tables: str,
) -> Callable[[F], F]:
    """``-o/--output`` and the ``--json``/``--csv`` of ``tables``, passed as ``paths: OutputPaths``.

    The paths are checked before any work, and listed on stdout when the command is done.

    Args:
        default: The output without ``-o``: a format of the command's parameters
            (``"{image.stem}_sanity.png"``), or a function of them.
        text: The help of ``-o``; default: ``OUT.png; default: IMAGE-stem_sanity.png``.
        suffix: The suffix ``-o`` must have, or one of several.
        csv_suffix: The suffix ``--csv`` must have, or one of several (none: any).
        tables: ``json=``, ``csv=``: what the file holds; in the order of ``--help`` and listing.
    """
    shown = re.sub(r"\{(\w+)\.stem\}", lambda m: f"{m[1].upper()}-stem", str(default))
    table_options = {"json": json_option, "csv": csv_option}

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **kwargs: Any) -> None:
            named = {name: kwargs.pop(f"{name}_path") for name in tables}
            chosen = default.format(**kwargs) if isinstance(default, str) else default(kwargs)
            output = kwargs.pop("output") or Path(chosen)
            refuse_overwriting_inputs(click.get_current_context(), {"-o": output})
            check_output(output, "-o", suffix)
            for name, path in named.items():
                check_output(path, f"--{name}", csv_suffix if name == "csv" else ())
            paths = OutputPaths(output, named.get("json"), named.get("csv"))
            function(*args, paths=paths, **kwargs)
            written(output, *named.values())

        added = [table_options[name](what) for name, what in tables.items()]
        option = output_option(text or f"OUT{suffix}; default: {shown}")
        return cast(F, together(option, *added)(command))

    return decorate


def count_option(
    *names: str, text: str, default: int | None = None, least: int = 1
) -> Callable[[F], F]:
    """An option that counts something: an integer of at least ``least``."""
    shown = default is not None
    kind = click.IntRange(min=least)
    return click.option(*names, type=kind, default=default, show_default=shown, help=text)


def images_option(purpose: str, required: bool = False) -> Callable[[F], F]:
    """``--images DIR``: a folder of images, searched recursively, used for ``purpose``."""
    text = f"Folder of images (searched recursively) {purpose}."
    return click.option("--images", type=PATH, required=required, help=text)


def layer_option(default: str) -> Callable[[F], F]:
    """``--layer``: one tensor name or alias, ``default`` when not given."""
    return click.option("--layer", help=f"Tensor name or alias (see 'layers'); default: {default}.")


def layers_option(default: str, multiple: bool = False) -> Callable[[F], F]:
    """``--layers A,B,..``: tensor names or aliases, passed on as a list (None: ``default``)."""

    def names(_: click.Context, __: click.Parameter, value: str | tuple[str, ...] | None) -> Any:
        given = (value,) if isinstance(value, str) else value or ()
        return [name.strip() for part in given for name in part.split(",") if name.strip()] or None

    how = "comma-separated or repeated" if multiple else "comma-separated"
    text = f"Tensor names or aliases ({how}); default: {default}."
    return click.option("--layers", metavar="A,B,..", multiple=multiple, callback=names, help=text)


def layer_sample_option(what: str, default: str) -> Callable[[F], F]:
    """``--layers N|all``: how many layers ``what`` runs on (``all``: 0, every one)."""

    def count(_: click.Context, __: click.Parameter, value: str | None) -> int | None:
        if value is None or value.strip().lower() == "all":
            return None if value is None else 0
        if not value.strip().isdigit() or int(value) < 1:
            raise click.BadParameter(f"'{value}' is neither a count (1 or more) nor 'all'")
        return int(value)

    text = f"Run {what} on N layers spread over depth, or on all; default: {default}."
    return click.option("--layers", "layer_sample", metavar="N|all", callback=count, help=text)


def position_option(allow_all: bool = False) -> Callable[[F], F]:
    """``--position H,W``: the unit's position in its feature map (``all``: the whole map)."""
    every = "; 'all' projects the whole map" if allow_all else ""
    text = f"Position of the unit in the feature map{every}; default: its arg-max."
    metavar = "H,W|all" if allow_all else "H,W"
    parse = lambda _, __, value: position(value, allow_all)  # noqa: E731
    return click.option("--position", metavar=metavar, callback=parse, help=text)


def label_option(default: str) -> Callable[[F], F]:
    """``--label``: the class to track, as an index or a name."""
    text = f"Class to track, as an index or a name; default: {default}."
    return click.option("--label", help=text)


def seed_option(of: str) -> Callable[[F], F]:
    """``--seed``: the seed of the random ``of``."""
    text = f"Seed of the random {of}."
    return click.option("--seed", type=int, default=0, show_default=True, help=text)


_LIMIT, _CHANNEL = "Use at most N images (sorted by path).", "Channel (feature map) of the unit"
limit_option = click.option("--limit", type=click.IntRange(min=1), help=_LIMIT)
channel_option = click.option("--channel", type=int, help=f"{_CHANNEL}; default: the strongest.")
_RULE = "What rectifiers pass back (see docs/rules.md)."
#: ``--engine``, ``--address``, ``--gpus-per-worker``: where a dataset scan runs.
engine_options = together(
    click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where the images are streamed and projected: this machine, or a Ray cluster "
        "(pip install 'onnxdeconv[ray]'); the results are the same.",
    ),
    click.option(
        "--address",
        help="The Ray cluster (HOST:PORT of its head, ray://HOST:PORT or auto); default: a "
        "local Ray instance.",
    ),
    click.option(
        "--gpus-per-worker",
        type=click.FloatRange(min=0),
        default=0.0,
        help="GPUs each Ray worker holds (ONNX Runtime runs on CUDA there).",
    ),
)
rule_option = click.option(
    "--rule", type=click.Choice(RULES), default="deconvnet", show_default=True, help=_RULE
)
_BUDGET = (
    "Memory the deconv runs may hold, such as 512M or 2G: more projections than fit run in "
    "several runs; default: $ONNXDECONV_MEMORY_BUDGET, else 1G."
)
memory_budget_option = click.option("--memory-budget", metavar="SIZE", help=_BUDGET)
_LABELS = "Class names, one per line or 'index,name'; default: the model's metadata."
labels_option = click.option("--labels", "labels_path", type=PATH, help=_LABELS)
