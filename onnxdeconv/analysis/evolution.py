"""Feature evolution during training (Zeiler & Fergus 2014, Fig. 4).

For chosen feature maps of chosen layers, each checkpoint of a training run is asked for the
strongest activation of the map over a whole image set (the maximum over images and positions),
and that activation is projected back to pixel space with the deconvnet. Shown side by side, the
projections reveal when a feature settles: Zeiler & Fergus saw the lower layers converge within a
few epochs and the upper ones only after many.

The stability of a layer is measured between consecutive checkpoints: the cosine similarity of the
projections of each chosen map, each cropped to the receptive field of its unit (so that the same
pattern found at another position, or in another image, still compares as the same), averaged over
the maps. A layer *converges* at the first checkpoint after which every step keeps that similarity
at or above a threshold (0.9 by default).

Everything here is arrays in, arrays out: :func:`trace_checkpoint` runs one model,
:func:`stability` scores a sequence of crops, :func:`trace_evolution` does both for a series.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from onnxdeconv.analysis.layers import evolution_layers
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import InputError, OnnxDeconvError, SelectionError
from onnxdeconv.graph.load import load_model
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import Layout, image_layout, input_shape_for
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.projector import ForwardPass, Projector, Selection
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

#: Default similarity a layer must keep between consecutive checkpoints to count as converged.
THRESHOLD = 0.9
#: Default number of feature maps followed per layer.
CHANNELS_PER_LAYER = 4
#: Metadata key holding a checkpoint's number of training epochs.
EPOCH_KEY = "onnxdeconv.epoch"


@dataclass
class LayerTrace:
    """One layer at one checkpoint: the strongest activation of each chosen map, projected.

    Attributes:
        layer: Tensor name.
        channels: The chosen feature maps, in row order.
        picks: For each channel, its strongest activation over all images and positions.
        projections: ``[K, *input_shape]`` float32 projections of ``picks`` (under the rule).
        crops: ``[K, *crop]`` each projection cut to its unit's receptive field, zero where the
            field reaches past the image border, in the model's input layout (all the same shape).
        boxes: For each pick, the ``[begin, end)`` input range per spatial dim that was cut out
            (may extend past the border); None for a unit that sees the whole input.
    """

    layer: str
    channels: list[int]
    picks: list[Selection]
    projections: np.ndarray
    crops: np.ndarray
    boxes: list[tuple[tuple[int, int], ...] | None]


@dataclass
class LayerStability:
    """How a layer's projections change from checkpoint to checkpoint.

    Attributes:
        channel_similarity: ``[K, T-1]`` cosine similarity of each map's cropped projection
            between checkpoints ``t`` and ``t+1``.
        similarity: ``[T-1]`` its mean over the maps: the layer's stability score per step.
        same_argmax: ``[T-1]`` fraction of the maps whose strongest activation stayed in the same
            image at the same position (None when the picks were not given).
        converged_at: Index of the first checkpoint after which ``similarity`` stays at or above
            the threshold; None if the last step is below it.
        threshold: The threshold used.
    """

    channel_similarity: np.ndarray
    similarity: np.ndarray
    same_argmax: np.ndarray | None
    converged_at: int | None
    threshold: float


@dataclass
class EvolutionReport:
    """A series of checkpoints traced layer by layer, with each layer's stability.

    Attributes:
        labels: One label per checkpoint (``epoch 4``, or the file name).
        epochs: Each checkpoint's ``onnxdeconv.epoch`` metadata as a number, or None.
        layers: The traced tensor names, shallow to deep.
        aliases: Short alias of each traced tensor (``relu2``).
        channels: The feature maps followed in each layer.
        traces: ``traces[t][layer]``: the layer at checkpoint ``t``.
        stability: Each layer's :class:`LayerStability`.
        fields: Each layer's receptive field (the same at every checkpoint).
        threshold: The similarity a step needs to count as stable.
        provider: The execution provider that ran the checkpoints.
        rule: The rule the crops were projected with.
    """

    labels: list[str]
    epochs: list[float | None]
    layers: list[str]
    aliases: dict[str, str]
    channels: dict[str, list[int]]
    traces: list[dict[str, LayerTrace]]
    stability: dict[str, LayerStability]
    fields: dict[str, ReceptiveField] = field(default_factory=dict)
    threshold: float = THRESHOLD
    provider: str = ""
    rule: Rule = "deconvnet"

    def converged_label(self, layer: str) -> str | None:
        """The label of the checkpoint where ``layer`` converges, or None."""
        index = self.stability[layer].converged_at
        return None if index is None else self.labels[index]

    def text_table(self) -> str:
        """Per layer: the maps, the mean similarity of each step, and where it converges."""
        steps = [
            f"{_short(a)}→{_short(b)}" for a, b in zip(self.labels, self.labels[1:], strict=False)
        ]
        header = ["layer", "maps", *steps, "converges at"]
        rows = [header]
        for name in self.layers:
            stable = self.stability[name]
            converged = self.converged_label(name)
            if converged is None:
                last = float(stable.similarity[-1])
                converged = f"not yet (last {last:.2f} < {stable.threshold:g})"
            rows.append(
                [
                    self.aliases.get(name, name),
                    ",".join(map(str, self.channels[name])),
                    *(f"{value:.3f}" for value in stable.similarity),
                    converged,
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def to_json(
        self, image_names: Sequence[str] | None = None, paths: Sequence[str] | None = None
    ) -> dict[str, object]:
        """The report as JSON-ready values (projections left out; crops are in the picture).

        Args:
            image_names: The name of each image, to say where each strongest activation is.
            paths: The file of each checkpoint.
        """
        layers = []
        for name in self.layers:
            stable = self.stability[name]
            field_ = self.fields.get(name)
            converged = stable.converged_at
            features = []
            for row, channel in enumerate(self.channels[name]):
                picks = [trace[name].picks[row] for trace in self.traces]
                features.append(
                    {
                        "channel": channel,
                        "similarity": _floats(stable.channel_similarity[row]),
                        "strongest": [
                            {
                                "image": pick.image,
                                "image_name": image_names[pick.image] if image_names else None,
                                "position": list(pick.position or ()),
                                "value": float(pick.value),
                            }
                            for pick in picks
                        ],
                    }
                )
            layers.append(
                {
                    "layer": self.aliases.get(name, name),
                    "tensor": name,
                    "channels": list(self.channels[name]),
                    "receptive_field": None
                    if field_ is None
                    else {
                        "size": None if field_.size is None else list(field_.size),
                        "stride": list(field_.stride),
                        "offset": list(field_.offset),
                    },
                    "similarity": _floats(stable.similarity),
                    "same_argmax": None
                    if stable.same_argmax is None
                    else _floats(stable.same_argmax),
                    "converged_at": None
                    if converged is None
                    else {
                        "index": converged,
                        "label": self.labels[converged],
                        "epoch": self.epochs[converged],
                    },
                    "features": features,
                }
            )
        return {
            "schema": "onnxdeconv.evolution/1",
            "similarity": "cosine similarity of receptive-field crops, consecutive checkpoints",
            "threshold": float(self.threshold),
            "rule": self.rule,
            "checkpoints": [
                {"label": label, "epoch": epoch, "path": paths[index] if paths else None}
                for index, (label, epoch) in enumerate(zip(self.labels, self.epochs, strict=True))
            ],
            "steps": [f"{a} -> {b}" for a, b in zip(self.labels, self.labels[1:], strict=False)],
            "images": len(image_names) if image_names is not None else None,
            "image_names": list(image_names) if image_names is not None else None,
            "layers": layers,
        }


def _short(label: str) -> str:
    return label.removeprefix("epoch ")


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values).ravel()]


# --- checkpoints --------------------------------------------------------------------------


def checkpoint_epoch(prepared: PreparedModel) -> float | None:
    """The checkpoint's ``onnxdeconv.epoch`` metadata as a number, if it has a numeric one."""
    raw = prepared.loaded.metadata.get(EPOCH_KEY)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def checkpoint_label(prepared: PreparedModel, fallback: str = "") -> str:
    """``epoch N`` from the metadata, else the file name (or ``fallback``)."""
    raw = prepared.loaded.metadata.get(EPOCH_KEY)
    if raw:
        return f"epoch {raw}"
    path = prepared.loaded.path
    return path.name if path is not None else fallback


