"""An on-disk cache of built graphs, so that a repeated call skips loading and building.

An entry is a folder of files (the instrumented forward graph, the deconv graphs) and a
``manifest.json`` written last, under a key that names everything the files depend on: the
model file's content hash, the layer, the rule, the input shape and the onnxdeconv version.
ONNX Runtime opens the graphs from their paths, so a cached run needs neither ``onnx`` nor the
model's weights in Python.

Where: ``$ONNXDECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnxdeconv``, else
``~/.cache/onnxdeconv``. ``ONNXDECONV_NO_CACHE=1`` turns the cache off;
``ONNXDECONV_CACHE_MB`` bounds its size (default 2048): the least recently used entries go first.

Entries appear whole or not at all (written in a temporary folder, then renamed); an entry that
does not read back (missing or truncated file, bad manifest) is removed and rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Bumped when the layout of entries changes; part of every key.
FORMAT = 1
#: Default size bound of the cache, in MiB.
DEFAULT_MB = 2048
MANIFEST = "manifest.json"
#: The bytes of an ONNX external-data reference (the ``location`` key of a tensor's
#: ``external_data`` entry): a file that holds them keeps weights in other files.
_EXTERNAL_MARK = b"\x0a\x08location"
_CHUNK = 1 << 20


def enabled(option: bool | None = None) -> bool:
    """Whether to use the cache: ``option`` where given, else unless ``ONNXDECONV_NO_CACHE``."""
    if option is not None:
        return option
    return os.environ.get("ONNXDECONV_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")


def directory() -> Path:
    """The cache folder (not created here)."""
    chosen = os.environ.get("ONNXDECONV_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "onnxdeconv"


def _max_bytes() -> int:
    try:
        megabytes = float(os.environ.get("ONNXDECONV_CACHE_MB", DEFAULT_MB))
    except ValueError:
        megabytes = DEFAULT_MB
    return int(megabytes * (1 << 20))


@dataclass(frozen=True)
class Entry:
    """A cache entry that read back whole: its folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        """The path of the entry's file ``name``."""
        return self.folder / name


