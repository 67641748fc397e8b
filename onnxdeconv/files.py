"""Atomic output files: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from onnxdeconv.errors import OnnxDeconvError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block succeeds.

    Raises:
        OnnxDeconvError: The folder does not exist or cannot be written.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OnnxDeconvError(f"output folder '{folder}' does not exist: create it first")
    try:
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=target.suffix, dir=folder
        )
    except OSError as exc:
        raise OnnxDeconvError(f"cannot write to '{folder}': {exc.strerror}") from exc
    os.close(handle)
    temp = Path(temp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, array)
