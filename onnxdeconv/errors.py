"""User-facing errors.

Every error the user can fix is an :class:`OnnxDeconvError`. Its message is one line that names the
problem and says how to fix it; the CLI prints it without a traceback and exits with ``exit_code``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal


class OnnxDeconvError(Exception):
    """Base class for errors caused by the user's input (model, image, options).

    Args:
        message: One line: what is wrong and how to fix it, in the library's words.
        parameter: The library parameter the fix concerns (``input_shape``, ``rule``,
            ``labels``...), if one does. Messages never name command-line options; the CLI maps
            ``parameter`` to its option and adds that as a hint.
    """

    exit_code: int = 2

    def __init__(self, message: str = "", *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class ModelLoadError(OnnxDeconvError):
    """The model file cannot be read, is not valid ONNX, or is unsafe to load."""


class InputError(OnnxDeconvError):
    """An image or array given as input is unreadable or does not fit the model."""


class UnsupportedOpError(OnnxDeconvError):
    """A node on the projection path has no transpose rule, or uses unsupported attributes."""

    def __init__(
        self, node_name: str, op_type: str, why: str, *, parameter: str | None = None
    ) -> None:
        self.node_name = node_name
        self.op_type = op_type
        self.why = why
        super().__init__(
            f"cannot project through node '{node_name}' ({op_type}): {why}", parameter=parameter
        )

    def before(self, layer: str | None) -> UnsupportedOpError:
        """This error, naming the nearest projectable ``layer`` before the node (None: none is)."""
        nearest = (
            f"the nearest projectable layer before it is {layer}"
            if layer
            else "no layer before it is projectable"
        )
        return UnsupportedOpError(
            self.node_name, self.op_type, f"{self.why}; {nearest}", parameter=self.parameter
        )


class UnknownLayerError(OnnxDeconvError):
    """The requested layer is not a projectable tensor of the graph."""

    def __init__(self, layer: str, candidates: Iterable[str]) -> None:
        names = list(candidates)
        close = difflib.get_close_matches(layer, names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"unknown layer '{layer}': {hint + ' ' if hint else ''}"
            "run 'onnxdeconv layers MODEL' to list the tensor names and aliases"
        )


class SelectionError(OnnxDeconvError):
    """A channel or position is out of range for the chosen layer."""


class CheckFailedError(OnnxDeconvError):
    """A model check ran and found a problem (exit status 1, unlike usage errors)."""

    exit_code = 1


def wrong_kind(path: str | Path, expected: Literal["file", "folder"], give: str) -> str | None:
    """Say that ``path`` is a folder where a file is expected, or the reverse.

    Args:
        path: The path given.
        expected: What it should be.
        give: What to give instead, e.g. "an image file".

    Returns:
        The message ("'x' is a folder: give an image file"), or None when ``path`` is of the
        expected kind or does not exist (that is another message).
    """
    path = Path(path)
    if expected == "file" and path.is_dir():
        return f"'{path}' is a folder: give {give}"
    if expected == "folder" and path.exists() and not path.is_dir():
        return f"'{path}' is a file: give {give}"
    return None


def require_path(
    path: str | Path,
    expected: Literal["file", "folder"],
    give: str,
    missing: str,
    *,
    error: type[OnnxDeconvError] = OnnxDeconvError,
    parameter: str | None = None,
) -> Path:
    """Return ``path`` if it is an existing ``expected``; raise ``error`` in one line otherwise.

    Args:
        path: The path given.
        expected: What it should be.
        give: What to give instead of the other kind (see :func:`wrong_kind`).
        missing: The message when nothing is there.
        error: The error class to raise.
        parameter: The library parameter the fix concerns (see :class:`OnnxDeconvError`).
    """
    path = Path(path)
    if wrong := wrong_kind(path, expected, give):
        raise error(wrong, parameter=parameter)
    if not (path.is_file() if expected == "file" else path.is_dir()):
        raise error(missing, parameter=parameter)
    return path


def interrupted(error: BaseException) -> bool:
    """Whether ``error`` was raised while handling a Ctrl-C (somewhere in its chain)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def first_line(error: BaseException) -> str:
    """An error's first line (for a one-line message), or its type's name where it has none."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__
