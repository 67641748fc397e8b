"""What the commands tell the user on stderr (lines, progress bars) and list on stdout (files)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tqdm import tqdm

from onnxdeconv import inputs
from onnxdeconv.errors import InputError
from onnxdeconv.inputs import LoadedImages, Preprocessing

if TYPE_CHECKING:
    from onnxdeconv.prepared import PreparedModel


def info(message: str) -> None:
    """A line on stderr that leaves the progress bars intact."""
    # One write with its newline: tqdm writes ``end`` apart, and a Ctrl-C between the two would
    # leave the interrupt's own line glued to this one.
    tqdm.write(message + "\n", file=sys.stderr, end="")


@contextmanager
def progress(
    total: int, desc: str, unit: str, so_far: bool = False, logged: bool = False
) -> Iterator[Callable[[int], None]]:
    """A bar on stderr, when it is a terminal, for the run inside; yields its progress callback.

    Args:
        total: How many ``unit`` the run does.
        desc: What the run does, shown before the bar.
        unit: What it counts.
        so_far: The library reports the count done so far, not the count just done.
        logged: Show the bar in a log too, and leave it there (long runs over many images).
    """
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        **({"leave": True, "disable": False} if logged else {"leave": False, "disable": None}),
    )
    with bar:
        yield (lambda done: bar.update(done - bar.n)) if so_far else bar.update


def written(*paths: Path | None) -> None:
    """List the files a command wrote on stdout, one a line."""
    for path in paths:
        if path is not None:
            click.echo(str(path))


def find_images(folder: Path, limit: int | None) -> list[Path]:
    """The image files ``--images`` names (see :func:`onnxdeconv.inputs.image_files`)."""
    try:
        return inputs.image_files(folder, limit)
    except InputError as exc:
        hint = str(exc).replace("check the path", "check the --images path")
        raise InputError(hint.replace("point at", "point --images at")) from None


def list_skipped(skipped: Sequence[tuple[object, str]], folder: Path | None = None) -> None:
    """Say on stderr which images were left out and why, one a line, then how many.

    Args:
        skipped: ``(image, reason)`` pairs; an image is a path, or a name under ``folder``.
        folder: The folder the names are relative to, if they are.
    """
    for image, reason in skipped:
        shown = folder / str(image) if folder is not None else image
        info(f"skipped {shown}: {reason}")
    if len(skipped) > 1:
        info(f"skipped {len(skipped)} unreadable images")


def read_images(
    files: Sequence[Path], prepared: PreparedModel, preprocessing: Preprocessing, folder: Path
) -> LoadedImages:
    """Read the images at the model's input size (:func:`onnxdeconv.inputs.read_images`).

    Says which were skipped, and how many are used.
    """
    found = inputs.read_images(files, prepared.loaded, preprocessing, prepared.input_shape, folder)
    list_skipped(found.skipped, folder)
    info(f"using {len(found.inputs)} of {len(files)} images from {folder}")
    return found


def output_folder(folder: Path) -> Path:
    """Create the output folder ``-o`` names, and the folders above it."""
    if folder.exists() and not folder.is_dir():
        raise click.BadParameter(f"'{folder}' is a file: give a folder", param_hint="-o")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
