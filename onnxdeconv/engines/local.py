"""The local engine: mines the top-k features of a list of image files on this machine.

It decodes images in a thread pool while ONNX Runtime runs the streaming graph
(:class:`~onnxdeconv.analysis.features.MaximaRunner`), counts the maxima into a
:class:`~onnxdeconv.analysis.features.FeaturesState`, checkpoints the state every few batches,
resumes from one, runs one shard ``i/n`` of the images, and skips (and lists) unreadable ones.
Then it projects the winners page by page (:meth:`FeaturesResult.pages`).

Example:
    >>> result = mine_features(prepared, ["a.png", "b.png"], layers=["relu2"], per_channel=4)
    >>> result.state.layers[prepared.resolve("relu2")].entries(0)  # channel 0's best
    >>> for page in result.pages(per_page=8):  # the deconvnet projections, cut to their units
    ...     page.tiles[(0, 0)].projection
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, reduce
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from onnxdeconv.analysis.features import (
    MATCHING,
    FeaturesState,
    FeatureTile,
    MaximaRunner,
    PendingUpdates,
    StateMismatchError,
    feature_channels,
    feature_layer_names,
    meta_value,
    project_entries,
    saturation_bounds,
)
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.errors import InputError, require_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import (
    IMAGE_ERRORS,
    PRESETS,
    ModelInput,
    Preprocessing,
    image_files,
    image_layout,
    load_input,
    preprocessing_from_metadata,
    quiet_opencv,
    skip_reason,
)
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.projector import Projector
from onnxdeconv.runtime import Device
from onnxdeconv.runtime.memory import memory_budget as budget_bytes

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def prefetch(
    items: Sequence[T],
    load: Callable[[T], R],
    batch_size: int,
    workers: int,
    lookahead: int = 2,
    errors: tuple[type[BaseException], ...] = IMAGE_ERRORS,
) -> Iterator[list[tuple[T, R | BaseException]]]:
    """Yield ``items`` in batches, loaded by a thread pool while the caller works on the last one.

    Up to ``lookahead`` batches are decoded ahead (OpenCV and ONNX Runtime release the GIL, so
    decoding overlaps inference). An item whose ``load`` raises one of ``errors`` comes back with
    the exception instead of a result.
    """

    def safe(item: T) -> R | BaseException:
        try:
            return load(item)
        except errors as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[list[tuple[T, Future[R | BaseException]]]] = deque()
        starts = iter(range(0, len(items), batch_size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = items[start : start + batch_size]
                pending.append([(item, pool.submit(safe, item)) for item in chunk])

        for _ in range(max(1, lookahead)):
            submit_next()
        while pending:
            batch = pending.popleft()
            submit_next()
            yield [(item, future.result()) for item, future in batch]


def default_batch(prepared: PreparedModel, budget: int = 8 << 20) -> int:
    """Images per batch: as many as fill ``budget`` bytes of input, from 32 to 256.

    Small inputs get large batches: a batch costs a fixed overhead (one session run, one top-k
    update) that would otherwise weigh on a tiny model.
    """
    size = int(np.prod(prepared.input_shape)) * prepared.loaded.input_dtype.itemsize
    return int(np.clip(budget // max(size, 1), 32, 256))


def default_workers() -> int:
    """Image decoding threads: up to four, one per CPU."""
    return min(4, os.cpu_count() or 1)


def folder_images(folder: str | Path) -> list[str]:
    """The image files under ``folder`` (recursively, sorted), relative to it.

    Raises:
        InputError: The folder does not exist or holds no image.
    """
    return [str(path.relative_to(folder)) for path in image_files(folder)]


def run_meta(
    prepared: PreparedModel,
    preprocessing: Preprocessing,
    shard: tuple[int, int],
    rule: Rule = "deconvnet",
    skip_saturated: bool = False,
) -> dict[str, Any]:
    """What a state records about its run: input shape, preprocessing, shard, projection rule.

    ``skip_saturated``: whether units at a layer's upper bound were left out (only where a
    tracked layer has one, see :func:`~onnxdeconv.analysis.features.saturation_bounds`).
    """
    return {
        "input_shape": list(prepared.input_shape),
        "preprocessing": {
            "scale": preprocessing.scale,
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
            "bgr": preprocessing.bgr,
        },
        "shard": list(shard),
        "rule": rule,
        "skip_saturated": skip_saturated,
    }


def preprocessing_of(meta: Mapping[str, Any]) -> Preprocessing:
    """The preprocessing a state was made with (see :func:`run_meta`)."""
    spec = meta["preprocessing"]
    return Preprocessing(
        scale=float(spec["scale"]),
        mean=tuple(float(m) for m in spec["mean"]),
        std=tuple(float(s) for s in spec["std"]),
        bgr=bool(spec["bgr"]),
    )


def model_digest(path: str | Path) -> str:
    """SHA-256 of the model file, to tell a state's model apart from another."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_meta(model: str | Path, folder: str | Path) -> dict[str, Any]:
    """What a state records about the files of its run: the model (and its digest), the folder."""
    return {
        "model": str(Path(model).resolve()),
        "model_sha256": model_digest(model),
        "folder": str(folder) if "://" in str(folder) else str(Path(folder).resolve()),
    }


