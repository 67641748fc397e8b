"""``onnxdeconv features``: the top-k activations of each channel over an image folder (Fig. 2)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import cv2
import numpy as np
from tqdm import tqdm

from onnxdeconv.analysis.layers import feature_layers
from onnxdeconv.analysis.topk import (
    Entry,
    LayerTopK,
    MaximaRunner,
    PendingUpdates,
    TopK,
    crop_padded,
    unit_box,
)
from onnxdeconv.cli import options
from onnxdeconv.errors import InputError, OnnxDeconvError, SelectionError
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import ModelInput, Preprocessing, image_layout, load_input
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.render import display_projection, save_figure
from onnxdeconv.render.features import FeatureBlock, features_figure
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT
T = TypeVar("T")
R = TypeVar("R")
#: Errors that make one image unusable; the run skips it and goes on.
IMAGE_ERRORS = (OnnxDeconvError, OSError, ValueError, cv2.error)
#: Selections per batched deconv run while rendering (bounds the memory of the projections).
PROJECT_CHUNK = 64
DEFAULT_CHANNELS = "0-15"


def _info(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while decoding: a skipped image is reported in one line."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


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


def parse_shard(value: str | None) -> tuple[int, int]:
    """Parse ``i/n`` (0 <= i < n)."""
    if value is None:
        return 0, 1
    parts = value.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        index, count = -1, 0
    if len(parts) != 2 or count < 1 or not 0 <= index < count:
        raise click.BadParameter(
            f"expected i/n with 0 <= i < n, such as 0/4, got '{value}'", param_hint="--shard"
        )
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
        raise click.BadParameter(
            f"expected 'all', a range such as 0-15 or a list such as 0,3,7, got '{value}'",
            param_hint="--channels",
        ) from None
    return list(chosen)


def choose_layers(prepared: PreparedModel, layers: str | None) -> list[str]:
    """Resolve ``--layers`` (default: :func:`feature_layers`); each must be spatial, projectable."""
    names = (
        [prepared.resolve(part.strip()) for part in layers.split(",") if part.strip()]
        if layers
        else feature_layers(prepared)
    )
    if not names:
        raise SelectionError("the model has no spatial layer: give --layers")
    alias = {v: k for k, v in prepared.aliases.items()}
    for name in names:
        if len(prepared.info[name].per_sample) < 2:
            raise SelectionError(
                f"layer '{alias.get(name, name)}' has no feature maps (shape "
                f"{list(prepared.info[name].per_sample)}): choose a convolutional layer"
            )
        prepared.plan(name)
    return list(dict.fromkeys(names))


def choose_channels(
    prepared: PreparedModel, names: Sequence[str], chosen: list[int] | None
) -> dict[str, list[int]]:
    """The channels to track per layer; those past a layer's channel count are left out."""
    result = {}
    for name in names:
        count = prepared.info[name].per_sample[0]
        kept = list(range(count)) if chosen is None else [c for c in chosen if c < count]
        if not kept:
            raise SelectionError(
                f"none of the --channels exist in layer '{name}', which has {count} channels "
                f"(0..{count - 1})"
            )
        result[name] = kept
    return result


