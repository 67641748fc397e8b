"""The top-k activations of each channel over a stream of images (Fig. 2 of Zeiler & Fergus).

Each image counts at most once per channel: its score for a channel is the maximum of the channel's
feature map. A channel keeps the ``k`` best scores seen so far, ranked by value (highest first),
then by image id (lowest first), so the result is a total order and does not depend on how the
stream was batched, split into shards or resumed: streaming any partition of the images in any
order, and merging the partial states in any order, gives exactly the ``k`` first entries of all
the images sorted by that key.

:class:`FeaturesState` is that state. It knows nothing of files or sessions: an engine (the local
one of :mod:`onnxdeconv.engines`, or a distributed one) feeds it batches of per-image maxima
(:func:`maxima_model` computes them inside the graph, :class:`MaximaRunner` runs it), saves it to
resume, and merges the states of its workers.

Each entry also has the position of its maximum (the first in row-major order on ties). Finding
it needs the whole feature map, which the streaming graph does not fetch (see
:func:`maxima_model`): positions stay unknown (-1) until the entries are projected, when the
forward pass of their images gives them for free (:func:`project_entries`).
:meth:`FeaturesState.update`, which receives whole feature maps, records them at once.

Memory is ``layers x channels x k`` entries plus one flag per image, whatever the number of images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxdeconv.analysis.layers import feature_layers
from onnxdeconv.errors import InputError, OnnxDeconvError, SelectionError, require_path
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.passes import check_model, skeleton, with_input_shape
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import ModelInput
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

#: The ``schema`` entry of a saved state.
SCHEMA = "onnxdeconv.features/1"
#: Image id of an empty slot (fewer images seen than ``k``).
EMPTY = -1
#: Position entry of a maximum whose position is not known yet.
UNKNOWN = -1
#: Meta entries that must agree between the states of one run (resumed or merged).
MATCHING = ("model_sha256", "input_shape", "preprocessing", "rule", "skip_saturated")
#: What a meta entry means where a state lacks it: states from before the rule was recorded
#: were all projected with the deconvnet, and those from before saturated units were skipped
#: counted them.
META_DEFAULTS: dict[str, Any] = {"rule": "deconvnet", "skip_saturated": False}


def meta_value(meta: Mapping[str, Any], key: str) -> Any:
    """``meta[key]``, or its :data:`META_DEFAULTS` value where a state lacks it."""
    return meta.get(key, META_DEFAULTS.get(key))


#: Selections per batched deconv run (bounds the memory of the projections).
PROJECT_CHUNK = 64


#: The parameter of a run behind each difference a state can have from it (``images``: none).
DIFFERENCE_PARAMETERS = {
    "model_sha256": "model",
    "input_shape": "input_shape",
    "preprocessing": "preprocessing",
    "shard": "shard",
    "top": "per_channel",
    "channels": "channels",
    "skip_saturated": "skip_saturated",
}


class StateMismatchError(InputError):
    """A state does not belong to the run that resumes it: ``differences`` names what differs.

    The names are meta keys (``model_sha256``, ``input_shape``, ``preprocessing``, ``shard``),
    ``top``, ``channels`` (the tracked layers or channels) or ``images`` (the list of images).
    The message names them as the run's parameters, and ``parameter`` is the first one's.
    """

    def __init__(self, differences: Sequence[str], path: str | Path | None = None) -> None:
        self.differences = list(differences)
        named = [DIFFERENCE_PARAMETERS.get(key, key) for key in self.differences]
        super().__init__(
            f"{'the state' if path is None else repr(str(path))} was made with other options "
            f"({', '.join(named)} differ): resume it with the same ones, or start a new state",
            parameter=DIFFERENCE_PARAMETERS.get(self.differences[0]) if differences else None,
        )


@dataclass(frozen=True)
class Entry:
    """One of a channel's top-k: the image (its id), where its maximum is, and the value.

    ``position`` is None until it is known (see :meth:`LayerTopK.locate`).
    """

    image: int
    position: tuple[int, ...] | None
    value: float


@dataclass
class LayerTopK:
    """The top-k of every tracked channel of one layer.

    Row ``i`` of each array belongs to channel ``channels[i]`` of the layer; slot ``j`` is the
    ``j``-th best entry. Empty slots have image id :data:`EMPTY`, value ``-inf`` and position 0.
    """

    #: ``[C]`` int64: the layer's channel index of each row.
    channels: np.ndarray
    #: ``[C, k]`` float32.
    values: np.ndarray
    #: ``[C, k]`` int64 image ids.
    images: np.ndarray
    #: ``[C, k, r]`` int64 positions in the feature map (``r`` spatial dims; -1 when unknown).
    positions: np.ndarray

    @classmethod
    def empty(cls, channels: Sequence[int], k: int, rank: int) -> LayerTopK:
        """No entries yet, for ``channels`` of a layer with ``rank`` spatial dims."""
        count = len(channels)
        return cls(
            channels=np.asarray(channels, np.int64),
            values=np.full((count, k), -np.inf, np.float32),
            images=np.full((count, k), EMPTY, np.int64),
            positions=np.zeros((count, k, rank), np.int64),
        )

    @property
    def rank(self) -> int:
        """Number of spatial dims of a position."""
        return int(self.positions.shape[2])

    def entries(self, row: int) -> list[Entry]:
        """The filled slots of row ``row``, best first."""
        return [
            Entry(int(i), None if (pos < 0).any() else tuple(int(p) for p in pos), float(v))
            for i, pos, v in zip(
                self.images[row], self.positions[row], self.values[row], strict=True
            )
            if i != EMPTY
        ]

    def locate(self, row: int, slot: int, position: Sequence[int]) -> None:
        """Record where the maximum of entry ``slot`` of row ``row`` is."""
        if self.images[row, slot] == EMPTY:
            raise ValueError(f"slot {slot} of row {row} is empty")
        self.positions[row, slot] = position


def _best_of(
    values: np.ndarray, images: np.ndarray, positions: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the ``k`` best of the entries ``[R, M]``: highest value, then lowest image id.

    Entries with image id :data:`EMPTY` (value ``-inf``, position 0) rank after every real one.
    """
    # As unsigned, EMPTY (-1) is the largest id, so it loses every tie.
    order = np.lexsort((images.view(np.uint64), -values), axis=-1)[:, :k]
    rows = np.arange(len(values))[:, None]
    return values[rows, order], images[rows, order], positions[rows, order]


