"""Parsing of option values the commands share, and checks of output paths before any work."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import click


def int_pair(value: str | None, option: str) -> tuple[int, int] | None:
    """Parse ``H,W`` (or ``HxW``); one number ``N`` is the square ``N,N``."""
    if value is None:
        return None
    try:
        pair = tuple(int(p) for p in value.replace("x", ",").split(","))
    except ValueError:
        pair = ()
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or min(pair) < 0:
        message = f"expected H,W such as 224,224 (or one number for a square), got '{value}'"
        raise click.BadParameter(message, param_hint=option)
    return pair[0], pair[1]


def floats(value: str | None, option: str) -> tuple[float, ...] | None:
    """Parse a comma-separated list of numbers."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        message = f"expected numbers separated by commas, got '{value}'"
        raise click.BadParameter(message, param_hint=option) from None


def int_list(value: str | None, option: str) -> list[int] | None:
    """Parse ``C1,C2,..``: distinct numbers of at least 0, in their order."""
    if value is None:
        return None
    try:
        parsed = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) < 0:
        message = f"expected channel numbers separated by commas, such as 0,3,7, got '{value}'"
        raise click.BadParameter(message, param_hint=option)
    return list(dict.fromkeys(parsed))


def float_range(value: str | None, option: str) -> tuple[float | None, float | None]:
    """Parse ``LO,HI`` with ``LO < HI``; None is ``(None, None)``."""
    pair = floats(value, option) or ()
    if value is not None and (len(pair) != 2 or not pair[0] < pair[1]):
        message = f"expected LO,HI with LO < HI, got '{value}'"
        raise click.BadParameter(message, param_hint=option)
    return (pair[0], pair[1]) if pair else (None, None)


def position(value: str | None, allow_all: bool = False) -> tuple[int, ...] | str | None:
    """Parse ``--position H,W`` (and ``all`` where ``allow_all``)."""
    if value is None or (allow_all and value == "all"):
        return value
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError:
        expected = "H,W or 'all'" if allow_all else "H,W such as 3,8"
        message = f"expected {expected}, got '{value}'"
        raise click.BadParameter(message, param_hint="--position") from None


#: Where a channel range is cut: past the width of any layer (channels a layer lacks are left
#: out anyway), so that ``0-999999999`` costs no more than ``all``.
RANGE_LIMIT = 1 << 17


def channel_ranges(value: str) -> list[int] | None:
    """Parse ``all``, ``0-15`` or ``0,3,7`` (ranges and single channels mixed); None is all.

    A range stops at channel ``RANGE_LIMIT - 1``; single channels are kept as given.
    """
    if value.strip().lower() == "all":
        return None
    chosen: dict[int, None] = {}
    try:
        for part in value.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            stop = last + 1 if last == first else min(last + 1, max(RANGE_LIMIT, first + 1))
            chosen.update(dict.fromkeys(range(first, stop)))
    except ValueError:
        message = f"expected 'all', a range such as 0-15 or a list such as 0,3,7, got '{value}'"
        raise click.BadParameter(message, param_hint="--channels") from None
    return list(chosen)


def shard(value: str | None) -> tuple[int, int]:
    """Parse ``i/n`` (0 <= i < n); None is the whole run, ``0/1``."""
    parts = (value or "0/1").split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        index, count = -1, 0
    if len(parts) != 2 or count < 1 or not 0 <= index < count:
        message = f"expected i/n with 0 <= i < n, such as 0/4, got '{value}'"
        raise click.BadParameter(message, param_hint="--shard")
    return index, count


def check_output(path: Path | None, hint: str, suffix: str | tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output ``path`` without ``suffix`` or in a missing folder.

    Args:
        path: The output file (None: not asked for).
        hint: The option that names it, for the message (``-o``).
        suffix: The suffix it must have (``.png``), or one of several, case-insensitive.
    """
    if path is None:
        return
    if path.is_dir():
        raise click.BadParameter(f"'{path}' is a folder: give a file name", param_hint=hint)
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if suffixes and path.suffix.lower() not in suffixes:
        message = f"'{path}' must end in {' or '.join(suffixes)}"
        raise click.BadParameter(message, param_hint=hint)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        message = f"output folder '{path.parent}' does not exist: create it first"
        raise click.BadParameter(message, param_hint=hint)


#: The parameters, by name, that name what a command writes (files, or folders it writes into).
#: Every other path parameter names an input, which no output may name.
OUTPUT_PARAMETERS = frozenset(
    {"output", "json_path", "csv_path", "junit", "write_baseline", "state_path"}
)


def _paths(value: object) -> Iterator[Path]:
    """The paths in a parameter's value: one, several (``nargs=-1``), or none."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    yield from (v for v in values if isinstance(v, Path))


def _same(first: Path, second: Path) -> bool:
    """Whether two paths name one file: the same place, through links, or hard links to it."""
    try:
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
        return first.resolve() == second.resolve()
    except (OSError, RuntimeError):  # a loop of links, an unreadable folder: compare as written
        return os.path.abspath(first) == os.path.abspath(second)


def _within(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def refuse_overwriting_inputs(
    ctx: click.Context, computed: Mapping[str, Path | None] | None = None
) -> None:
    """Refuse, before any work, an output that names an input of the command, or another output.

    An output may not be an input file (the model, an image, a .npy, a state, a config; through
    links too) or an existing file inside an input folder, and two outputs may not name one
    file: writing would destroy what the command reads.

    Args:
        ctx: The command's context: its parameters, as given (:data:`OUTPUT_PARAMETERS` are the
            outputs, every other path an input).
        computed: Outputs the command chose itself (a default ``-o``), by option, also checked.
    """
    hints = {p.name: (p.opts[0] if p.opts else p.name) for p in ctx.command.params}
    named = [
        (name in OUTPUT_PARAMETERS, hints.get(name or "", name or ""), path)
        for name, value in ctx.params.items()
        for path in _paths(value)
    ]
    outputs = [(hint, path) for is_output, hint, path in named if is_output]
    outputs += [(hint, path) for hint, path in (computed or {}).items() if path is not None]
    inputs = [(hint, path) for is_output, hint, path in named if not is_output]
    for index, (hint, output) in enumerate(outputs):
        for input_hint, given in inputs:
            _refuse_overwriting(output, hint, given, input_hint)
        for other_hint, other in outputs[index + 1 :]:
            if _same(output, other) and other_hint != hint:
                message = f"'{output}' is also the {other_hint} output: give each its own path"
                raise click.BadParameter(message, param_hint=hint)


def _refuse_overwriting(output: Path, hint: str, given: Path, input_hint: str) -> None:
    """Refuse ``output`` (option ``hint``) where it is the input ``given``, or a file in it."""
    named = input_hint.upper() if input_hint.isidentifier() else input_hint
    if output.is_dir() and given.is_dir():
        return  # writing into a folder destroys none of the files already in it
    if _same(output, given):
        where = f"the input {named}" + (f" '{given}'" if str(given) != str(output) else "")
        message = f"'{output}' is {where}: writing it would destroy it; give another path"
        raise click.BadParameter(message, param_hint=hint)
    existing_file = output.exists() and not output.is_dir()
    if existing_file and given.is_dir() and _within(output, given):
        message = (
            f"'{output}' is a file in the input folder {named} '{given}', which it would "
            "overwrite: give a path outside that folder"
        )
        raise click.BadParameter(message, param_hint=hint)
