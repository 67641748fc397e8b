"""Options, parsing and steps shared by ``features`` and ``merge`` (the dataset top-k)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from tqdm import tqdm

from onnxdeconv.analysis.features import (
    FeaturesState,
    StateMismatchError,
    feature_channels,
    feature_layer_names,
)
from onnxdeconv.engines import FeaturesResult
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.outputs.features import write_features
from onnxdeconv.prepared import PreparedModel

F = TypeVar("F", bound=Callable[..., Any])

#: The option (or file) behind each difference a state can have from the run that resumes it.
FLAGS = {
    "model_sha256": "model",
    "input_shape": "--size",
    "preprocessing": "--preset/--mean/--std/--scale/--bgr",
    "shard": "--shard",
    "top": "--top",
    "channels": "--layers/--channels",
    "images": "the images in the folder",
}


def info(message: str) -> None:
    """A line on stderr that leaves the progress bars intact."""
    tqdm.write(message, file=sys.stderr)


def progress_bar(total: int, unit: str, desc: str) -> tuple[tqdm, Callable[[int], None]]:
    """A bar on stderr, and a progress callback that moves it to the count done so far."""
    bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True)
    return bar, lambda done: bar.update(done - bar.n)


def parse_shard(value: str | None) -> tuple[int, int]:
    """Parse ``i/n`` (0 <= i < n)."""
    parts = (value or "0/1").split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        index, count = -1, 0
    if len(parts) != 2 or count < 1 or not 0 <= index < count:
        message = f"expected i/n with 0 <= i < n, such as 0/4, got '{value}'"
        raise click.BadParameter(message, param_hint="--shard")
    return index, count


def parse_channels(value: str) -> list[int] | None:
    """Parse ``all``, ``0-15`` or ``0,3,7`` (ranges and single channels mixed); None is all."""
    if value.strip().lower() == "all":
        return None
    chosen: dict[int, None] = {}
    try:
        for part in value.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            chosen.update(dict.fromkeys(range(first, last + 1)))
    except ValueError:
        message = f"expected 'all', a range such as 0-15 or a list such as 0,3,7, got '{value}'"
        raise click.BadParameter(message, param_hint="--channels") from None
    return list(chosen)


def choose_channels(
    prepared: PreparedModel, layers: str | None, channels: list[int] | None
) -> dict[str, list[int]]:
    """The channels ``--channels`` tracks in each layer ``--layers`` names (or the default)."""
    names = [part.strip() for part in (layers or "").split(",") if part.strip()]
    try:
        return feature_channels(prepared, feature_layer_names(prepared, names), channels)
    except SelectionError as exc:
        raise SelectionError(str(exc).replace("the chosen channels", "the --channels")) from None


def mismatch(path: Path, differences: list[str]) -> InputError:
    """The error for a state at ``path`` that differs from the run in ``differences``."""
    differ = ", ".join(FLAGS.get(key, key) for key in differences)
    return InputError(
        f"{path} was made with other options ({differ} differ): rerun with the same ones, or "
        "without --resume to start over"
    )


def resume_state(
    path: Path,
    resume: bool,
    names: list[str],
    tracked: dict[str, list[int]],
    top: int,
    meta: dict[str, Any],
) -> FeaturesState | None:
    """The state to continue with ``--resume``: the checkpoint at ``path``, if there is one.

    Raises:
        InputError: The checkpoint was made with other images or options.
    """
    if not resume:
        return None
    if not path.is_file():
        info(f"no checkpoint at {path}: starting from the beginning")
        return None
    state = FeaturesState.load(path)
    differences = ["images"] if state.images != names else state.differences(meta, tracked, top)
    if differences:
        raise mismatch(path, differences)
    info(f"resuming from {path}: {state.processed} images done")
    return state


@contextmanager
def streaming(path: Path) -> Iterator[None]:
    """Name the options behind a state that does not fit, and the checkpoint on an interrupt."""
    try:
        yield
    except StateMismatchError as exc:
        raise mismatch(path, exc.differences) from None
    except KeyboardInterrupt:
        saved = FeaturesState.load(path).processed if path.is_file() else 0
        info(f"interrupted: the checkpoint {path} holds {saved} images; continue with --resume")
        raise


def output_folder(outdir: Path) -> Path:
    """Create the output folder."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output '{outdir}' is a file: give a folder with -o")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def page_options(function: F) -> F:
    """``--per-page``, ``--batch-size`` and ``--workers``: how the pages are made."""
    for option in reversed(
        (
            click.option("--per-page", type=click.IntRange(min=1), default=16, show_default=True),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                help="Images per forward pass; default: as many as fill 8 MB of input, from 32 "
                "to 256.",
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                help="Image decoding threads; default: min(4, CPUs).",
            ),
        )
    ):
        function = option(function)
    return function


def write_pages(
    result: FeaturesResult, outdir: Path, model: Path, per_page: int, state_path: Path
) -> None:
    """Project the entries and write the pages and JSON, with a progress bar; list the files."""
    streamed = result.provider is not None
    bar, progress = progress_bar(result.state.filled, "proj", "projecting")
    with bar:
        written = write_features(
            result,
            outdir,
            model_name=model.name,
            per_page=per_page,
            state_path=state_path,
            progress=progress,
        )
    if not streamed:
        info(f"running on {result.provider}")
    for path in written:
        click.echo(str(path))