def spatial_maxima(
    activations: np.ndarray, bound: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per image and channel, the maximum over positions and where it is.

    Args:
        activations: ``[N, C, *spatial]``.
        bound: Leave out the units at or above this bound (saturated ones, see
            :func:`saturation_bounds`); a channel with no other unit gets ``-inf``.

    Returns:
        Values ``[N, C]`` (float32) and positions ``[N, C, r]`` (int64; the first maximum in
        row-major order on ties).
    """
    count, channels = activations.shape[:2]
    spatial = activations.shape[2:]
    flat = activations.reshape(count, channels, -1)
    if bound is not None:
        flat = np.where(flat >= bound, -np.inf, flat)
    index = flat.argmax(axis=2)
    values = np.take_along_axis(flat, index[..., None], axis=2)[..., 0].astype(np.float32)
    return values, unravel_positions(index, spatial)


def unravel_positions(index: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    """Turn flat indices ``[...]`` into positions ``[..., r]`` in a map of shape ``spatial``."""
    if not spatial:
        return np.zeros((*index.shape, 0), np.int64)
    return np.stack(np.unravel_index(index, tuple(spatial)), axis=-1).astype(np.int64)


@dataclass
class FeaturesState:
    """Top-k activations per channel over a stream of images, for several layers.

    ``images`` names every image the stream may contain (ids index it); ``seen`` flags those
    already processed (counted or skipped), which is what makes resuming and merging exact.
    The state is independent of where the activations come from: engines count batches into it
    (:meth:`update`, :meth:`update_maxima`, :meth:`skip`), save it (:meth:`save`) and merge the
    states of disjoint sets of images (:meth:`merge`).

    Example:
        >>> state = FeaturesState(k=9, images=["a.png", "b.png"])
        >>> state.update({"relu2": activations}, image_ids=[0, 1])  # activations [2, C, H, W]
        >>> state.layers["relu2"].entries(0)  # channel 0's best, highest first
    """

    k: int
    images: list[str]
    layers: dict[str, LayerTopK] = field(default_factory=dict)
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: Image id -> why it was skipped (unreadable).
    skipped: dict[int, str] = field(default_factory=dict)
    #: Free JSON-able facts about how the state was made (model, options, shard).
    meta: dict[str, Any] = field(default_factory=dict)
    _stack_layout: list[tuple[str, int, int]] = field(
        default_factory=list, repr=False, compare=False
    )
    _stack_cache: dict[int, tuple[list[str], LayerTopK]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.seen.size != len(self.images):
            self.seen = np.zeros(len(self.images), bool)

    @property
    def processed(self) -> int:
        """How many images were processed (counted or skipped)."""
        return int(self.seen.sum())

    @property
    def counted(self) -> int:
        """How many images contributed activations."""
        return self.processed - len(self.skipped)

    @property
    def filled(self) -> int:
        """How many entries the layers hold (every channel of every layer, up to k each)."""
        return sum(int((layer.images != EMPTY).sum()) for layer in self.layers.values())

    def add_layer(self, name: str, channels: Sequence[int], rank: int) -> None:
        """Track ``channels`` of layer ``name``, whose positions have ``rank`` spatial dims."""
        if name in self.layers:
            raise ValueError(f"layer '{name}' is already tracked")
        self.layers[name] = LayerTopK.empty(channels, self.k, rank)

    def _claim(self, image_ids: Iterable[int]) -> np.ndarray:
        ids = np.fromiter(image_ids, np.int64).reshape(-1)
        # A stream hands out increasing ids: then the ends bound them and none repeats.
        increasing = ids.size < 2 or bool((ids[1:] > ids[:-1]).all())
        low, high = (ids[0], ids[-1]) if increasing and ids.size else (ids.min(), ids.max())
        if ids.size and (low < 0 or high >= len(self.images)):
            raise ValueError(f"image ids must be in 0..{len(self.images) - 1}")
        if (not increasing and len(np.unique(ids)) != ids.size) or self.seen[ids].any():
            again = sorted({int(i) for i in ids[self.seen[ids]]} | _duplicates(ids))
            raise ValueError(f"images already counted: ids {again[:10]}")
        return ids

    def update(
        self,
        layer_activations: Mapping[str, np.ndarray],
        image_ids: Sequence[int],
        bounds: Mapping[str, float] | None = None,
    ) -> None:
        """Count a batch: ``layer_activations[layer]`` is ``[N, C, *spatial]`` for ``image_ids``.

        ``C`` is the number of tracked channels of the layer, in the order of its ``channels``
        (all channels of a layer that is not tracked yet). Positions are recorded. Units at or
        above ``bounds[layer]`` (saturated, see :func:`saturation_bounds`) are left out.
        """
        maxima, positions = {}, {}
        for name, activations in layer_activations.items():
            bound = (bounds or {}).get(name)
            maxima[name], positions[name] = spatial_maxima(np.asarray(activations), bound)
        self.update_maxima(maxima, image_ids, positions)

    def update_maxima(
        self,
        maxima: Mapping[str, np.ndarray],
        image_ids: Sequence[int],
        positions: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Count a batch from its per-image maxima.

        Args:
            maxima: Per layer (every tracked one; others start being tracked), ``[N, C]``: each
                image's maximum per tracked channel. NaN and ``-inf`` (a channel whose every
                unit was left out) are never counted.
            image_ids: The images of the batch.
            positions: Per layer, ``[N, C, r]``: where each maximum is; unknown if not given.
        """
        ids = self._claim(image_ids)
        for name, values in maxima.items():
            if name not in self.layers:
                rank = positions[name].shape[2] if positions is not None else 0
                self.add_layer(name, range(values.shape[1]), rank)
        missing = set(self.layers) - set(maxima)
        if missing:
            raise ValueError(f"no maxima for tracked layers {sorted(missing)}")
        for rank, (names, stack) in self._stacks().items():
            values = np.concatenate([maxima[n] for n in names], axis=1)
            if values.shape != (ids.size, len(stack.channels)):
                shapes = {n: maxima[n].shape for n in names}
                raise ValueError(f"maxima {shapes} do not fit {ids.size} images")
            if positions is None:
                where = np.full((*values.shape, rank), UNKNOWN, np.int64)
            else:
                where = np.concatenate([positions[n] for n in names], axis=1)
                if where.shape != (*values.shape, rank):
                    raise ValueError(f"positions {where.shape} do not fit maxima {values.shape}")
            # Most entries of a long stream rank below the k-th best: look only at the others.
            # (NaN compares false, so it never enters; as unsigned, an EMPTY k-th loses ties;
            # -inf would tie with an empty slot, so it is kept out explicitly.)
            last_value = stack.values[:, -1]
            last_image = stack.images[:, -1].view(np.uint64)
            entering = (values > -np.inf) & (
                (values > last_value)
                | ((values == last_value) & (ids.view(np.uint64)[:, None] < last_image))
            )
            rows = np.flatnonzero(entering.any(axis=0))
            if not rows.size:
                continue
            chosen = entering[:, rows].T
            best = _best_of(
                np.concatenate(
                    [stack.values[rows], np.where(chosen, values[:, rows].T, -np.inf)], axis=1
                ).astype(np.float32),
                np.concatenate([stack.images[rows], np.where(chosen, ids[None, :], EMPTY)], axis=1),
                np.concatenate(
                    [stack.positions[rows], where[:, rows].transpose(1, 0, 2) * chosen[..., None]],
                    axis=1,
                ),
                self.k,
            )
            stack.values[rows], stack.images[rows], stack.positions[rows] = best
        self.seen[ids] = True

    def _stacks(self) -> dict[int, tuple[list[str], LayerTopK]]:
        """The layers of each rank as one table, whose rows the layers' arrays are views of.

        One selection then serves all layers of a batch, so its cost hardly grows with them.
        """
        layout = [(name, layer.rank, id(layer.values)) for name, layer in self.layers.items()]
        if self._stack_layout != layout:
            self._stack_cache = {}
            for rank in dict.fromkeys(layer.rank for layer in self.layers.values()):
                names = [n for n, layer in self.layers.items() if layer.rank == rank]
                parts = [self.layers[n] for n in names]
                stack = LayerTopK(
                    np.concatenate([p.channels for p in parts]),
                    np.concatenate([p.values for p in parts]),
                    np.concatenate([p.images for p in parts]),
                    np.concatenate([p.positions for p in parts]),
                )
                start = 0
                for part in parts:
                    stop = start + len(part.channels)
                    part.values = stack.values[start:stop]
                    part.images = stack.images[start:stop]
                    part.positions = stack.positions[start:stop]
                    start = stop
                self._stack_cache[rank] = (names, stack)
            layout = [(n, layer.rank, id(layer.values)) for n, layer in self.layers.items()]
            self._stack_layout = layout
        return self._stack_cache

    def skip(self, image_id: int, reason: str) -> None:
        """Record an image that could not be processed; it counts as seen."""
        ids = self._claim([image_id])
        self.skipped[int(ids[0])] = reason
        self.seen[ids] = True

    def todo(self, shard: tuple[int, int] = (0, 1)) -> list[int]:
        """The ids of shard ``shard = (i, n)`` (ids ``i, i + n, ...``) not processed yet."""
        index, count = shard
        return [i for i in range(index, len(self.images), count) if not self.seen[i]]

    def tracked(self) -> dict[str, list[int]]:
        """The tracked channels of each layer, in order."""
        return {name: layer.channels.tolist() for name, layer in self.layers.items()}

    def differences(
        self, meta: Mapping[str, Any], channels: Mapping[str, Sequence[int]], k: int
    ) -> list[str]:
        """What differs between this state and a run with ``meta``, ``channels`` and ``k``.

        Returns:
            The :data:`MATCHING` keys and ``shard`` that ``meta`` has and this state's meta
            disagrees on, ``top`` if ``k`` differs, ``channels`` if the layers or channels do
            (see :class:`StateMismatchError`).
        """
        differ = [
            key
            for key in (*MATCHING, "shard")
            if key in meta and meta_value(self.meta, key) != meta[key]
        ]
        if self.k != k:
            differ.append("top")
        if self.layers and self.tracked() != {n: list(c) for n, c in channels.items()}:
            differ.append("channels")
        return differ

    def merge(self, other: FeaturesState) -> FeaturesState:
        """The state of one run over the images of both (which must be disjoint).

        Exact and order-independent: ``a.merge(b)`` equals ``b.merge(a)``, and merging the states
        of any partition of the images, in any order, equals one run over all of them (entries
        and their order; ties go to the lower image id). A state that has counted nothing yet
        (and may track no layers) merges with any. The meta keeps the entries both agree on.

        Raises:
            OnnxDeconvError: The states differ in images, k, layers or channels, or overlap.
        """
        if self.images != other.images:
            raise OnnxDeconvError(
                f"the states list different images ({len(self.images)} and {len(other.images)}): "
                "merge only shards of one run over the same folder"
            )
        if self.k != other.k:
            raise OnnxDeconvError(f"the states keep different top-k ({self.k} and {other.k})")
        mine, theirs = list(self.tracked().items()), list(other.tracked().items())
        if mine and theirs and mine != theirs:
            raise OnnxDeconvError(
                "the states track different layers or channels: merge only shards of one run "
                "with the same layers and channels"
            )
        both = np.flatnonzero(self.seen & other.seen)
        if both.size:
            raise OnnxDeconvError(
                f"{both.size} images are in both states (first: '{self.images[both[0]]}'): merge "
                "each shard once"
            )
        meta = {key: value for key, value in self.meta.items() if other.meta.get(key) == value}
        merged = FeaturesState(self.k, list(self.images), meta=meta)
        merged.seen = self.seen | other.seen
        merged.skipped = dict(sorted({**self.skipped, **other.skipped}.items()))
        for name in dict(mine or theirs):
            parts = [state.layers[name] for state in (self, other) if name in state.layers]
            best = _best_of(
                np.concatenate([part.values for part in parts], axis=1),
                np.concatenate([part.images for part in parts], axis=1),
                np.concatenate([part.positions for part in parts], axis=1),
                self.k,
            )
            merged.layers[name] = LayerTopK(parts[0].channels.copy(), *best)
        return merged

    def absorb(self, part: FeaturesState, image_ids: Sequence[int] | np.ndarray) -> None:
        """Merge in place the state ``part`` of a few of this state's images.

        ``part`` counted its own list of images, whose ``j``-th is this state's image
        ``image_ids[j]``; ids must increase with ``j`` so that ties (the lower id first) rank
        alike in both. The result is that of :meth:`merge` (exact and order-independent), at a
        cost that grows with ``part`` only: a distributed engine absorbs the top-k of each
        worker's batch this way.

        Raises:
            ValueError: ``image_ids`` do not fit ``part``, do not increase, or were counted.
            OnnxDeconvError: The states differ in k, layers or channels.
        """
        ids = np.asarray(image_ids, np.int64).reshape(-1)
        if ids.size != len(part.images) or (ids.size > 1 and not (ids[1:] > ids[:-1]).all()):
            raise ValueError(f"{ids.size} increasing image ids must name the part's images")
        if part.k != self.k:
            raise OnnxDeconvError(f"the states keep different top-k ({self.k} and {part.k})")
        mine, theirs = self.tracked(), part.tracked()
        if mine and theirs and mine != theirs:
            raise OnnxDeconvError("the states track different layers or channels")
        self._claim(ids[part.seen])
        for name, layer in part.layers.items():
            if name not in self.layers:
                self.add_layer(name, layer.channels.tolist(), layer.rank)
            into = self.layers[name]
            images = np.where(layer.images == EMPTY, EMPTY, ids[np.maximum(layer.images, 0)])
            best = _best_of(
                np.concatenate([into.values, layer.values], axis=1),
                np.concatenate([into.images, images], axis=1),
                np.concatenate([into.positions, layer.positions], axis=1),
                self.k,
            )
            # In place: the layers' arrays may be views of the stacked tables (see _stacks).
            into.values[...], into.images[...], into.positions[...] = best
        self.skipped.update({int(ids[j]): reason for j, reason in part.skipped.items()})
        self.skipped = dict(sorted(self.skipped.items()))
        self.seen[ids[part.seen]] = True

    def counts_json(self) -> dict[str, Any]:
        """How many images the top-k holds and ran over, and the skipped ones with their reason."""
        return {
            "top": self.k,
            "images": len(self.images),
            "processed": self.processed,
            "counted": self.counted,
            "skipped_images": [
                {"image": self.images[i], "reason": reason}
                for i, reason in sorted(self.skipped.items())
            ],
        }

    def to_json(self) -> dict[str, Any]:
        """Everything but the arrays: layers, images, skipped images, meta."""
        return {
            "schema": SCHEMA,
            "k": self.k,
            "layers": [
                {"name": name, "channels": layer.channels.tolist(), "rank": layer.rank}
                for name, layer in self.layers.items()
            ],
            "processed": self.processed,
            "counted": self.counted,
            "skipped_images": [
                {"image": self.images[i], "id": i, "reason": r} for i, r in self.skipped.items()
            ],
            "meta": self.meta,
            "images": self.images,
        }

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` (``.npz``) and a readable copy to the same name ``.json``.

        Both are written atomically; the ``.npz`` holds everything :meth:`load` needs.
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"seen": self.seen}
        for index, layer in enumerate(self.layers.values()):
            arrays[f"values_{index}"] = layer.values
            arrays[f"images_{index}"] = layer.images
            arrays[f"positions_{index}"] = layer.positions
        description = self.to_json()
        arrays["meta"] = np.asarray(json.dumps(description))
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        with atomic_path(path.with_suffix(".json")) as temp:
            temp.write_text(json.dumps({**description, "arrays": path.name}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FeaturesState:
        """Read a state written by :meth:`save`.

        Raises:
            OnnxDeconvError: The file is missing or is not a state.
        """
        path = Path(path)
        missing = f"state file '{path}' does not exist: check the path"
        require_path(path, "file", "a state file (.npz)", missing)
        try:
            with np.load(path, allow_pickle=False) as data:
                description = json.loads(str(data["meta"]))
                if description.get("schema") != SCHEMA:
                    raise ValueError(f"schema {description.get('schema')!r}")
                state = cls(int(description["k"]), list(description["images"]))
                state.meta = dict(description["meta"])
                state.seen = np.asarray(data["seen"], bool)
                # Earlier releases wrote the list as "skipped".
                listed = description.get("skipped_images", description.get("skipped", []))
                state.skipped = {int(s["id"]): str(s["reason"]) for s in listed}
                for index, spec in enumerate(description["layers"]):
                    state.layers[spec["name"]] = LayerTopK(
                        channels=np.asarray(spec["channels"], np.int64),
                        values=np.asarray(data[f"values_{index}"], np.float32),
                        images=np.asarray(data[f"images_{index}"], np.int64),
                        positions=np.asarray(data[f"positions_{index}"], np.int64),
                    )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OnnxDeconvError(
                f"'{path}' is not a features state ({exc}): give a .npz written by "
                "'onnxdeconv features'"
            ) from exc
        if state.seen.size != len(state.images):
            raise OnnxDeconvError(f"'{path}' is damaged: its image flags do not match its list")
        return state

    @classmethod
    def resume(
        cls,
        path: str | Path,
        images: Sequence[str],
        channels: Mapping[str, Sequence[int]],
        k: int,
        meta: Mapping[str, Any],
    ) -> FeaturesState | None:
        """The checkpoint at ``path`` to continue a run over ``images`` with; None if none.

        Args:
            path: Where the run saves its checkpoints.
            images: The run's images, as :func:`~onnxdeconv.engines.folder_images` lists them.
            channels: The run's tracked channels of each layer.
            k: The run's top-k.
            meta: What the run records about itself (see :meth:`differences`).

        Raises:
            StateMismatchError: The checkpoint was made with other images or options.
        """
        path = Path(path)
        if not path.is_file():
            return None
        state = cls.load(path)
        same = state.images == list(images)
        differences = state.differences(meta, channels, k) if same else ["images"]
        if differences:
            raise StateMismatchError(differences, path)
        return state


class PendingUpdates:
    """Collects batches of maxima and counts them into a :class:`FeaturesState` in bulk.

    An update costs about as much for 32 images as for 256 (the work is per channel), so counting
    several small inference batches at once keeps the bookkeeping small beside the forward pass.
    Images waiting here are not counted yet: :meth:`flush` before saving the state.
    """

    def __init__(self, state: FeaturesState, images: int = 256) -> None:
        self.state = state
        self.images = images
        self._maxima: list[Mapping[str, np.ndarray]] = []
        self._ids: list[int] = []

    def add(self, maxima: Mapping[str, np.ndarray], image_ids: Sequence[int]) -> None:
        """Queue a batch (as for :meth:`FeaturesState.update_maxima`); count the queue when full."""
        self._maxima.append(maxima)
        self._ids.extend(int(i) for i in image_ids)
        if len(self._ids) >= self.images:
            self.flush()

    def flush(self) -> None:
        """Count every queued batch."""
        if not self._maxima:
            return
        joined = {
            name: np.concatenate([batch[name] for batch in self._maxima])
            for name in self._maxima[0]
        }
        ids, self._maxima, self._ids = self._ids, [], []
        self.state.update_maxima(joined, ids)


def _duplicates(ids: np.ndarray) -> set[int]:
    unique, counts = np.unique(ids, return_counts=True)
    return {int(i) for i in unique[counts > 1]}


# --- the streaming graph: the model cut at the chosen layers, reduced to per-channel maxima ---

#: Output of :func:`maxima_model`: ``[N, sum of the layers' channels]``, layer after layer.
MAXIMA = "onnxdeconv_topk_maxima"


def saturation_bounds(prepared: PreparedModel, layers: Iterable[str]) -> dict[str, float]:
    """The upper bound of each of ``layers`` that has one (a ReLU6's 6), float layers only.

    A unit at its layer's bound is saturated: its gradient and guided projections are all zero,
    so the top-k leaves it out when asked to (see :func:`maxima_model`, :func:`spatial_maxima`).
    """
    bounds = {}
    for name in layers:
        bound = prepared.upper_bound(name)
        floating = np.issubdtype(_numpy_dtype(prepared.info[name].elem_type), np.floating)
        if bound is not None and floating:
            bounds[name] = bound
    return bounds


def _numpy_dtype(elem_type: int) -> np.dtype[Any]:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def maxima_model(
    prepared: PreparedModel,
    layers: Sequence[str],
    batch: int | str = "N",
    bounds: Mapping[str, float] | None = None,
) -> onnx.ModelProto:
    """The forward graph cut after ``layers``, reduced to each channel's maximum per image.

    Only the nodes the layers need are kept. Each layer ends in a ``GlobalMaxPool``, which ONNX
    Runtime runs in its blocked CPU layout like the convolutions: the feature maps are never
    reordered or copied to the host, and the pass costs what the plain forward pass costs. The
    positions of the maxima are left for later (see the module docstring): finding them needs
    the maps in plain layout, which measured 10-15 % slower than the whole forward pass.

    Output :data:`MAXIMA` is float32 ``[N, sum of C]``, every channel of each layer in turn.
    Units of a layer at or above ``bounds[layer]`` (saturated, see :func:`saturation_bounds`)
    are replaced by ``-inf`` before the pooling; a layer without a bound is pooled as it is.
    """
    model = with_input_shape(
        prepared.loaded.model, prepared.loaded.input_name, (batch, *prepared.input_shape)
    )
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    flat = []
    for index, name in enumerate(layers):
        p = f"onnxdeconv_topk_{index}"
        current = name
        if bounds and name in bounds:
            dtype = _numpy_dtype(prepared.info[name].elem_type)
            current = _minus_infinity_unless(
                graph, nodes, name, "Less", bounds[name], dtype, f"{p}_masked"
            )
        nodes.append(helper.make_node("GlobalMaxPool", [current], [f"{p}_max"], name=f"{p}_max"))
        current = f"{p}_max"
        if prepared.info[name].elem_type != TensorProto.FLOAT:
            nodes.append(
                helper.make_node(
                    "Cast", [current], [f"{p}_f32"], name=f"{p}_f32", to=TensorProto.FLOAT
                )
            )
            current = f"{p}_f32"
        if bounds and name in bounds:
            # ONNX Runtime's CPU GlobalMaxPool starts from the dtype's lowest finite value, so a
            # channel whose every unit was masked comes out as that: make it -inf again.
            lowest = float(np.finfo(_numpy_dtype(prepared.info[name].elem_type)).min)
            current = _minus_infinity_unless(
                graph, nodes, current, "Greater", lowest, np.dtype(np.float32), f"{p}_kept"
            )
        nodes.append(
            helper.make_node("Flatten", [current], [f"{p}_flat"], name=f"{p}_flat", axis=1)
        )
        flat.append(f"{p}_flat")
    nodes.append(helper.make_node("Concat", flat, [MAXIMA], name=MAXIMA, axis=1))
    needed = _needed_nodes(graph, set(layers))
    kept = [n for i, n in enumerate(graph.node) if i in needed]
    del graph.node[:]
    graph.node.extend([*kept, *nodes])
    used = {name for n in graph.node for name in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    total = sum(prepared.info[name].per_sample[0] for name in layers)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(MAXIMA, TensorProto.FLOAT, [batch, total]))
    del graph.value_info[:]
    return model


def _minus_infinity_unless(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    tensor: str,
    comparison: str,
    threshold: float,
    dtype: np.dtype,
    name: str,
) -> str:
    """Append ``Where(comparison(tensor, threshold), tensor, -inf)`` in ``dtype``; return ``name``.

    Masked values never enter the top-k: a maximum of ``-inf`` is not counted.
    """
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(threshold, dtype), f"{name}_threshold"),
            numpy_helper.from_array(np.asarray(-np.inf, dtype), f"{name}_floor"),
        ]
    )
    nodes += [
        helper.make_node(
            comparison, [tensor, f"{name}_threshold"], [f"{name}_kept"], name=f"{name}_kept"
        ),
        helper.make_node("Where", [f"{name}_kept", tensor, f"{name}_floor"], [name], name=name),
    ]
    return name


def _needed_nodes(graph: onnx.GraphProto, targets: set[str]) -> set[int]:
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    needed: set[int] = set()
    stack = [producer[t] for t in targets if t in producer]
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        stack.extend(producer[name] for name in graph.node[index].input if name in producer)
    return needed


class MaximaRunner:
    """Runs :func:`maxima_model` on batches: per layer, each tracked channel's maxima ``[N, C]``.

    The graph runs on a :class:`~onnxdeconv.runtime.ForwardRunner`. A model that declares a fixed
    batch runs with a free batch when a probe shows the cut graph gives the same values that way;
    otherwise it runs in chunks of its batch (:attr:`chunk`). Units at ``bounds[layer]`` are
    left out of the maxima (see :func:`maxima_model`).
    """

    def __init__(
        self,
        prepared: PreparedModel,
        channels: Mapping[str, Sequence[int]],
        device: Device = "auto",
        threads: int | None = None,
        bounds: Mapping[str, float] | None = None,
    ) -> None:
        self.prepared = prepared
        self.channels = {name: list(chosen) for name, chosen in channels.items()}
        # Columns of the output that hold each layer's tracked channels.
        self.columns: dict[str, np.ndarray] = {}
        start = 0
        for name, chosen in self.channels.items():
            self.columns[name] = start + np.asarray(chosen, np.int64)
            start += prepared.info[name].per_sample[0]
        model = maxima_model(prepared, list(self.channels), "N", bounds)
        check_model(skeleton(model))
        self.forward = ForwardRunner(prepared, model=model, device=device, threads=threads)
        self.provider = self.forward.provider
        fixed = prepared.loaded.fixed_batch
        # The graph's batch is free; the runner chunks at the model's declared one unless the
        # probe shows the free batch gives the same values.
        self.chunk = None
        if fixed is not None and not self._free_batch_agrees(fixed):
            logger.info("the model needs its fixed batch %d: running in chunks", fixed)
            self.chunk = fixed

    @property
    def chunk(self) -> int | None:
        """Images per run, the last run padded with copies of its last image (None: any)."""
        return self.forward.fixed_batch

    @chunk.setter
    def chunk(self, value: int | None) -> None:
        self.forward.fixed_batch = value

    def _free_batch_agrees(self, fixed: int) -> bool:
        loaded = self.prepared.loaded
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(2 * fixed, *self.prepared.input_shape)).astype(loaded.input_dtype)
        try:
            together = self._run(probe)
            apart = np.concatenate([self._run(probe[i : i + fixed]) for i in (0, fixed)])
        except ort.capi.onnxruntime_pybind11_state.Fail:
            return False
        return together.shape == apart.shape and bool(
            np.allclose(together, apart, rtol=1e-2, atol=1e-3)
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.forward.run(batch, [MAXIMA])[MAXIMA]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per layer, ``[N, C]``: each image's maximum of each tracked channel."""
        everything = self._run(batch)
        return {name: everything[:, columns] for name, columns in self.columns.items()}


# --- crops: the receptive field of a unit, cut from the input or a projection ---


def unit_box(
    field_: ReceptiveField, position: Sequence[int], spatial: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """The ``[begin, end)`` input range per spatial dim of the unit at ``position``.

    The range may extend past the image (into padding); a unit that sees the whole input gets the
    whole image.
    """
    box = field_.box(tuple(position))
    if box is None:
        return tuple((0, int(size)) for size in spatial)
    return tuple((int(begin), int(end)) for begin, end in box)


def crop_padded(
    picture: np.ndarray, box: Sequence[tuple[int, int]], fill: float | int = 0
) -> np.ndarray:
    """Cut ``box`` out of ``picture`` (its first ``len(box)`` axes), filling what lies outside.

    Args:
        picture: ``[H, W, ...]`` (any trailing axes, e.g. colour, are kept).
        box: ``[begin, end)`` per leading axis; it may extend past the picture.
        fill: The value of the parts of the box outside the picture.

    Returns:
        ``[end - begin for each axis, ...]``, of ``picture``'s dtype.
    """
    sizes = tuple(end - begin for begin, end in box)
    if any(size <= 0 for size in sizes):
        raise ValueError(f"empty box {list(box)}")
    out = np.full((*sizes, *picture.shape[len(box) :]), fill, picture.dtype)
    source, target = [], []
    for (begin, end), extent in zip(box, picture.shape, strict=False):
        low, high = max(begin, 0), min(end, extent)
        if low >= high:
            return out
        source.append(slice(low, high))
        target.append(slice(low - begin, high - begin))
    out[tuple(target)] = picture[tuple(source)]
    return out


# --- which layers and channels to track ---


def feature_layer_names(prepared: PreparedModel, layers: Sequence[str] | None = None) -> list[str]:
    """Resolve ``layers`` (default: :func:`~onnxdeconv.analysis.layers.feature_layers`).

    Raises:
        SelectionError: A layer has no feature maps or cannot be projected, or the model has no
            spatial layer to choose by default.
    """
    names = [prepared.resolve(name) for name in layers] if layers else feature_layers(prepared)
    if not names:
        raise SelectionError("the model has no spatial layer: choose the layers yourself")
    alias = prepared.alias_of
    for name in names:
        if len(prepared.info[name].per_sample) < 2:
            raise SelectionError(
                f"layer '{alias.get(name, name)}' has no feature maps (shape "
                f"{list(prepared.info[name].per_sample)}): choose a convolutional layer"
            )
        prepared.plan(name)
    return list(dict.fromkeys(names))


def feature_channels(
    prepared: PreparedModel, layers: Sequence[str], channels: Sequence[int] | None = None
) -> dict[str, list[int]]:
    """The channels to track per layer (None: all); those past a layer's channel count are left out.

    Raises:
        SelectionError: None of ``channels`` exists in one of the layers.
    """
    result = {}
    for name in layers:
        count = prepared.info[name].per_sample[0]
        kept = list(range(count)) if channels is None else [c for c in channels if c < count]
        if not kept:
            raise SelectionError(
                f"none of the chosen channels exist in layer '{name}', which has {count} "
                f"channels (0..{count - 1})",
                parameter="channels",
            )
        result[name] = kept
    return result


# --- projecting the entries: the deconvnet picture of each, cut to its unit's box ---


@dataclass
class FeatureTile:
    """One projected top-k entry, cut to the receptive field of its unit."""

    #: ``[h, w, c]`` float32: the projection (under the run's rule) inside the box (zero past
    #: the image), channels last.
    projection: np.ndarray
    #: ``[h, w]`` or ``[h, w, 3]`` uint8: what the model saw inside the box (grey past the image).
    patch: np.ndarray


def project_entries(
    projector: Projector,
    layer: LayerTopK,
    owners: Sequence[tuple[int, int, int]],
    inputs: Sequence[ModelInput],
    names: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    bound: float | None = None,
) -> dict[tuple[int, int], FeatureTile]:
    """Project entries of ``layer`` (the layer of ``projector``) from their images' inputs.

    One forward pass serves all of ``inputs``. Positions still unknown are found in it (the first
    maximum of the map, leaving out units at or above ``bound``) and recorded in ``layer``; a
    value that no longer matches the one counted is logged (the image changed since).

    Args:
        projector: The projector of the layer (its rule is the run's).
        layer: The layer's top-k.
        owners: ``(row, slot, input)`` per entry: its row and slot in ``layer`` and the index of
            its image in ``inputs``.
        inputs: The model inputs of the entries' images.
        names: The state's image names, for the log.
        progress: Called with the number of entries projected after each batched deconv run.
        bound: The layer's saturation bound where the state left saturated units out.

    Returns:
        ``(row, slot) -> tile``.
    """
    forward = projector.forward(np.concatenate([i.array for i in inputs]))
    picks = []
    for row, slot, local in owners:
        channel = int(layer.channels[row])
        image = int(layer.images[row, slot])
        value = float(layer.values[row, slot])
        fmap = forward.activations[local, channel]
        position = layer.entries(row)[slot].position
        if position is None:
            kept = fmap if bound is None else np.where(fmap >= bound, -np.inf, fmap)
            position = tuple(int(i) for i in np.unravel_index(int(np.argmax(kept)), fmap.shape))
            layer.locate(row, slot, position)
        now = float(fmap[position])
        if not np.isclose(now, value, rtol=1e-2, atol=1e-3):
            logger.warning(
                "%s now gives %.4g at channel %d %s, not %.4g: did it change since it was "
                "streamed?",
                names[image] if names else f"image {image}",
                now,
                channel,
                list(position),
                value,
            )
        picks.append(Selection(local, channel, position, value))
    field_ = projector.prepared.receptive_fields[projector.layer]
    tiles: dict[tuple[int, int], FeatureTile] = {}
    for start in range(0, len(picks), PROJECT_CHUNK):
        chunk = picks[start : start + PROJECT_CHUNK]
        # Crops of each unit's window: no whole projection is made.
        crops = projector.project_crops(forward, chunk)
        for index, (pick, (row, slot, _)) in enumerate(
            zip(chunk, owners[start : start + PROJECT_CHUNK], strict=True)
        ):
            assert pick.position is not None
            model_input = inputs[pick.image]
            box = unit_box(field_, pick.position, model_input.display.shape[:2])
            values = crops.cut(index, box, model_input.layout)
            if model_input.layout == "NCHW":
                values = np.ascontiguousarray(values.transpose(1, 2, 0))
            tiles[(row, slot)] = FeatureTile(values, crop_padded(model_input.display, box, 128))
        if progress is not None:
            progress(len(chunk))
    return tiles