class GraphCache:
    """Entries under one folder (default: :func:`directory`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or directory()

    @property
    def _entries(self) -> Path:
        return self.root / "entries"

    def file_digest(self, path: Path) -> str:
        """The content hash of the model file ``path`` (SHA-256), read once per file version.

        The hash is remembered by path, size, modification time and inode, so a repeated call
        costs a ``stat``. A model that keeps weights in external files adds the name, size and
        modification time of the other files in its folder.
        """
        path = path.resolve()
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        index = self.root / "files" / f"{hashlib.sha256(str(path).encode()).hexdigest()}.json"
        known = _read_json(index)
        if known is not None and known.get("signature") == signature:
            digest, external = str(known["sha256"]), bool(known.get("external"))
        else:
            digest, external = _stream_digest(path)
            self._write_json(
                index, {"signature": signature, "sha256": digest, "external": external}
            )
        if external:
            listing = sorted(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in path.parent.iterdir()
                if p.is_file() and p != path
            )
            digest = hashlib.sha256(json.dumps([digest, listing]).encode()).hexdigest()
        return digest

    def get(self, key: str) -> Entry | None:
        """The entry ``key`` (from :func:`key`), or None where it is missing or not whole.

        An entry whose manifest does not read, or whose files are missing or not of the sizes
        the manifest lists, is removed (it will be rebuilt).
        """
        folder = self._entries / key
        manifest = _read_json(folder / MANIFEST)
        if manifest is None:
            if folder.exists():
                self.discard(key, "its manifest does not read")
            return None
        sizes = manifest.get("files")
        if not isinstance(sizes, dict):
            self.discard(key, "its manifest lists no files")
            return None
        for name, size in sizes.items():
            try:
                whole = (folder / name).stat().st_size == size
            except OSError:
                whole = False
            if not whole:
                self.discard(key, f"file '{name}' is missing or truncated")
                return None
        with contextlib.suppress(OSError):
            os.utime(folder / MANIFEST)  # least recently used goes first
        return Entry(folder, manifest)

    def put(self, key: str, manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
        """Store entry ``key`` whole, or not at all (a cache that cannot be written is skipped).

        The manifest gains the size of each file, which :meth:`get` checks.
        """
        try:
            self._entries.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self._entries))
        except OSError as exc:
            logger.warning("graph cache %s is not writable (%s): not caching", self.root, exc)
            return
        try:
            for name, data in files.items():
                (temp / name).write_bytes(data)
            sizes = {name: len(data) for name, data in files.items()}
            (temp / MANIFEST).write_text(json.dumps({**manifest, "files": sizes}))
            try:
                os.rename(temp, self._entries / key)
            except OSError:
                # Another process stored the same entry first: keep theirs.
                return
        except OSError as exc:
            logger.warning("could not write graph cache entry %s: %s", key, exc)
            return
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        self.evict()

    def discard(self, key: str, why: str) -> None:
        """Remove entry ``key`` (it will be rebuilt), saying ``why`` in the log."""
        logger.warning("graph cache entry %s is unusable (%s): rebuilding it", key, why)
        shutil.rmtree(self._entries / key, ignore_errors=True)

    def evict(self, max_bytes: int | None = None) -> None:
        """Remove the least recently used entries until the cache holds at most ``max_bytes``."""
        limit = _max_bytes() if max_bytes is None else max_bytes
        sized = []
        try:
            folders = [f for f in self._entries.iterdir() if not f.name.startswith(".")]
        except OSError:
            return
        for folder in folders:
            try:
                used = (folder / MANIFEST).stat().st_mtime
                size = sum(f.stat().st_size for f in folder.iterdir())
            except OSError:
                used, size = 0.0, 0
            sized.append((used, size, folder))
        total = sum(size for _, size, _ in sized)
        for _, size, folder in sorted(sized, key=lambda item: item[0]):
            if total <= limit:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
        # Temporary folders of writers that died long ago.
        for stale in self._entries.glob(".tmp-*"):
            try:
                if time.time() - stale.stat().st_mtime > 3600:
                    shutil.rmtree(stale, ignore_errors=True)
            except OSError:
                continue

    def _write_json(self, path: Path, value: Mapping[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(handle, "w") as stream:
                json.dump(value, stream)
            os.replace(temp, path)
        except OSError as exc:
            logger.warning("graph cache %s is not writable (%s)", self.root, exc)


def key(**parts: Any) -> str:
    """A cache key: the hash of ``parts`` (JSON values) with the format and the code's version."""
    payload = json.dumps({"format": FORMAT, "code": code_version(), **parts}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


@functools.cache
def code_version() -> str:
    """Onnxdeconv's version, and when its graph-building code last changed.

    The modification times keep a source checkout (where the version stays the same while the
    code changes) from running graphs an older builder made.
    """
    try:
        version = importlib.metadata.version("onnxdeconv")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    package = Path(__file__).resolve().parent
    sources = [package / "prepared.py", package / "projector.py"]
    for folder in ("graph", "deconv", "runtime"):
        sources.extend((package / folder).rglob("*.py"))
    newest = max((p.stat().st_mtime_ns for p in sources if p.is_file()), default=0)
    return f"{version}+{newest}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stream_digest(path: Path) -> tuple[str, bool]:
    """SHA-256 of the file, and whether it refers to external data, in one read."""
    digest = hashlib.sha256()
    external = False
    tail = b""
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            if not external:
                # The mark may straddle two chunks: look across the seam, then in the chunk.
                seam = tail + chunk[: len(_EXTERNAL_MARK) - 1]
                external = _EXTERNAL_MARK in seam or _EXTERNAL_MARK in chunk
            tail = chunk[1 - len(_EXTERNAL_MARK) :]
    return digest.hexdigest(), external