class ImageLoader:
    """Loads the images of a state (paths relative to ``root``) as model inputs, by image id."""

    def __init__(
        self,
        prepared: PreparedModel,
        preprocessing: Preprocessing,
        root: str | Path | None,
        names: Sequence[str],
    ) -> None:
        self.prepared = prepared
        self.preprocessing = preprocessing
        self.root = Path(root) if root is not None else None
        self.names = list(names)
        layout, _ = image_layout(prepared.input_shape)
        spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
        self.size = (int(spatial[0]), int(spatial[1]))

    def path(self, image_id: int) -> Path:
        """The file of image ``image_id``."""
        name = self.names[image_id]
        return self.root / name if self.root is not None else Path(name)

    def __call__(self, image_id: int) -> ModelInput:
        """The model input of image ``image_id``."""
        return load_input(self.path(image_id), self.prepared.loaded, self.preprocessing, self.size)


def stream_features(
    state: FeaturesState,
    runner: MaximaRunner,
    loader: ImageLoader,
    image_ids: Sequence[int],
    *,
    batch_size: int,
    workers: int,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    progress: Callable[[int], None] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> None:
    """Count the images ``image_ids`` into ``state``, saving it every few batches.

    Args:
        state: The state to update.
        runner: The streaming graph of the state's layers and channels.
        loader: Loads an image by id.
        image_ids: The images to count (none of them seen yet).
        batch_size: Images per forward pass.
        workers: Decoding threads.
        checkpoint: Where to save the state every ``checkpoint_every`` batches (not at the end).
        checkpoint_every: Batches between checkpoints.
        progress: Called with the number of images done so far after each batch.
        on_skip: Called with the id of an unreadable image and why (default: a logged warning).
    """
    pending = PendingUpdates(state)
    done = 0
    with quiet_opencv():
        for number, batch in enumerate(prefetch(image_ids, loader, batch_size, workers), start=1):
            good: list[int] = []
            arrays = []
            for image_id, result in batch:
                if isinstance(result, BaseException):
                    state.skip(image_id, skip_reason(result))
                    if on_skip is not None:
                        on_skip(image_id, skip_reason(result))
                    else:
                        logger.warning("skipped: %s", result)
                else:
                    good.append(image_id)
                    arrays.append(result.array)
            if good:
                pending.add(runner(np.concatenate(arrays)), good)
            done += len(batch)
            if progress is not None:
                progress(done)
            if checkpoint is not None and number % checkpoint_every == 0:
                pending.flush()
                state.save(checkpoint)
        pending.flush()


@dataclass
class StreamJob:
    """What streaming the images of a run takes: an engine counts ``image_ids`` into ``state``."""

    state: FeaturesState
    prepared: PreparedModel
    #: The tracked channels of each layer.
    channels: dict[str, list[int]]
    #: The saturation bound of each layer whose saturated units are left out.
    bounds: dict[str, float]
    loader: ImageLoader
    image_ids: list[int]
    batch_size: int
    workers: int
    device: Device
    checkpoint: str | Path | None
    checkpoint_every: int
    progress: Callable[[int], None] | None
    on_skip: Callable[[int, str], None] | None


class Engine(Protocol):
    """Where a run streams its images and projects its entries (see :data:`LOCAL`).

    Every engine gives the same state and the same pages; only where the work runs differs.
    """

    def stream(self, job: StreamJob) -> str | None:
        """Count ``job.image_ids`` into ``job.state`` (checkpointing); the provider it ran on."""

    def pages(
        self, result: FeaturesResult, per_page: int, advance: Callable[[int], None]
    ) -> Iterator[FeaturesPage]:
        """Project the entries of ``result`` page by page, in order (see its ``pages``)."""

    def map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, on the engine's workers (independent items)."""

    def describe(self) -> dict[str, Any]:
        """What the engine did (workers, memory), for the run's JSON."""


def mine_features(
    prepared: PreparedModel,
    images: Sequence[str | Path],
    *,
    layers: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    per_channel: int = 9,
    batch_size: int | None = None,
    state: FeaturesState | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    shard: tuple[int, int] = (0, 1),
    root: str | Path | None = None,
    preprocessing: Preprocessing | None = None,
    meta: Mapping[str, Any] | None = None,
    workers: int | None = None,
    rule: Rule = "deconvnet",
    skip_saturated: bool = True,
    device: Device = "auto",
    memory_budget: int | str | None = None,
    progress: Callable[[int], None] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
    engine: Engine | None = None,
) -> FeaturesResult:
    """Each channel's top-k images over ``images`` (Fig. 2 of Zeiler & Fergus).

    Args:
        prepared: The model.
        images: Image files (relative to ``root`` where given); their ids index this list.
        layers: Layers to track (default: the deepest rectified layer at each resolution).
        channels: Channels to track in each layer (None: all); those a layer lacks are left out.
        per_channel: Images kept per channel (the k of top-k; the paper shows 9).
        batch_size: Images per forward pass (default: :func:`default_batch`).
        state: A state to continue (resume): its images, layers and options must be this run's;
            the images it has seen are not streamed again.
        checkpoint: Where to save the state every ``checkpoint_every`` batches and at the end.
        checkpoint_every: Batches between checkpoints.
        shard: ``(i, n)``: stream only the images whose id is ``i`` modulo ``n``.
        root: The folder the image paths are relative to.
        preprocessing: How to turn pictures into inputs (default: the model's metadata, else
            ImageNet's).
        meta: Facts to record in the state besides :func:`run_meta` (e.g. the model file).
        workers: Image decoding threads (default: :func:`default_workers`).
        rule: How the entries are projected (recorded in the state: a resumed or merged run
            keeps it).
        skip_saturated: Leave units at a layer's upper bound (a ReLU6 at 6), whose gradient and
            guided projections are zero, out of the ranking and of the positions (recorded in the
            state: a resumed or merged run keeps it). A channel whose every unit is saturated in
            an image does not count that image.
        device: Where ONNX Runtime runs.
        memory_budget: Bytes (or a size such as ``"512M"``) the projections' deconv runs may
            hold; default: the environment's ``ONNXDECONV_MEMORY_BUDGET``, else about 1 GB.
        progress: Called with the number of images streamed so far after each batch.
        on_skip: Called with the id of each unreadable image and why (default: logged).
        engine: Where the images are streamed and the entries projected (default: this
            machine, :data:`LOCAL`; :class:`onnxdeconv.engines.ray.RayEngine` on a cluster).
            The state and the pages are the same on every engine.

    Returns:
        The state (positions of the winners still unknown) and what projecting them needs.

    Raises:
        StateMismatchError: ``state`` was made with other images, layers, channels or options.
        SelectionError: A layer or the channels do not fit the model.
    """
    names = [str(image) for image in images]
    if not names:
        raise InputError("no images to mine: give at least one")
    if preprocessing is None:
        preprocessing = preprocessing_from_metadata(prepared.loaded) or PRESETS["imagenet"]
    tracked = feature_channels(prepared, feature_layer_names(prepared, layers), channels)
    bounds = saturation_bounds(prepared, tracked) if skip_saturated else {}
    for name, bound in bounds.items():
        logger.info(
            "saturated units of layer '%s' (at the upper bound %g) are left out", name, bound
        )
    facts = {**(meta or {}), **run_meta(prepared, preprocessing, shard, rule, bool(bounds))}
    per_channel = min(per_channel, len(names))  # one entry per image: more slots stay empty
    if state is None:
        state = FeaturesState(per_channel, names)
    elif state.images != names:
        raise StateMismatchError(["images"], checkpoint)
    else:
        differ = state.differences(facts, tracked, per_channel)
        if differ:
            raise StateMismatchError(differ, checkpoint)
    state.meta = facts
    if not state.layers:
        for name, chosen in tracked.items():
            state.add_layer(name, chosen, len(prepared.info[name].per_sample) - 1)
    result = FeaturesResult(
        state,
        prepared,
        preprocessing,
        root=Path(root) if root is not None else None,
        device=device,
        memory_budget=budget_bytes(memory_budget),
        batch_size=batch_size or default_batch(prepared),
        workers=workers or default_workers(),
        engine=engine,
    )
    todo = state.todo(shard)
    if todo:
        job = StreamJob(
            state,
            prepared,
            tracked,
            bounds,
            ImageLoader(prepared, preprocessing, root, names),
            todo,
            batch_size=result.batch_size,
            workers=result.workers,
            device=device,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            progress=progress,
            on_skip=on_skip,
        )
        result.provider = (engine or LOCAL).stream(job)
    if checkpoint is not None:
        state.save(checkpoint)
    return result


def merge_states(
    states: Sequence[str | Path],
    *,
    model: str | Path | None = None,
    images: str | Path | None = None,
    partial: bool = False,
    device: Device = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
) -> FeaturesResult:
    """Merge the state files of the shards of one :func:`mine_features` run into its result.

    The merged top-k equals that of one run over all the images, entry for entry.

    Args:
        states: The shards' state files (see :meth:`FeaturesState.save`).
        model: The model, if it moved since the states were made (default: where it was).
        images: The image folder, if it moved (default: where it was).
        partial: Merge even if some images are in none of the states.
        device: Where ONNX Runtime runs the projections.
        batch_size: Images per forward pass (default: :func:`default_batch`).
        workers: Image decoding threads (default: :func:`default_workers`).

    Returns:
        The merged state (its meta that of one whole run) and what projecting it needs.

    Raises:
        InputError: The states are of different runs, images are missing (without ``partial``),
            or the model or image folder is not where the states say (and not given).
    """
    loaded = [FeaturesState.load(path) for path in states]
    first = loaded[0]
    for path, state in zip(states[1:], loaded[1:], strict=True):
        differ = [
            key for key in MATCHING if meta_value(state.meta, key) != meta_value(first.meta, key)
        ]
        if differ:
            raise InputError(
                f"'{path}' was made with another {', '.join(differ)} than '{states[0]}': merge "
                "only shards of one run"
            )
    merged = reduce(FeaturesState.merge, loaded)
    missing = len(merged.images) - merged.processed
    if missing and not partial:
        raise InputError(
            f"{missing} of {len(merged.images)} images are in none of the states (a shard is "
            "missing or unfinished): give every shard, finish the unfinished, or merge partially",
            parameter="partial",
        )
    model = Path(model or first.meta["model"])
    gone = f"model '{model}' does not exist: give its new path"
    require_path(model, "file", "the model file", gone, error=InputError, parameter="model")
    if model_digest(model) != first.meta["model_sha256"]:
        message = f"'{model}' is not the model the states were made with: give that one"
        raise InputError(message, parameter="model")
    folder = Path(images or first.meta["folder"])
    gone = f"image folder '{folder}' does not exist: give it"
    require_path(folder, "folder", "the image folder", gone, error=InputError, parameter="images")
    prepared = prepare(load_model(model), tuple(int(d) for d in first.meta["input_shape"]))
    merged.meta = {**first.meta, "shard": [0, 1]}
    return FeaturesResult(
        merged,
        prepared,
        preprocessing_of(merged.meta),
        root=folder,
        device=device,
        batch_size=batch_size or default_batch(prepared),
        workers=workers or default_workers(),
    )


@dataclass
class FeaturesPage:
    """The projected entries of a few channels (rows) of one layer."""

    #: The layer (tensor name).
    layer: str
    #: Which page of the layer (from 0), and how many it has.
    number: int
    count: int
    #: Rows of the layer's top-k (its tracked channels) on this page.
    rows: list[int]
    #: ``(row, slot) -> tile`` for every entry that could be projected.
    tiles: dict[tuple[int, int], FeatureTile]


@dataclass
class FeaturesResult:
    """A mined state and what projecting its entries needs (see :func:`mine_features`)."""

    state: FeaturesState
    prepared: PreparedModel
    preprocessing: Preprocessing
    #: The folder the state's image paths are relative to.
    root: Path | None = None
    #: The provider ONNX Runtime ran on (None until a pass ran).
    provider: str | None = None
    device: Device = "auto"
    #: Bytes the deconv runs may hold (see :class:`~onnxdeconv.projector.Projector`).
    memory_budget: int | None = None
    batch_size: int = 32
    workers: int = 2
    #: Where the entries are projected (None: here, see :data:`LOCAL`).
    engine: Engine | None = None

    @property
    def rule(self) -> Rule:
        """How the entries are projected: the rule recorded in the state."""
        rule = meta_value(self.state.meta, "rule")
        if rule not in RULES:
            raise InputError(f"the state records an unknown rule {rule!r}: one of {RULES}")
        return cast(Rule, rule)

    @cached_property
    def loader(self) -> ImageLoader:
        """Loads the state's images by id."""
        return ImageLoader(self.prepared, self.preprocessing, self.root, self.state.images)

    def pages(
        self, per_page: int = 16, progress: Callable[[int], None] | None = None
    ) -> Iterator[FeaturesPage]:
        """Project the entries of every layer, ``per_page`` channels at a time, page by page.

        One forward pass serves each group of distinct images. The positions of the maxima,
        found on the way, are recorded in the state. Only one page's projections are in memory
        at a time.

        Args:
            per_page: Channels per page.
            progress: Called with the number of entries done so far (projected, or whose image
                cannot be read again).
        """
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done)

        yield from (self.engine or LOCAL).pages(self, per_page, advance)

    def page_rows(self, per_page: int) -> dict[str, list[list[int]]]:
        """The rows of each layer's pages, ``per_page`` channels each (one empty page if none)."""
        groups = {}
        for name, layer in self.state.layers.items():
            rows = list(range(len(layer.channels)))
            groups[name] = [rows[i : i + per_page] for i in range(0, len(rows), per_page)] or [[]]
        return groups

    def project_rows(
        self, projector: Projector, rows: list[int], advance: Callable[[int], None]
    ) -> dict[tuple[int, int], FeatureTile]:
        """Project the entries of ``rows`` of the projector's layer; ``(row, slot) -> tile``.

        Images are reloaded in batches, one forward pass each; an image that cannot be read
        again is logged and its entries left out.
        """
        layer = self.state.layers[projector.layer]
        skip = meta_value(self.state.meta, "skip_saturated")
        bound = projector.saturation_bound if skip else None
        needed: dict[int, list[tuple[int, int]]] = {}
        for row in rows:
            for slot, entry in enumerate(layer.entries(row)):
                needed.setdefault(entry.image, []).append((row, slot))
        tiles: dict[tuple[int, int], FeatureTile] = {}
        for batch in prefetch(list(needed), self.loader, self.batch_size, self.workers):
            inputs: list[ModelInput] = []
            owners: list[tuple[int, int, int]] = []
            for image_id, loaded in batch:
                if isinstance(loaded, BaseException):
                    logger.warning("cannot reload %s: %s", self.loader.path(image_id), loaded)
                    advance(len(needed[image_id]))
                    continue
                owners += [(row, slot, len(inputs)) for row, slot in needed[image_id]]
                inputs.append(loaded)
            if inputs:
                tiles.update(
                    project_entries(
                        projector, layer, owners, inputs, self.state.images, advance, bound
                    )
                )
        return tiles

    def project(self) -> dict[str, dict[tuple[int, int], FeatureTile]]:
        """Every entry's tile, per layer (all in memory: for small runs; else :meth:`pages`)."""
        tiles: dict[str, dict[tuple[int, int], FeatureTile]] = {}
        widest = max([1, *map(len, self.state.tracked().values())])
        for page in self.pages(per_page=widest):
            tiles.setdefault(page.layer, {}).update(page.tiles)
        return tiles

    def to_json(self) -> dict[str, Any]:
        """The entries of every channel (image names, positions where known, values)."""
        state = self.state
        aliases = self.prepared.alias_of
        return {
            "schema": "onnxdeconv.features.result/1",
            "provider": self.provider,
            "engine": (self.engine or LOCAL).describe(),
            "rule": self.rule,
            **state.counts_json(),
            "layers": [
                {
                    "layer": name,
                    "alias": aliases.get(name, name),
                    "channels": [
                        {
                            "channel": int(channel),
                            "entries": [
                                {
                                    "image": state.images[entry.image],
                                    "position": None
                                    if entry.position is None
                                    else list(entry.position),
                                    "value": entry.value,
                                }
                                for entry in layer.entries(row)
                            ],
                        }
                        for row, channel in enumerate(layer.channels)
                    ],
                }
                for name, layer in state.layers.items()
            ],
        }


