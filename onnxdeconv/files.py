"""Atomic output files: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from onnxdeconv.errors import OnnxDeconvError


def write_failed(where: str, exc: OSError) -> OnnxDeconvError:
    """The one-line error for a write that failed with ``exc``: what, why, and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space, or write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "write to a folder you may write to"
    else:
        fix = "check the output path"
    return OnnxDeconvError(f"cannot write {where}: {exc.strerror or exc}: {fix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block succeeds.

    The temporary file is removed whatever happens (an error, Ctrl-C).

    Raises:
        OnnxDeconvError: The folder does not exist or cannot be written, or writing fails (a full
            disk, a read-only file system): the message names the file and the reason.
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
        raise write_failed(f"to '{folder}'", exc) from exc
    os.close(handle)
    temp = Path(temp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    try:
        yield temp
        os.replace(temp, target)
    except OSError as exc:
        raise write_failed(f"'{target}'", exc) from exc
    finally:
        temp.unlink(missing_ok=True)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, array)
