"""Project activations back to pixel space: the forward pass, selections and the batched deconv."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from onnxdeconv import cache
from onnxdeconv.deconv.names import BATCH_INDEX, PROJECTION, SIGNAL, WINDOW_ORIGIN, Rule
from onnxdeconv.deconv.placement import Placement
from onnxdeconv.errors import OnnxDeconvError, SelectionError
from onnxdeconv.runtime.memory import bytes_per_row, rows_per_run, run_sizes
from onnxdeconv.runtime.memory import memory_budget as budget_bytes
from onnxdeconv.runtime.runner import ForwardRunner
from onnxdeconv.runtime.sessions import Device, create_session, run_bound

if TYPE_CHECKING:
    # ONNX loads only where a graph is built: a cached projector runs files (see cache).
    import onnx

    from onnxdeconv.deconv.builder import DeconvPlan
    from onnxdeconv.graph.load import LoadedModel
    from onnxdeconv.prepared import PreparedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """One activation to project: image ``image``, channel ``channel``, at ``position``.

    ``position`` is a spatial index into the feature map, or None for the whole map of the channel
    (every other channel zeroed).
    """

    image: int
    channel: int
    position: tuple[int, ...] | None
    value: float


@dataclass
class ForwardPass:
    """The instrumented forward pass over a batch of inputs."""

    inputs: np.ndarray
    #: The target layer's activations, on the host.
    activations: np.ndarray
    #: Forward tensors the deconv graph needs, kept on the session's device.
    forward_values: dict[str, ort.OrtValue | np.ndarray]


@dataclass
class ModelSpec:
    """A model file's image input and metadata (an :class:`~onnxdeconv.inputs.ModelInputSpec`).

    From :func:`model_spec`: read from the cache, or from the model, which is kept in
    ``loaded`` so that a :class:`Projector` given this spec does not load it again.
    """

    path: Path
    input_name: str
    input_shape: list[int | str]
    input_dtype: np.dtype
    metadata: dict[str, str] = field(default_factory=dict)
    loaded: LoadedModel | None = field(default=None, repr=False)


def model_spec(path: str | Path, use_cache: bool | None = None) -> ModelSpec:
    """The image input and metadata of the model file ``path``, without ONNX where cached.

    Args:
        path: The ``.onnx`` file.
        use_cache: Read and fill the graph cache (default: unless ``ONNXDECONV_NO_CACHE``).
    """
    path = Path(path)
    store = cache.GraphCache() if cache.enabled(use_cache) and path.is_file() else None
    key = None if store is None else cache.key(kind="spec", model=store.file_digest(path))
    entry = None if store is None or key is None else store.get(key)
    if entry is not None:
        facts = entry.manifest
        return ModelSpec(
            path,
            str(facts["input_name"]),
            list(facts["input_shape"]),
            np.dtype(facts["input_dtype"]),
            dict(facts["metadata"]),
        )
    from onnxdeconv.graph.load import load_model

    loaded = load_model(path)
    if store is not None and key is not None:
        manifest = {
            "input_name": loaded.input_name,
            "input_shape": loaded.input_shape,
            "input_dtype": loaded.input_dtype.str,
            "metadata": loaded.metadata,
        }
        store.put(key, manifest, {})
    return ModelSpec(
        path, loaded.input_name, loaded.input_shape, loaded.input_dtype, loaded.metadata, loaded
    )


#: The files of a cached projector's entry.
_FORWARD, _DENSE, _WINDOWED = "forward.onnx", "deconv.onnx", "windowed.onnx"
_ORT = ort.capi.onnxruntime_pybind11_state
#: What a cache entry that does not read back raises (a bad manifest, or a graph ORT refuses:
#: ``create_session`` turns ORT's refusals into an OnnxDeconvError; a rebuild from the model
#: raises the same error again where the model, not the entry, is at fault).
_UNREADABLE = (
    OnnxDeconvError,
    KeyError,
    TypeError,
    ValueError,
    OSError,
    _ORT.Fail,
    _ORT.InvalidProtobuf,
    _ORT.InvalidGraph,
    _ORT.NoSuchFile,
)


@dataclass(frozen=True)
class ProjectionCrops:
    """Projections as crops of the input, each with where it starts in the input.

    Row ``k``'s projection is ``crops[k]`` placed at ``offsets[k]`` in an input of zeros: a
    crop may start before the input (negative offsets) or run past its end, where it is zero.
    """

    #: ``[K, *crop_shape]`` float32: one crop per projection, signs applied.
    crops: np.ndarray
    #: ``[K, len(input_shape)]`` int64: where each crop starts, per per-sample axis of the input
    #: (0 on the channel axis).
    offsets: np.ndarray
    #: Per-sample input shape.
    input_shape: tuple[int, ...]

    @classmethod
    def whole(cls, projections: np.ndarray) -> ProjectionCrops:
        """Whole projections ``[K, *input_shape]`` as crops at offset 0."""
        offsets = np.zeros((len(projections), projections.ndim - 1), np.int64)
        return cls(projections, offsets, tuple(projections.shape[1:]))

    def __len__(self) -> int:
        return len(self.crops)

    def paste(self) -> np.ndarray:
        """Every crop placed in its own input: ``[K, *input_shape]`` float32."""
        if self.crops.shape[1:] == self.input_shape and not self.offsets.any():
            return self.crops
        box = tuple((0, size) for size in self.input_shape)
        out = np.zeros((len(self), *self.input_shape), self.crops.dtype)
        for row in range(len(self)):
            overlap = self._overlap(row, box)
            if overlap is not None:
                source, target = overlap
                out[row][target] = self.crops[row][source]
        return out

    def region(self, row: int, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Row ``row``'s projection inside ``box`` (``[begin, end)`` per per-sample axis).

        The box may reach past the input; the projection is zero there, and wherever the crop
        does not reach. Equal to cutting ``box`` out of the pasted projection, without pasting.
        """
        out = np.zeros([end - begin for begin, end in box], self.crops.dtype)
        overlap = self._overlap(row, box)
        if overlap is not None:
            source, target = overlap
            out[target] = self.crops[row][source]
        return out

    def _overlap(
        self, row: int, box: Sequence[tuple[int, int]]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
        """Where crop ``row``, inside the input, meets ``box``: in the crop, and in the box."""
        source, target = [], []
        for (begin, end), start, extent, limit in zip(
            box, self.offsets[row].tolist(), self.crops.shape[1:], self.input_shape, strict=True
        ):
            low, high = max(begin, start, 0), min(end, start + extent, limit)
            if low >= high:
                return None
            source.append(slice(low - start, high - start))
            target.append(slice(low - begin, high - begin))
        return tuple(source), tuple(target)

    def cut(self, row: int, box: Sequence[tuple[int, int]], layout: str = "NCHW") -> np.ndarray:
        """:meth:`region` of ``box`` over the input's spatial axes, with every channel.

        ``layout`` says where the channel axis is: first (``NCHW``) or last (``NHWC``). The
        result keeps the input's layout.
        """
        if len(box) == len(self.input_shape):
            return self.region(row, box)
        if layout == "NCHW":
            return self.region(row, ((0, self.input_shape[0]), *box))
        return self.region(row, (*box, (0, self.input_shape[-1])))


def _kind(windowed: bool) -> str:
    """The name of a deconv graph's kind in a cache manifest."""
    return "windowed" if windowed else "dense"


def _crop_json(crop: Placement | None) -> dict[str, list[int]] | None:
    if crop is None:
        return None
    return {"scale": list(crop.scale), "shift": list(crop.shift), "size": list(crop.size)}


def _placement(facts: Any) -> Placement | None:
    """A windowed graph's crop, from its cache manifest."""
    if facts is None:
        return None
    return Placement(
        tuple(int(v) for v in facts["scale"]),
        tuple(int(v) for v in facts["shift"]),
        tuple(int(v) for v in facts["size"]),
    )


class Projector:
    """Projects activations of one layer of a model back to its input, on ONNX Runtime.

    Examples:
        >>> projector = Projector("models/digitnet.onnx", layer="conv2", rule="deconvnet")
        >>> result = projector.forward(images)             # images: [N, 1, 28, 28] float32
        >>> picks = projector.strongest(result, top=4)
        >>> projections = projector.project(result, picks)  # [4, 1, 28, 28] float32

    ``keep_outputs=True`` keeps the model's own outputs in its forward pass (for analyses that
    read the class scores too); by default the forward graph is pruned to the layer.

    Given a model file (a path, or a :class:`ModelSpec` from :func:`model_spec`), the built
    graphs are kept in the on-disk cache (:mod:`onnxdeconv.cache`; ``use_cache`` or
    ``ONNXDECONV_NO_CACHE=1`` turns it off): a repeated call with the same file, layer, rule,
    input shape and ``keep_outputs`` runs them without loading the model or importing ONNX.
    :attr:`prepared` and :attr:`plan` then load and build on first use.

    ``memory_budget`` bounds the memory of the deconv runs (bytes, or a size such as ``"512M"``;
    default: the environment variable ``ONNXDECONV_MEMORY_BUDGET``, else about 1 GB): K
    projections run in even runs of at most :meth:`rows_per_run` rows, estimated from the deconv
    graph's activations per row, so that ONNX Runtime's arena, which never shrinks, stays at
    the size of one such run.
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto | LoadedModel | PreparedModel | ModelSpec,
        layer: str | None = None,
        rule: Rule = "deconvnet",
        device: Device = "auto",
        input_shape: tuple[int, ...] | None = None,
        keep_outputs: bool = False,
        use_cache: bool | None = None,
        memory_budget: int | str | None = None,
    ) -> None:
        #: Bytes of activations one deconv run may hold; more rows run in several runs.
        self.memory_budget = budget_bytes(memory_budget)
        #: Estimated bytes per row of the dense (False) and windowed (True) deconv graphs.
        self._row_bytes: dict[bool, int] = {}
        self.rule = rule
        self.keeps_outputs = keep_outputs
        self._device = device
        self._source: str | Path | onnx.ModelProto | LoadedModel | PreparedModel = (
            (model.loaded or model.path) if isinstance(model, ModelSpec) else model
        )
        self._asked_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self._prepared: PreparedModel | None = None
        self._plan: DeconvPlan | None = None
        #: The cache entry this projector runs, where it was found there.
        self._entry: cache.Entry | None = None
        self._quantized: dict[str, bool] = {}
        self._store_slot: tuple[cache.GraphCache, str] | None = None
        #: Units the last :meth:`strongest` call left out for sitting at the layer's bound.
        self.skipped_saturated = 0
        # Only a file named here is cached: a model in memory (a LoadedModel too) may differ from
        # the file it was read from.
        path = model.path if isinstance(model, ModelSpec) else model
        store, key = self._cache_slot(path, layer, use_cache)
        if store is not None and key is not None and self._open_entry(store, key):
            return
        self._build(layer)
        if store is not None and key is not None:
            self._store(store, key)

    def _cache_slot(
        self, path: object, layer: str | None, use_cache: bool | None
    ) -> tuple[cache.GraphCache | None, str | None]:
        """The cache and this projector's key there, where ``path`` is a model file's path."""
        if not isinstance(path, str | Path) or not cache.enabled(use_cache):
            return None, None
        if not Path(path).is_file():
            return None, None
        store = cache.GraphCache()
        shape = None if self._asked_shape is None else list(self._asked_shape)
        key = cache.key(
            kind="projector",
            model=store.file_digest(Path(path)),
            layer=layer,
            rule=self.rule,
            input_shape=shape,
            keep_outputs=self.keeps_outputs,
        )
        return store, key

    def _build(self, layer: str | None) -> None:
        """Load and prepare the model where needed, build the graphs and open the forward pass."""
        from onnxdeconv.graph.passes import check_model, skeleton
        from onnxdeconv.prepared import PreparedModel

        if isinstance(self._source, PreparedModel):
            self._prepared = self._source
        prepared = self.prepared
        self.layer = prepared.resolve(layer) if layer else prepared.default_layer()
        plan = self.plan
        check_model(skeleton(plan.model), full_check=True)
        # Unless the model's outputs are wanted too, the forward graph keeps only what the layer
        # depends on: the rest of a classifier (often most of its weights) would only slow
        # loading. check's faithful.outputs verifies that instrumenting the whole graph leaves
        # the model's outputs unchanged.
        self.runner = ForwardRunner(
            prepared,
            expose=[self.layer, *plan.forward_inputs],
            switches_of=list(plan.switches),
            keep_outputs=self.keeps_outputs,
            device=self._device,
        )
        self.provider = self.runner.provider
        self._forward_inputs = list(plan.forward_inputs)
        self._target_shape = plan.target_shape
        self._to_channels_first = prepared.channels_first_orders.get(self.layer)
        self._upper_bound = prepared.upper_bound(self.layer)

    def _store(self, store: cache.GraphCache, key: str) -> None:
        """Store the built graphs (forward, dense and windowed deconv), with their facts."""
        from onnxdeconv.graph.passes import attach_weights
        from onnxdeconv.graph.quantized import is_quantized

        windowed = self.windowed if self._windowable else None
        # The entry's graphs carry their weights: a cached projector runs them from the files.
        graphs = {
            _FORWARD: attach_weights(self.runner.model, self.runner.weights),
            _DENSE: self.plan.self_contained(),
        }
        if windowed is not None:
            graphs[_WINDOWED] = windowed[0].self_contained()
        loaded = self.prepared.loaded
        manifest: dict[str, Any] = {
            "layer": self.layer,
            "input_name": loaded.input_name,
            "input_shape": list(self.prepared.input_shape),
            "input_dtype": loaded.input_dtype.str,
            "fixed_batch": loaded.fixed_batch,
            "forward_inputs": self._forward_inputs,
            "target_shape": list(self._target_shape),
            "channels_first": self._to_channels_first,
            "upper_bound": self._upper_bound,
            "windowed_inputs": None if windowed is None else windowed[0].forward_inputs,
            "windowed_crop": None if windowed is None else _crop_json(windowed[0].crop),
            # Measured once here (and kept for this projector's own runs), so that a cached
            # projector needs no ONNX to share its budget.
            "row_bytes": {
                _kind(False): self._bytes_per_row(False),
                **({} if windowed is None else {_kind(True): self._bytes_per_row(True)}),
            },
            "quantized": {name: is_quantized(graph) for name, graph in graphs.items()},
        }
        try:
            files = {name: graph.SerializeToString() for name, graph in graphs.items()}
        except ValueError:  # a graph over protobuf's 2 GB: not cached
            return
        store.put(key, manifest, files)

    def _open_entry(self, store: cache.GraphCache, key: str) -> bool:
        """Run the graphs of cache entry ``key``; False where it is missing or unusable."""
        entry = store.get(key)
        if entry is None:
            return False
        facts = entry.manifest
        try:
            self.layer = str(facts["layer"])
            self._forward_inputs = [str(name) for name in facts["forward_inputs"]]
            self._target_shape = tuple(int(d) for d in facts["target_shape"])
            order = facts["channels_first"]
            self._to_channels_first = None if order is None else tuple(int(a) for a in order)
            bound = facts["upper_bound"]
            self._upper_bound = None if bound is None else float(bound)
            self._quantized = {str(k): bool(v) for k, v in facts["quantized"].items()}
            self._entry = entry
            self.runner = ForwardRunner.from_file(
                entry.file(_FORWARD),
                lambda: self.prepared,
                input_name=str(facts["input_name"]),
                input_shape=tuple(int(d) for d in facts["input_shape"]),
                input_dtype=np.dtype(facts["input_dtype"]),
                fixed_batch=facts["fixed_batch"],
                quantized=self._quantized[_FORWARD],
                device=self._device,
            )
        except _UNREADABLE as exc:
            self._entry = None
            store.discard(key, f"{type(exc).__name__}: {exc}")
            return False
        self.provider = self.runner.provider
        self._store_slot = store, key
        return True

    def _entry_session(self, name: str) -> ort.InferenceSession | None:
        """A session of the cache entry's graph ``name``; None (entry dropped) where unreadable."""
        if self._entry is None:
            return None
        try:
            path = self._entry.file(name)
            return create_session(path, self._device, quantized=self._quantized[name])
        except _UNREADABLE as exc:
            assert self._store_slot is not None
            store, key = self._store_slot
            store.discard(key, f"{type(exc).__name__}: {exc}")
            self._entry = None
            return None

    @property
    def prepared(self) -> PreparedModel:
        """The model, prepared for its input size (loaded on first use by a cached projector)."""
        if self._prepared is None:
            from onnxdeconv.graph.load import LoadedModel, load_model
            from onnxdeconv.prepared import PreparedModel, prepare

            source = self._source
            assert not isinstance(source, PreparedModel), "kept as it is by _build"
            loaded = source if isinstance(source, LoadedModel) else load_model(source)
            self._prepared = prepare(loaded, self._asked_shape)
        return self._prepared

    @property
    def plan(self) -> DeconvPlan:
        """The dense deconv plan of the layer (built on first use by a cached projector)."""
        if self._plan is None:
            self._plan = self.prepared.plan(self.layer, self.rule)
        return self._plan

    @property
    def _windowable(self) -> bool:
        """Whether one-hot signals may take the windowed graph (a spatial, channels-first map)."""
        return bool(self.layer_shape[1:]) and self._to_channels_first is None

    @cached_property
    def deconv_session(self) -> ort.InferenceSession:
        """The session of the dense deconv graph (created on first use)."""
        session = self._entry_session(_DENSE)
        return session or create_session(self.plan.model, self._device, weights=self.plan.weights)

    @cached_property
    def _windowed_run(
        self,
    ) -> tuple[list[str], ort.InferenceSession, Placement | None] | None:
        """The windowed graph's forward inputs, session and crop, where the layer has one."""
        if self._entry is not None:
            facts = self._entry.manifest
            inputs = facts["windowed_inputs"]
            if inputs is None:
                return None
            session = self._entry_session(_WINDOWED)
            if session is not None:
                return list(inputs), session, _placement(facts.get("windowed_crop"))
        windowed = self.windowed
        if windowed is None:
            return None
        plan, session = windowed
        return plan.forward_inputs, session, plan.crop

    @cached_property
    def windowed(self) -> tuple[DeconvPlan, ort.InferenceSession] | None:
        """The windowed deconv graph and its session, where the layer's path allows one."""
        plan = self.prepared.windowed_plan(self.layer, self.rule)
        if plan is None:
            return None
        from onnxdeconv.graph.passes import check_model, skeleton

        check_model(skeleton(plan.model), full_check=True)
        return plan, create_session(plan.model, self._device, weights=plan.weights)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape, without the batch dimension."""
        return self.runner.input_shape

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the target layer, channels first (``[C, *spatial]``)."""
        shape = self._target_shape
        if self._to_channels_first is None:
            return shape
        return tuple(shape[axis - 1] for axis in self._to_channels_first[1:])

    def channels_first(self, activations: np.ndarray) -> np.ndarray:
        """The layer's batched values ``[N, ...]`` as ``[N, C, *spatial]``.

        A channels-last map (an NHWC tensor of a TensorFlow model, found through the receptive
        field's axes) is transposed, so that channels and positions mean the same on every layer.
        """
        if self._to_channels_first is None:
            return activations
        return np.ascontiguousarray(np.transpose(activations, self._to_channels_first))

    def forward(self, inputs: np.ndarray) -> ForwardPass:
        """Run the instrumented forward pass on a batch ``[N, *input_shape]``."""
        names = [self.layer, *self._forward_inputs]
        values = self.runner.run_bound(inputs, names, to_host=(self.layer,))
        layer = values.pop(self.layer)
        host = layer if isinstance(layer, np.ndarray) else layer.numpy()
        return ForwardPass(inputs, self.channels_first(np.asarray(host)), values)

    @property
    def saturation_bound(self) -> float | None:
        """The layer's constant upper bound (6 behind a ReLU6), where its producer has one."""
        return self._upper_bound

    def strongest(
        self,
        forward: ForwardPass,
        top: int = 1,
        channel: int | None = None,
        position: tuple[int, ...] | str | None = None,
        image: int = 0,
        skip_saturated: bool = True,
    ) -> list[Selection]:
        """Choose what to project from image ``image``.

        A unit at the layer's upper bound (a ReLU6 at 6, see :attr:`saturation_bound`) is
        saturated: its gradient and guided projections are all zero. Unless
        ``skip_saturated`` is False, the arg-max and the ranking of channels leave such units
        out (a channel with no other unit is not taken); :attr:`skipped_saturated` then counts
        the units the choice would have taken otherwise, and a message is logged.

        Args:
            forward: The forward pass.
            top: How many channels to take, strongest (highest maximum) first.
            channel: Project this channel instead of the strongest ones.
            position: A spatial position, ``"all"`` for the whole map, or None for the arg-max.
            image: Index of the image in the batch.
            skip_saturated: Leave units at the layer's upper bound out of the arg-max.
        """
        act = forward.activations[image].astype(np.float32)
        flat = act.reshape(act.shape[0], -1)
        bound = self.saturation_bound if skip_saturated and position is None else None
        ranked = flat if bound is None else np.where(flat >= bound, -np.inf, flat)
        order, unskipped = self._channel_order(flat, ranked, top, channel)
        self._count_saturated(flat, unskipped, bound)
        spatial = act.shape[1:]
        picks = []
        for c in order:
            if position == "all":
                picks.append(Selection(image, int(c), None, float(flat[c].max())))
                continue
            if position is None:
                # An explicitly chosen channel with every unit saturated keeps its arg-max.
                best = int((ranked if np.isfinite(ranked[c].max()) else flat)[c].argmax())
                where = tuple(int(i) for i in np.unravel_index(best, spatial))
            else:
                where = self._checked_position(position, spatial)
            index = (int(c), *where)
            picks.append(Selection(image, int(c), where, float(act[index])))
        return picks

    def _channel_order(
        self, flat: np.ndarray, ranked: np.ndarray, top: int, channel: int | None
    ) -> tuple[list[int], list[int]]:
        """The channels to take (by ``ranked``), and those the unmasked ``flat`` would take."""
        channels = len(flat)
        if channel is not None:
            if not 0 <= channel < channels:
                raise SelectionError(
                    f"channel {channel} is out of range: layer '{self.layer}' has {channels} "
                    f"channels (0..{channels - 1})"
                )
            return [channel], [channel]
        if top < 1:
            raise SelectionError(f"top must be at least 1, got {top}", parameter="top")
        count = min(top, channels)
        unskipped = [int(c) for c in np.argsort(-flat.max(axis=1), kind="stable")[:count]]
        order = [
            int(c)
            for c in np.argsort(-ranked.max(axis=1), kind="stable")[:count]
            if np.isfinite(ranked[c].max())
        ]
        return order, unskipped

    def _count_saturated(self, flat: np.ndarray, unskipped: list[int], bound: float | None) -> None:
        """Set :attr:`skipped_saturated`: how many of ``unskipped``'s arg-maxes sit at ``bound``."""
        self.skipped_saturated = 0
        if bound is None:
            return
        self.skipped_saturated = sum(int(flat[c].max() >= bound) for c in unskipped)
        if self.skipped_saturated:
            logger.info(
                "skipped %d saturated units of layer '%s' (at the upper bound %g)",
                self.skipped_saturated,
                self.layer,
                bound,
            )

    def _checked_position(
        self, position: tuple[int, ...] | str, spatial: tuple[int, ...]
    ) -> tuple[int, ...]:
        where = tuple(int(p) for p in position)
        if len(where) != len(spatial) or any(
            not 0 <= p < s for p, s in zip(where, spatial, strict=True)
        ):
            raise SelectionError(
                f"position {','.join(map(str, where))} is outside layer '{self.layer}', "
                f"whose feature maps are {'x'.join(map(str, spatial))}"
            )
        return where

    def signal(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """The starting signals: zero except at each selected activation.

        A selected unit carries its magnitude ``|a|``; :meth:`signs` holds the sign that
        :meth:`project` gives its projection, so that a negative unit (a logit, a detection
        head) projects as ``a · deconv(1)``, captum's Neuron* attribution times the activation.
        A whole map (``position`` None) carries its values as they are.
        """
        signal = np.zeros((len(selections), *self.layer_shape), np.float32)
        for row, pick in enumerate(selections):
            act = forward.activations[pick.image, pick.channel]
            if pick.position is None:
                signal[row, pick.channel] = act
            else:
                index = (row, pick.channel, *pick.position)
                signal[index] = abs(act[pick.position])
        return signal

    def signs(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """The sign :meth:`project` gives each selection's projection: ``[K]`` float32, ±1.

        -1 for a unit whose activation is negative, +1 otherwise (whole maps included). The
        rectifiers of ``deconvnet`` and ``guided`` are positively homogeneous (relu(c·s) =
        c·relu(s) for c >= 0), so ``sign(a) · deconv(|a|) = a · deconv(1)``; under ``gradient``,
        which is linear, it equals the projection of the signed value.
        """
        return np.array(
            [
                -1.0
                if pick.position is not None
                and forward.activations[pick.image, pick.channel][pick.position] < 0
                else 1.0
                for pick in selections
            ],
            np.float32,
        )

    def project(
        self,
        forward: ForwardPass,
        selections: Sequence[Selection],
        *,
        allow_non_finite: bool = False,
    ) -> np.ndarray:
        """Project all ``selections`` in batched deconv runs: ``[K, *input_shape]`` float32.

        Each unit's magnitude travels back and its projection takes the unit's sign (see
        :meth:`signal`): a negative activation gives minus the projection of its magnitude.
        The same as :meth:`project_crops` pasted into whole inputs.

        Raises:
            OnnxDeconvError: A projection holds NaN or infinite values, unless
                ``allow_non_finite`` (for a caller that reports them itself, as ``check`` does).
        """
        return self.project_crops(forward, selections, allow_non_finite=allow_non_finite).paste()

    def project_crops(
        self,
        forward: ForwardPass,
        selections: Sequence[Selection],
        *,
        allow_non_finite: bool = False,
    ) -> ProjectionCrops:
        """Project ``selections`` as crops of the input: each unit's window and where it lies.

        Where the layer's path is a plain chain (see :mod:`onnxdeconv.deconv.window`) and every
        selection has a position, each row comes back as the window of its unit's receptive
        field, in input coordinates: the deconv never touches the rest of the input, and the
        host pastes the crops only where whole inputs are asked for
        (:meth:`ProjectionCrops.paste`). Elsewhere each crop is the whole input at offset 0.
        Signs and non-finite values as in :meth:`project`.
        """
        images = [s.image for s in selections]
        signs = self.signs(forward, selections).reshape(-1, *([1] * len(self.input_shape)))
        windowed = self._windowed_run if self._windowable else None
        offsets = np.zeros((len(selections), len(self.input_shape)), np.int64)
        if windowed is None or any(s.position is None for s in selections):
            crops = self.project_signal(forward, self.signal(forward, selections), images)
        else:
            forward_inputs, session, crop = windowed
            positions = np.array([s.position for s in selections], np.int64)
            positions = positions.reshape(len(selections), len(self.layer_shape) - 1)
            signal = self._unit_signal(forward, selections)
            feeds = self._feeds(forward, forward_inputs, signal, images)
            feeds[WINDOW_ORIGIN] = positions
            crops = self._run(session, True, feeds)
            if crop is not None:
                offsets[:, 1:] = crop.origins(positions)
        if not allow_non_finite and not np.isfinite(crops).all():
            # Finite inputs are checked where they are read: this is the model's doing.
            raise OnnxDeconvError(
                f"the projections from layer {self.layer} hold NaN or infinite values: the "
                "model's weights or activations are not finite (or overflow its float type); "
                "check the model"
            )
        return ProjectionCrops(signs.astype(crops.dtype) * crops, offsets, self.input_shape)

    def _unit_signal(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """:meth:`signal` at each row's position only, ``[K, C, 1, ...]``: the windowed input."""
        ones = [1] * (len(self.layer_shape) - 1)
        signal = np.zeros((len(selections), self.layer_shape[0], *ones), np.float32)
        for row, pick in enumerate(selections):
            assert pick.position is not None
            value = forward.activations[pick.image, pick.channel][pick.position]
            signal[(row, pick.channel)] = abs(value)
        return signal

    def _feeds(
        self,
        forward: ForwardPass,
        forward_inputs: Sequence[str],
        signal: np.ndarray,
        images: Sequence[int] | None,
    ) -> dict[str, np.ndarray | ort.OrtValue]:
        feeds: dict[str, np.ndarray | ort.OrtValue] = {SIGNAL: signal}
        if forward_inputs:
            rows = range(len(signal)) if images is None else images
            feeds[BATCH_INDEX] = np.asarray(rows, np.int64)
            feeds.update({name: forward.forward_values[name] for name in forward_inputs})
        return feeds

    def project_signal(
        self, forward: ForwardPass, signal: np.ndarray, images: Sequence[int] | None = None
    ) -> np.ndarray:
        """Project arbitrary signals ``[K, *layer_shape]`` at the target layer.

        The signals travel back as given, signs included: under ``deconvnet`` and ``guided`` a
        negative value is clipped by the first rectifier, unlike in :meth:`project`, which sends
        a unit's magnitude and gives the projection its sign.

        Args:
            forward: The forward pass whose switches and rectifier inputs the deconv follows.
            signal: One signal per row, in the layer's shape.
            images: For each row, the index of its image in ``forward`` (default: row ``k`` uses
                image ``k``).
        """
        signal = np.asarray(signal, np.float32)
        if signal.shape[1:] != self.layer_shape:
            raise SelectionError(
                f"signal has shape {list(signal.shape)}; layer '{self.layer}' needs "
                f"[K, {', '.join(map(str, self.layer_shape))}]"
            )
        if self._to_channels_first is not None:
            signal = np.ascontiguousarray(np.transpose(signal, np.argsort(self._to_channels_first)))
        feeds = self._feeds(forward, self._forward_inputs, signal, images)
        return self._run(self.deconv_session, False, feeds)

    def rows_per_run(self, plan: DeconvPlan | None = None) -> int:
        """How many rows one run of ``plan`` (default: the dense one) carries under the budget."""
        windowed = plan is not None and plan.windowed
        return self._rows_per_run(windowed, plan)

    def _rows_per_run(self, windowed: bool, plan: DeconvPlan | None = None) -> int:
        return rows_per_run(self.memory_budget, self._bytes_per_row(windowed, plan))

    def _bytes_per_row(self, windowed: bool, plan: DeconvPlan | None = None) -> int:
        """The deconv graph's estimated bytes per row: from the cache entry, else measured once."""
        if windowed not in self._row_bytes:
            known = None
            if self._entry is not None:
                known = self._entry.manifest.get("row_bytes", {}).get(_kind(windowed))
            if known is not None:
                self._row_bytes[windowed] = int(known)
            else:
                self._row_bytes[windowed] = bytes_per_row(self._plan_of(windowed, plan).model)
        return self._row_bytes[windowed]

    def _plan_of(self, windowed: bool, plan: DeconvPlan | None = None) -> DeconvPlan:
        """``plan``, else the built dense or windowed plan."""
        if plan is not None:
            return plan
        built = self.windowed if windowed else None
        return self.plan if built is None else built[0]

    def _run(
        self,
        session: ort.InferenceSession,
        windowed: bool,
        feeds: dict[str, np.ndarray | ort.OrtValue],
    ) -> np.ndarray:
        """Run a deconv session on ``feeds`` in runs of :meth:`rows_per_run` rows."""
        rows = len(feeds[SIGNAL])
        most = self._rows_per_run(windowed) if rows > 1 else 1
        sizes = run_sizes(rows, most)
        per_row = {SIGNAL, BATCH_INDEX, WINDOW_ORIGIN}
        parts = []
        start = 0
        for size in sizes:
            part = feeds
            if len(sizes) > 1:
                part = {
                    name: np.asarray(value)[start : start + size] if name in per_row else value
                    for name, value in feeds.items()
                }
            out = run_bound(session, part, [PROJECTION], (PROJECTION,))
            parts.append(np.asarray(out[PROJECTION].numpy()))
            start += size
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts)