class LocalEngine:
    """This machine: decoding threads beside one ONNX Runtime session (the default engine)."""

    def stream(self, job: StreamJob) -> str | None:
        """Stream ``job`` here (see :func:`stream_features`); the provider it ran on."""
        runner = MaximaRunner(job.prepared, job.channels, job.device, bounds=job.bounds)
        stream_features(
            job.state,
            runner,
            job.loader,
            job.image_ids,
            batch_size=job.batch_size,
            workers=job.workers,
            checkpoint=job.checkpoint,
            checkpoint_every=job.checkpoint_every,
            progress=job.progress,
            on_skip=job.on_skip,
        )
        return runner.provider

    def pages(
        self, result: FeaturesResult, per_page: int, advance: Callable[[int], None]
    ) -> Iterator[FeaturesPage]:
        """Project here, one session per layer, page after page."""
        with quiet_opencv():
            for name, groups in result.page_rows(per_page).items():
                projector = Projector(
                    result.prepared,
                    name,
                    result.rule,
                    result.device,
                    memory_budget=result.memory_budget,
                )
                result.provider = result.provider or projector.provider
                for number, rows in enumerate(groups):
                    tiles = result.project_rows(projector, rows, advance)
                    yield FeaturesPage(name, number, len(groups), rows, tiles)

    def map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, here, one after the other."""
        return [function(item) for item in items]

    def describe(self) -> dict[str, Any]:
        """The local engine's name."""
        return {"name": "local"}


#: The default engine: this machine.
LOCAL = LocalEngine()
