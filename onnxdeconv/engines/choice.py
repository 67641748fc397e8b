"""Choosing the engine of a run, and the images of a dataset for it.

``features(prepared, images, engine="ray")`` runs :func:`~onnxdeconv.engines.mine_features` on
a Ray cluster (:class:`~onnxdeconv.engines.ray.RayEngine`), ``engine="local"`` (the default) on
this machine. The results are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from onnxdeconv.engines.local import Engine, FeaturesResult, folder_images, mine_features
from onnxdeconv.engines.ray import RayEngine, is_uri, uri_images
from onnxdeconv.errors import InputError, require_path
from onnxdeconv.inputs import IMAGE_SUFFIXES
from onnxdeconv.prepared import PreparedModel

#: The engines by name.
EngineName = Literal["local", "ray"]
ENGINES: tuple[EngineName, ...] = ("local", "ray")


def engine_named(
    name: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
) -> Engine | None:
    """The engine called ``name``: None for ``local`` (the default), a :class:`RayEngine`.

    Raises:
        InputError: The name is unknown, or options of the Ray engine go to the local one.
    """
    if name == "ray":
        return RayEngine(address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    if name != "local":
        known = ", ".join(ENGINES)
        raise InputError(f"unknown engine '{name}': one of {known}", parameter="engine")
    if address is not None:
        raise InputError("a cluster address needs the ray engine", parameter="address")
    if gpus_per_worker:
        raise InputError("GPUs per worker need the ray engine", parameter="gpus_per_worker")
    return None


def dataset_images(source: str | Path) -> tuple[list[str], str | Path]:
    """The images of ``source`` and the root their names are relative to.

    ``source`` is a folder (its images, recursively, sorted), a text file listing one image per
    line (relative to the file's folder, absolute, or URIs; blank lines and ``#`` comments are
    left out), or a URI prefix such as ``s3://bucket/val`` (read through pyarrow's filesystems,
    for the Ray engine).

    Raises:
        InputError: The source does not exist or holds no image.
    """
    if is_uri(str(source)):
        return uri_images(str(source)), str(source)
    path = Path(source)
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        names = [line for line in lines if line and not line.startswith("#")]
        if not names:
            raise InputError(f"the list '{path}' names no image: give one path per line")
        odd = next((n for n in names if Path(n).suffix.lower() not in IMAGE_SUFFIXES), None)
        if odd is not None:
            raise InputError(
                f"the list '{path}' names '{odd[:80]}', which is not an image file "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}): give a folder of images, or a list "
                "with one image path per line"
            )
        return names, path.parent
    missing = f"image folder '{path}' does not exist: check the path"
    require_path(path, "folder", "a folder of images or a list file", missing, error=InputError)
    return folder_images(path), path


def features(
    prepared: PreparedModel,
    images: Sequence[str | Path],
    *,
    engine: EngineName | Engine = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    **options: Any,
) -> FeaturesResult:
    """:func:`~onnxdeconv.engines.mine_features` on the engine ``engine`` (a name or an engine).

    Args:
        prepared: The model.
        images: The image names (see :func:`dataset_images`), relative to ``root``.
        engine: ``local`` (this machine), ``ray`` (a Ray cluster), or an engine.
        address: The Ray cluster's address (None: a local Ray instance).
        workers: Decoding threads (local), or actors of the pools (ray).
        gpus_per_worker: GPUs each Ray actor holds.
        **options: The options of :func:`~onnxdeconv.engines.mine_features`.

    Example:
        >>> names, root = dataset_images("photos/")
        >>> result = features(prepared, names, root=root, engine="ray", layers=["relu2"])
    """
    chosen = (
        engine_named(engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker)
        if isinstance(engine, str)
        else engine
    )
    threads = workers if chosen is None else None
    return mine_features(prepared, images, workers=threads, engine=chosen, **options)