def check_same_architecture(
    checkpoints: Sequence[PreparedModel], layers: Sequence[str], names: Sequence[str]
) -> None:
    """Check that every checkpoint shares the first one's input and the layers' shapes.

    Args:
        checkpoints: The prepared checkpoints, first one the reference.
        layers: Tensor names (resolved on the first checkpoint).
        names: A name for each checkpoint, for the error message.

    Raises:
        OnnxDeconvError: A checkpoint differs, in one line naming it and what differs.
    """
    first = checkpoints[0]
    reference = names[0]
    for prepared, name in zip(checkpoints[1:], names[1:], strict=True):
        hint = "give checkpoints of one architecture, in training order"
        mine, theirs = prepared.loaded, first.loaded
        if (mine.input_name, prepared.input_shape, mine.input_dtype) != (
            theirs.input_name,
            first.input_shape,
            theirs.input_dtype,
        ):
            raise OnnxDeconvError(
                f"checkpoint '{name}' takes input '{mine.input_name}' "
                f"{_shape(prepared.input_shape)} {mine.input_dtype}, but '{reference}' takes "
                f"'{theirs.input_name}' {_shape(first.input_shape)} {theirs.input_dtype}: {hint}"
            )
        for layer in layers:
            if layer not in prepared.candidates:
                raise OnnxDeconvError(
                    f"checkpoint '{name}' has no layer '{layer}', which '{reference}' has: {hint}"
                )
            have, want = prepared.info[layer].per_sample, first.info[layer].per_sample
            if have != want:
                raise OnnxDeconvError(
                    f"layer '{layer}' is {_shape(have)} in checkpoint '{name}' but "
                    f"{_shape(want)} in '{reference}': {hint}"
                )


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