def default_batch(prepared: PreparedModel, budget: int = 8 << 20) -> int:
    """Images per batch: as many as fill ``budget`` bytes of input, from 32 to 256.

    Small inputs get large batches: a batch costs a fixed overhead (one session run, one top-k
    update) that would otherwise weigh on a tiny model.
    """
    size = int(np.prod(prepared.input_shape)) * prepared.loaded.input_dtype.itemsize
    return int(np.clip(budget // max(size, 1), 32, 256))


def model_digest(path: Path) -> str:
    """SHA-256 of the model file, to tell a state's model apart from another."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Meta entries that must agree between a state and the run that resumes or merges it.
MATCHING = ("model_sha256", "input_shape", "preprocessing")


def mismatches(
    state: TopK, meta: dict[str, Any], channels: dict[str, list[int]], k: int
) -> list[str]:
    """What differs between ``state`` and a run with ``meta``, ``channels`` and ``k``."""
    names = {
        "model_sha256": "model",
        "input_shape": "--size",
        "preprocessing": "--preset",
        "shard": "--shard",
    }
    differ = [names[key] for key in (*MATCHING, "shard") if state.meta.get(key) != meta.get(key)]
    if state.k != k:
        differ.append("--top")
    tracked = {name: layer.channels.tolist() for name, layer in state.layers.items()}
    if tracked != channels:
        differ.append("--layers/--channels")
    return differ


class ImageLoader:
    """Loads image files of a folder as model inputs, by image id."""

    def __init__(
        self, prepared: PreparedModel, preprocessing: Preprocessing, folder: Path, names: list[str]
    ) -> None:
        self.prepared = prepared
        self.preprocessing = preprocessing
        self.folder = folder
        self.names = names
        layout, _ = image_layout(prepared.input_shape)
        self.layout = layout
        spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
        self.size = (int(spatial[0]), int(spatial[1]))

    def __call__(self, image_id: int) -> ModelInput:
        """The model input of image ``image_id``."""
        path = self.folder / self.names[image_id]
        return load_input(path, self.prepared.loaded, self.preprocessing, self.size)


@quiet_opencv()
def stream(
    state: TopK,
    runner: MaximaRunner,
    loader: ImageLoader,
    todo: list[int],
    state_path: Path,
    batch_size: int,
    workers: int,
    checkpoint_every: int,
) -> None:
    """Count the images ``todo`` into ``state``, checkpointing it every few batches."""
    saved = state.processed
    pending = PendingUpdates(state)
    bar = tqdm(total=len(todo), unit="img", desc="streaming", file=sys.stderr, dynamic_ncols=True)
    try:
        for number, batch in enumerate(prefetch(todo, loader, batch_size, workers), start=1):
            good: list[int] = []
            arrays = []
            for image_id, result in batch:
                if isinstance(result, BaseException):
                    _info(f"skipped: {result}")
                    state.skip(image_id, str(result))
                else:
                    good.append(image_id)
                    arrays.append(result.array)
            if good:
                pending.add(runner(np.concatenate(arrays)), good)
            bar.update(len(batch))
            if number % checkpoint_every == 0:
                pending.flush()
                state.save(state_path)
                saved = state.processed
        pending.flush()
    except KeyboardInterrupt:
        _info(
            f"interrupted: the checkpoint {state_path} holds {saved} images; continue with --resume"
        )
        raise
    finally:
        bar.close()


@quiet_opencv()
def write_outputs(
    state: TopK,
    prepared: PreparedModel,
    preprocessing: Preprocessing,
    folder: Path,
    outdir: Path,
    *,
    model_name: str,
    per_page: int = 16,
    batch_size: int = 32,
    workers: int = 2,
    device: Device = "auto",
    state_path: Path | None = None,
) -> list[Path]:
    """Project every top-k entry of ``state`` and write each layer's pictures and JSON.

    The positions of the maxima, found on the way, are recorded in ``state``, which is saved
    again to ``state_path`` when given.

    Returns:
        The files written.
    """
    loader = ImageLoader(prepared, preprocessing, folder, state.images)
    aliases = {v: k for k, v in prepared.aliases.items()}
    grid = max(1, int(np.ceil(np.sqrt(state.k))))
    written: list[Path] = []
    skipped = [
        {"image": state.images[i], "reason": reason} for i, reason in sorted(state.skipped.items())
    ]
    for name, layer in state.layers.items():
        alias = aliases.get(name, name.replace("/", "_"))
        projector = Projector(prepared, name, "deconvnet", device)
        field = prepared.receptive_fields[name]
        rows = list(range(len(layer.channels)))
        pages = [rows[i : i + per_page] for i in range(0, len(rows), per_page)] or [[]]
        pictures = [
            outdir / (f"{alias}.png" if len(pages) == 1 else f"{alias}_page{n + 1}.png")
            for n in range(len(pages))
        ]
        channels_json: list[dict[str, Any]] = []
        bar = tqdm(
            total=sum(len(layer.entries(r)) for r in rows),
            unit="proj",
            desc=f"projecting {alias}",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for number, (page, picture_path) in enumerate(zip(pages, pictures, strict=True)):
            tiles = _project_page(
                layer,
                page,
                projector=projector,
                loader=loader,
                batch_size=batch_size,
                workers=workers,
                bar=bar,
            )
            blocks = []
            for row in page:
                channel = int(layer.channels[row])
                entries = layer.entries(row)
                pairs = [tiles.get((row, slot)) for slot in range(len(entries))]
                top = f" · max {entries[0].value:.3g}" if entries else " · no images"
                blocks.append(
                    FeatureBlock(
                        f"channel {channel}{top}",
                        [p[0] if p else None for p in pairs],
                        [p[1] if p else None for p in pairs],
                    )
                )
                channels_json.append(
                    {
                        "channel": channel,
                        "entries": [
                            _entry_json(state, entry, field, prepared, (row, slot) in tiles)
                            for slot, entry in enumerate(entries)
                        ],
                    }
                )
            page_note = f" · page {number + 1}/{len(pages)}" if len(pages) > 1 else ""
            title = (
                f"{model_name} · {alias} ({name}) · top {state.k} of {state.counted} images "
                f"per channel · receptive field {field.describe()}{page_note}\n"
                "each channel: deconvnet projections (left) beside the image patches (right), "
                "strongest first"
            )
            save_figure(features_figure(blocks, title, grid=grid), picture_path)
            written.append(picture_path)
        bar.close()
        json_path = outdir / f"{alias}.json"
        report = {
            "schema": "onnxdeconv.features.layer/1",
            "model": model_name,
            "layer": name,
            "alias": alias,
            "receptive_field": asdict(field),
            "top": state.k,
            "images": len(state.images),
            "processed": state.processed,
            "counted": state.counted,
            "skipped": skipped,
            "pictures": [p.name for p in pictures],
            "channels": channels_json,
        }
        with atomic_path(json_path) as temp:
            temp.write_text(compact_json(report) + "\n")
        written.append(json_path)
    if state_path is not None:
        state.save(state_path)
    return written


def compact_json(value: Any, indent: int = 0) -> str:
    """JSON with one line per flat object or list (of numbers, strings and short lists)."""
    if not _nested(value):
        return json.dumps(value)
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{compact_json(v, indent + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def _nested(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(v, dict) or _nested(v) for v in value.values())
    if isinstance(value, list):
        return any(isinstance(v, dict) or _nested(v) for v in value)
    return False


def _entry_json(
    state: TopK, entry: Entry, field: Any, prepared: PreparedModel, projected: bool
) -> dict[str, Any]:
    layout, _ = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
    where = entry.position
    return {
        "image": state.images[entry.image],
        "position": None if where is None else list(where),
        "value": entry.value,
        "box": None if where is None else [list(b) for b in unit_box(field, where, spatial)],
        **({} if projected else {"missing": True}),
    }


def _project_page(
    layer: LayerTopK,
    rows: list[int],
    projector: Projector,
    loader: ImageLoader,
    batch_size: int,
    workers: int,
    bar: tqdm,
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Project the entries of rows ``rows``, one forward pass per group of distinct images.

    Positions still unknown are found in that forward pass (the first maximum of the map) and
    recorded in ``layer``.

    Returns:
        ``(row, slot) -> (projection picture, image patch)``, both cropped to the unit's box.
    """
    needed: dict[int, list[tuple[int, int, Entry]]] = {}
    for row in rows:
        for slot, entry in enumerate(layer.entries(row)):
            needed.setdefault(entry.image, []).append((row, slot, entry))
    field = projector.prepared.receptive_fields[projector.layer]
    bgr = loader.preprocessing.bgr
    tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for batch in prefetch(list(needed), loader, batch_size, workers):
        inputs: list[ModelInput] = []
        owners: list[tuple[int, int, Entry, int]] = []
        for image_id, result in batch:
            if isinstance(result, BaseException):
                _info(f"cannot reload {loader.folder / loader.names[image_id]}: {result}")
                bar.update(len(needed[image_id]))
                continue
            owners += [(*owner, len(inputs)) for owner in needed[image_id]]
            inputs.append(result)
        if not inputs:
            continue
        forward = projector.forward(np.concatenate([i.array for i in inputs]))
        picks = []
        for row, slot, entry, local in owners:
            channel = int(layer.channels[row])
            fmap = forward.activations[local, channel]
            position = entry.position
            if position is None:
                flat = int(np.argmax(fmap))
                position = tuple(int(i) for i in np.unravel_index(flat, fmap.shape))
                layer.locate(row, slot, position)
            now = float(fmap[position])
            if not np.isclose(now, entry.value, rtol=1e-2, atol=1e-3):
                _info(
                    f"warning: {loader.names[entry.image]} now gives {now:.4g} at channel "
                    f"{channel} {list(position)}, not {entry.value:.4g}: did it change since it "
                    "was streamed?"
                )
            picks.append(Selection(local, channel, position, entry.value))
        for start in range(0, len(picks), PROJECT_CHUNK):
            chunk = picks[start : start + PROJECT_CHUNK]
            projections = projector.project(forward, chunk)
            for pick, projection, (row, slot, _, _) in zip(
                chunk, projections, owners[start : start + PROJECT_CHUNK], strict=True
            ):
                assert pick.position is not None
                model_input = inputs[pick.image]
                box = unit_box(field, pick.position, model_input.display.shape[:2])
                values = projection.transpose(1, 2, 0) if loader.layout == "NCHW" else projection
                shown = display_projection(crop_padded(values, box, 0.0), "NHWC", bgr)
                patch = crop_padded(model_input.display, box, 128)
                tiles[(row, slot)] = (shown, patch)
            bar.update(len(chunk))
    return tiles


def run_meta(
    model: Path,
    folder: Path,
    prepared: PreparedModel,
    preprocessing: Preprocessing,
    shard: tuple[int, int],
) -> dict[str, Any]:
    """What a state records about the run that made it."""
    return {
        "model": str(model.resolve()),
        "model_sha256": model_digest(model),
        "folder": str(folder.resolve()),
        "input_shape": list(prepared.input_shape),
        "preprocessing": {
            "scale": preprocessing.scale,
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
            "bgr": preprocessing.bgr,
        },
        "shard": list(shard),
    }


def preprocessing_of(meta: dict[str, Any]) -> Preprocessing:
    """The preprocessing a state was made with."""
    spec = meta["preprocessing"]
    return Preprocessing(
        scale=float(spec["scale"]),
        mean=tuple(float(m) for m in spec["mean"]),
        std=tuple(float(s) for s in spec["std"]),
        bgr=bool(spec["bgr"]),
    )


def folder_images(folder: Path) -> list[str]:
    """The image files under ``folder`` (recursively, sorted), relative to it."""
    if not folder.is_dir():
        raise InputError(f"image folder '{folder}' does not exist: check the IMAGES_DIR argument")
    try:
        files = options.image_files(folder)
    except InputError:
        raise InputError(
            f"no images (jpg, png, bmp, webp, tiff) in '{folder}': point IMAGES_DIR at a folder "
            "of images"
        ) from None
    return [str(path.relative_to(folder)) for path in files]


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images_dir", type=click.Path(path_type=Path))
@click.option(
    "--layers",
    metavar="A,B,..",
    help="Tensor names or aliases; default: the deepest rectified layer at each resolution.",
)
@click.option(
    "--channels",
    default=DEFAULT_CHANNELS,
    show_default=True,
    help="'all', a range (0-15) or a list (0,3,7); channels a layer lacks are left out.",
)
@click.option("--top", type=click.IntRange(min=1), default=9, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per forward pass; default: as many as fill 8 MB of input, from 32 to 256.",
)
@click.option("--shard", metavar="i/n", help="Process only images whose index % n == i.")
@click.option("--resume", is_flag=True, help="Continue from the state's last checkpoint.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path),
    help="State file (.npz); default: OUTDIR/features_state.npz (…_state_IofN.npz for a shard).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Save the state every N batches.",
)
@options.preset_option
@options.size_option
@click.option("--per-page", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), help="Image decoding threads; default: min(4, CPUs)."
)
@options.device_option
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(path_type=Path),
    help="Output folder (created); default: MODEL-stem_features.",
)
def features(
    model: Path,
    images_dir: Path,
    layers: str | None,
    channels: str,
    top: int,
    batch_size: int | None,
    shard: str | None,
    resume: bool,
    state_path: Path | None,
    checkpoint_every: int,
    preset: str | None,
    size: str | None,
    per_page: int,
    workers: int | None,
    device: str,
    outdir: Path | None,
) -> None:
    """Find each channel's top-k activations over a folder of images and show them (Fig. 2).

    Streams every image under IMAGES_DIR (recursively) through the model in batches and keeps,
    per layer and channel, the k images with the highest maximum activation (one per image). Then
    projects each of them, at the position of that maximum, back to pixel space with the
    deconvnet and writes, per layer, a picture of the projections beside the image patches their
    units see, and a JSON of the entries. Unreadable images are skipped and listed. With --shard
    the run writes only its state, for 'onnxdeconv merge'; an interrupted run continues with
    --resume.

    Example: onnxdeconv features models/digitnet.onnx models/examples --layers relu2 --top 4
    """
    shard_index, shard_count = parse_shard(shard)
    chosen = parse_channels(channels)
    outdir = outdir or Path(f"{model.stem}_features")
    names = folder_images(images_dir)
    loaded = load_model(model)
    input_shape = options.input_shape_for(loaded, options.int_pair(size, "--size"))
    prepared = prepare(loaded, input_shape)
    layer_names = choose_layers(prepared, layers)
    tracked = choose_channels(prepared, layer_names, chosen)
    preprocessing, source = options.resolve_preprocessing(loaded, preset, None, None, None, False)
    batch_size = batch_size or default_batch(prepared)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output '{outdir}' is a file: give a folder with -o")
    outdir.mkdir(parents=True, exist_ok=True)
    if state_path is None:
        stem = (
            "features_state" if shard_count == 1 else f"features_state_{shard_index}of{shard_count}"
        )
        state_path = outdir / f"{stem}.npz"
    meta = run_meta(model, images_dir, prepared, preprocessing, (shard_index, shard_count))
    state = _start_state(state_path, resume, names, tracked, top, meta, prepared)
    mine = range(shard_index, len(names), shard_count)
    todo = [i for i in mine if not state.seen[i]]
    workers = workers or min(4, os.cpu_count() or 1)
    _info(f"preprocessing: {source}: {preprocessing.describe()}")
    aliases = {v: k for k, v in prepared.aliases.items()}
    _info(
        f"layers {', '.join(aliases.get(n, n) for n in layer_names)}; "
        f"{len(todo)} of {len(mine)} images to stream"
        + (f" (shard {shard_index}/{shard_count} of {len(names)})" if shard_count > 1 else "")
    )
    if todo:
        runner = MaximaRunner(prepared, tracked, cast(Device, device))
        loader = ImageLoader(prepared, preprocessing, images_dir, names)
        stream(state, runner, loader, todo, state_path, batch_size, workers, checkpoint_every)
    state.save(state_path)
    if state.skipped:
        _info(f"skipped {len(state.skipped)} unreadable images (listed in the JSON)")
    click.echo(str(state_path))
    if shard_count > 1:
        _info(
            f"shard {shard_index}/{shard_count} done; when all are, run: onnxdeconv merge "
            f"{outdir}/features_state_*of{shard_count}.npz -o {outdir}"
        )
        return
    if state.counted == 0:
        raise InputError(f"none of the {len(names)} images in '{images_dir}' is readable")
    for path in write_outputs(
        state,
        prepared,
        preprocessing,
        images_dir,
        outdir,
        model_name=model.name,
        per_page=per_page,
        batch_size=batch_size,
        workers=workers,
        device=cast(Device, device),
        state_path=state_path,
    ):
        click.echo(str(path))


def _start_state(
    path: Path,
    resume: bool,
    names: list[str],
    tracked: dict[str, list[int]],
    top: int,
    meta: dict[str, Any],
    prepared: PreparedModel,
) -> TopK:
    if resume and path.is_file():
        state = TopK.load(path)
        if state.images != names:
            raise InputError(
                f"the images in the folder changed since {path} was written ({len(state.images)} "
                f"then, {len(names)} now): rerun without --resume to start over"
            )
        differ = mismatches(state, meta, tracked, top)
        if differ:
            raise InputError(
                f"{path} was made with other options ({', '.join(differ)} differ): rerun with "
                "the same options, or without --resume to start over"
            )
        _info(f"resuming from {path}: {state.processed} images done")
        state.meta = meta
        return state
    if resume:
        _info(f"no checkpoint at {path}: starting from the beginning")
    state = TopK(top, names, meta=meta)
    for name, chosen in tracked.items():
        state.add_layer(name, chosen, len(prepared.info[name].per_sample) - 1)
    return state