# --- one checkpoint -----------------------------------------------------------------------


def strongest_over_images(
    activations: np.ndarray, channels: Sequence[int] | None = None
) -> list[Selection]:
    """For each channel, its strongest activation over every image and position.

    Args:
        activations: ``[N, C, *spatial]`` activations of one layer over an image set.
        channels: The channels to look at (all, in order, when None).

    Returns:
        One :class:`~onnxdeconv.projector.Selection` per channel; a tie goes to the first image,
        then the first position in row-major order.
    """
    values = np.asarray(activations)
    count = values.shape[1]
    wanted = list(range(count)) if channels is None else [int(c) for c in channels]
    for channel in wanted:
        if not 0 <= channel < count:
            raise SelectionError(
                f"channel {channel} is out of range: the layer has {count} channels "
                f"(0..{count - 1}): choose channels the layer has"
            )
    spatial = values.shape[2:]
    picks = []
    for channel in wanted:
        # [N, C, ...] -> [N * prod(spatial)] in image-major order, so argmax's first hit is the
        # earliest image.
        flat = values[:, channel].reshape(-1).astype(np.float32)
        best = int(np.argmax(flat))
        image, *where = np.unravel_index(best, (values.shape[0], *spatial))
        position = tuple(int(p) for p in where)
        picks.append(Selection(int(image), channel, position, float(flat[best])))
    return picks


def strongest_channels(picks: Sequence[Selection], count: int) -> list[int]:
    """The ``count`` channels with the highest strongest activation, in channel order."""
    order = sorted(picks, key=lambda pick: (-pick.value, pick.channel))[:count]
    return sorted(pick.channel for pick in order)


def crop_to_field(
    projection: np.ndarray,
    field: ReceptiveField,
    position: tuple[int, ...] | None,
    layout: Layout = "NCHW",
) -> tuple[np.ndarray, tuple[tuple[int, int], ...] | None]:
    """Cut one projection to the receptive field of the unit at ``position``.

    The crop always has the field's size: where the field reaches past the image border, the crop
    holds zeros, so that the unit's own pixel grid lines up across checkpoints and positions.

    Args:
        projection: One projection, in the model's per-sample input layout.
        field: The layer's receptive field.
        position: The unit's spatial position in the layer (None or a global field: no crop).
        layout: ``NCHW`` (channels first) or ``NHWC``.

    Returns:
        The crop and the ``[begin, end)`` box per spatial dim (None when nothing was cut).
    """
    values = np.asarray(projection, np.float32)
    box = field.box(position) if position is not None and field.size is not None else None
    if box is None or not box:
        return values, None
    first = 1 if layout == "NCHW" else 0
    spatial = values.shape[first : first + len(box)]
    shape = list(values.shape)
    source: list[slice] = [slice(None)] * values.ndim
    target: list[slice] = [slice(None)] * values.ndim
    for axis, ((begin, end), size) in enumerate(zip(box, spatial, strict=True)):
        shape[first + axis] = end - begin
        low, high = max(begin, 0), min(end, size)
        source[first + axis] = slice(low, max(low, high))
        target[first + axis] = slice(low - begin, low - begin + max(0, high - low))
    crop = np.zeros(shape, np.float32)
    crop[tuple(target)] = values[tuple(source)]
    return crop, box


class LayerForwards:
    """Projectors for several layers of one model that share one forward pass.

    :class:`~onnxdeconv.projector.Projector` runs its own forward pass per layer; this runs the
    model once, through one :class:`~onnxdeconv.runtime.ForwardRunner` that returns every layer
    and everything their deconv graphs need.

    Example:
        >>> run = LayerForwards(prepared, ["relu1", "relu2"])
        >>> passes = run.forward(images)                       # one forward run
        >>> run.projectors["relu2"].project(passes["relu2"], picks)
    """

    def __init__(
        self,
        prepared: PreparedModel,
        layers: Sequence[str],
        rule: Rule = "deconvnet",
        device: Device = "auto",
    ) -> None:
        self.prepared = prepared
        self.layers = [prepared.resolve(layer) for layer in layers]
        self.projectors = {layer: Projector(prepared, layer, rule, device) for layer in self.layers}
        plans = [projector.plan for projector in self.projectors.values()]
        needed = [name for plan in plans for name in plan.forward_inputs]
        self._names = list(dict.fromkeys([*self.layers, *needed]))
        self.runner = ForwardRunner(
            prepared,
            expose=self._names,
            switches_of=list(dict.fromkeys(name for plan in plans for name in plan.switches)),
            keep_outputs=False,
            device=device,
        )
        self.provider = self.runner.provider

    def forward(self, inputs: np.ndarray) -> dict[str, ForwardPass]:
        """Run the model once on ``[N, *input_shape]``; one ForwardPass per layer."""
        values = self.runner.run_bound(inputs, self._names, to_host=self.layers)
        passes = {}
        for layer, projector in self.projectors.items():
            activations = values[layer]
            host = activations if isinstance(activations, np.ndarray) else activations.numpy()
            passes[layer] = ForwardPass(
                inputs,
                projector.channels_first(np.asarray(host)),
                {name: values[name] for name in projector.plan.forward_inputs},
            )
        return passes


def trace_checkpoint(
    prepared: PreparedModel,
    images: np.ndarray,
    channels: Mapping[str, Sequence[int] | None],
    count: int = CHANNELS_PER_LAYER,
    rule: Rule = "deconvnet",
    device: Device = "auto",
    forwards: LayerForwards | None = None,
) -> dict[str, LayerTrace]:
    """Project each chosen map's strongest activation over ``images`` at one checkpoint.

    One forward pass over the whole batch serves every layer; each layer's projections run as one
    batched deconv.

    Args:
        prepared: The checkpoint.
        images: Preprocessed inputs ``[N, *input_shape]`` in the model's input dtype.
        channels: Tensor name -> the maps to follow; None picks the ``count`` maps with the
            highest strongest activation here.
        count: Maps per layer when a layer's channels are None.
        rule: The projection rule (``deconvnet`` in the paper).
        device: Where ONNX Runtime runs.
        forwards: The :class:`LayerForwards` of ``prepared`` for these layers (default: new ones
            of ``rule`` on ``device``).

    Returns:
        Tensor name -> :class:`LayerTrace`, in the order of ``channels``.
    """
    if count < 1:
        raise SelectionError(f"the number of channels per layer must be at least 1, got {count}")
    runner = forwards or LayerForwards(prepared, list(channels), rule, device)
    passes = runner.forward(images)
    layout, _ = _layout(prepared)
    traces = {}
    for name, wanted in zip(runner.layers, channels.values(), strict=True):
        forward = passes[name]
        if wanted is None:
            chosen = strongest_channels(strongest_over_images(forward.activations), count)
        else:
            chosen = [int(c) for c in wanted]
        picks = strongest_over_images(forward.activations, chosen)
        projections = runner.projectors[name].project(forward, picks)
        field_ = prepared.receptive_fields[name]
        cut = [
            crop_to_field(projection, field_, pick.position, layout)
            for projection, pick in zip(projections, picks, strict=True)
        ]
        traces[name] = LayerTrace(
            layer=name,
            channels=chosen,
            picks=picks,
            projections=projections,
            crops=np.stack([crop for crop, _ in cut]),
            boxes=[box for _, box in cut],
        )
    return traces


def _layout(prepared: PreparedModel) -> tuple[Layout, int]:
    try:
        return image_layout(prepared.input_shape)
    except InputError:
        return "NCHW", int(prepared.input_shape[0])


# --- stability ----------------------------------------------------------------------------


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine similarity of two arrays of one shape, flattened.

    Two all-zero arrays (a map that never fires at either checkpoint) count as identical (1);
    one all-zero array against a non-zero one as unrelated (0).
    """
    a = np.asarray(first, np.float64).ravel()
    b = np.asarray(second, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare arrays of {a.size} and {b.size} values")
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def converged_at(
    similarities: Sequence[float] | np.ndarray, threshold: float = THRESHOLD
) -> int | None:
    """The first checkpoint after which the similarity of every step stays at or above threshold.

    ``similarities[t]`` compares checkpoints ``t`` and ``t+1``. E.g. ``[0.2, 0.5, 0.95, 0.97]``
    (five checkpoints) converges at checkpoint 2 (the third): from there on nothing changes.

    Returns:
        The checkpoint index, 0 when every step is stable, None when the last step is not (or
        there is no step).
    """
    values = [float(s) for s in similarities]
    stable = 0
    for value in reversed(values):
        if not value >= threshold:
            break
        stable += 1
    return None if stable == 0 else len(values) - stable


def stability(
    crops: Sequence[np.ndarray],
    threshold: float = THRESHOLD,
    picks: Sequence[Sequence[Selection]] | None = None,
) -> LayerStability:
    """Score how one layer's chosen maps change over a series of checkpoints.

    Args:
        crops: Per checkpoint, ``[K, ...]`` the cropped projections of the same K maps.
        threshold: The similarity a step must reach to count as stable.
        picks: Per checkpoint, the K selections the crops came from (for ``same_argmax``).

    Returns:
        The per-map and mean cosine similarities of consecutive checkpoints and where the layer
        converges.
    """
    if not crops:
        raise ValueError("stability needs the crops of at least one checkpoint")
    rows = len(crops[0])
    if any(len(c) != rows for c in crops):
        raise ValueError("every checkpoint must give the same number of crops")
    steps = len(crops) - 1
    per_map = np.ones((rows, steps), np.float64)
    for step in range(steps):
        for row in range(rows):
            per_map[row, step] = cosine_similarity(crops[step][row], crops[step + 1][row])
    mean = per_map.mean(axis=0) if rows else np.ones(steps)
    same = None
    if picks is not None:
        same = np.array(
            [
                np.mean(
                    [
                        (a.image, a.position) == (b.image, b.position)
                        for a, b in zip(picks[step], picks[step + 1], strict=True)
                    ]
                )
                if rows
                else 1.0
                for step in range(steps)
            ],
            np.float64,
        )
    return LayerStability(per_map, mean, same, converged_at(mean, threshold), threshold)


# --- a whole series -----------------------------------------------------------------------


def training_order(checkpoints: Sequence[PreparedModel]) -> list[int]:
    """The checkpoints' indices ordered by their ``onnxdeconv.epoch`` metadata.

    The order given stays where a checkpoint has no numeric epoch; equal epochs keep their order.
    """
    epochs = [checkpoint_epoch(p) for p in checkpoints]
    known = [epoch for epoch in epochs if epoch is not None]
    if len(known) < len(epochs):
        return list(range(len(checkpoints)))
    return sorted(range(len(checkpoints)), key=lambda index: known[index])


def load_checkpoints(
    paths: Sequence[str | Path], size: tuple[int, int] | None = None
) -> tuple[list[PreparedModel], list[str]]:
    """Load and prepare checkpoint files, in training order (see :func:`training_order`).

    Args:
        paths: The ONNX files of one architecture, in training order unless every one has an
            ``onnxdeconv.epoch`` metadata entry.
        size: The input size ``(H, W)`` to prepare them at (default: the model's own).

    Returns:
        The prepared checkpoints and their paths (as text), both in training order.
    """
    loaded = [load_model(path) for path in paths]
    given = [prepare(model, input_shape_for(model, size)) for model in loaded]
    order = training_order(given)
    return [given[i] for i in order], [str(paths[i]) for i in order]


def checked_layers(
    checkpoints: Sequence[PreparedModel],
    layers: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """The layers to trace, checked on every checkpoint before anything runs.

    Args:
        checkpoints: Prepared checkpoints of one architecture, in training order.
        layers: Tensor names or aliases, blank ones dropped (default: :func:`evolution_layers` of
            the first one).
        channels: The maps to follow in every layer, if chosen.
        names: A name for each checkpoint, for messages (default: their labels).

    Returns:
        The layers' tensor names.

    Raises:
        OnnxDeconvError: Fewer than two checkpoints, or checkpoints of different architectures.
        SelectionError: No or an unknown layer, or a channel some layer lacks.
    """
    if len(checkpoints) < 2:
        raise OnnxDeconvError(
            f"feature evolution needs at least two checkpoints, got {len(checkpoints)}"
        )
    first = checkpoints[0]
    if names is None:
        names = [checkpoint_label(p, f"checkpoint {i + 1}") for i, p in enumerate(checkpoints)]
    if layers is None:
        chosen = evolution_layers(first)
    else:
        chosen = [first.resolve(layer.strip()) for layer in layers if layer.strip()]
    if not chosen:
        raise SelectionError("no layers to trace: name at least one")
    check_same_architecture(checkpoints, chosen, names)
    highest = max(channels, default=-1) if channels is not None else -1
    for layer in chosen:
        available = first.info[layer].per_sample[0]
        if highest >= available:
            alias = first.alias_of.get(layer, layer)
            raise SelectionError(
                f"channel {highest} is out of range: layer '{alias}' has {available} channels "
                f"(0..{available - 1}): choose channels every layer has"
            )
    return chosen


class Mapper(Protocol):
    """Runs ``function`` on each of ``items`` (anywhere: here, or on a cluster's workers).

    Returns the results in the order of ``items``. ``function`` is a picklable partial of a
    module-level function. An engine's ``map`` (:class:`onnxdeconv.engines.ray.RayEngine`) is
    one.
    """

    def __call__(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, wherever they run."""


def trace_evolution(
    checkpoints: Sequence[PreparedModel],
    images: np.ndarray,
    layers: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    count: int = CHANNELS_PER_LAYER,
    threshold: float = THRESHOLD,
    *,
    names: Sequence[str] | None = None,
    rule: Rule = "deconvnet",
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
    mapper: Mapper | None = None,
) -> EvolutionReport:
    """Trace chosen feature maps through a training run, as in Zeiler & Fergus' Fig. 4.

    Args:
        checkpoints: The prepared models of the training run's checkpoints, of one architecture,
            in training order (see :func:`training_order`).
        images: Preprocessed inputs ``[N, *input_shape]`` in the model's input dtype.
        layers: Tensor names or aliases (default: :func:`evolution_layers` of the first checkpoint).
        channels: The maps to follow in every layer; default: per layer, the ``count`` maps with
            the highest strongest activation at the last checkpoint (the trained model).
        count: Maps per layer when ``channels`` is None.
        threshold: Similarity a layer must keep between consecutive checkpoints.
        names: A name for each checkpoint, for messages (default: their labels).
        rule: The projection rule (``deconvnet`` in the paper).
        device: Where ONNX Runtime runs.
        progress: Called with 1 after each checkpoint (the last one goes first; with a
            ``mapper``, with the number of the others once they are all done).
        mapper: Where the checkpoints other than the last are traced (default: here, one after
            the other); they are independent once the last one chose the maps.

    Raises:
        OnnxDeconvError: See :func:`checked_layers`.
    """
    chosen = checked_layers(checkpoints, layers, channels, names)
    traces: list[dict[str, LayerTrace]] = [{} for _ in checkpoints]
    # The last checkpoint goes first: without chosen channels, the trained model picks the maps.
    wanted: dict[str, Sequence[int] | None] = dict.fromkeys(chosen, channels)
    last = len(checkpoints) - 1
    forwards = LayerForwards(checkpoints[last], chosen, rule, device)
    provider = forwards.provider
    traces[last] = trace_checkpoint(checkpoints[last], images, wanted, count, forwards=forwards)
    if progress is not None:
        progress(1)
    # The others follow the maps the last one chose, each on its own.
    followed = {name: trace.channels for name, trace in traces[last].items()}
    if mapper is None:
        for index in range(last):
            forwards = LayerForwards(checkpoints[index], chosen, rule, device)
            traces[index] = trace_checkpoint(
                checkpoints[index], images, followed, count, forwards=forwards
            )
            if progress is not None:
                progress(1)
    elif last:
        trace = partial(
            trace_checkpoint,
            images=images,
            channels=followed,
            count=count,
            rule=rule,
            device=device,
        )
        traces[:last] = mapper(trace, checkpoints[:last])
        if progress is not None:
            progress(last)
    report = compare_traces(checkpoints, traces, threshold)
    report.provider = provider
    report.rule = rule
    return report


def compare_traces(
    checkpoints: Sequence[PreparedModel],
    traces: Sequence[dict[str, LayerTrace]],
    threshold: float = THRESHOLD,
) -> EvolutionReport:
    """Combine per-checkpoint traces (same layers and maps) into an :class:`EvolutionReport`."""
    first = checkpoints[0]
    layers = list(traces[0])
    inverse = first.alias_of
    labels = [checkpoint_label(p, f"checkpoint {i + 1}") for i, p in enumerate(checkpoints)]
    if len(set(labels)) < len(labels):
        # Same-named files from different folders still need columns one can tell apart.
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    return EvolutionReport(
        labels=labels,
        epochs=[checkpoint_epoch(p) for p in checkpoints],
        layers=layers,
        aliases={name: inverse.get(name, name) for name in layers},
        channels={name: list(traces[0][name].channels) for name in layers},
        traces=list(traces),
        stability={
            name: stability(
                [trace[name].crops for trace in traces],
                threshold,
                [trace[name].picks for trace in traces],
            )
            for name in layers
        },
        fields={name: first.receptive_fields[name] for name in layers},
        threshold=threshold,
    )
