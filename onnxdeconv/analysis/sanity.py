"""The model-parameter randomisation test of Adebayo et al. (2018), for projections.

"Sanity Checks for Saliency Maps" re-initialises a trained model's weights layer by layer, from
the top down (a cascade), and measures how much an explanation changes. An explanation that
barely changes when the weights it claims to explain are random shows the architecture and the
input, not what the model learned. Here the explanation is a projection from one layer; only the
weighted layers below that layer (and the layer itself) can change it, so the cascade runs over
those, from the highest down.

Everything here is arrays in, arrays out; ``onnxdeconv sanity`` prints and draws.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from onnxdeconv.analysis.layers import WEIGHTED_OPS, sanity_layer
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.graph.passes import constant_tensors, tensor_values
from onnxdeconv.inputs import Layout, image_layout
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.runtime import Device

logger = logging.getLogger(__name__)

Target = Literal["same", "own"]

CAVEAT = (
    "Projections that stay similar when the weights are randomised reflect the architecture and "
    "the input (edges, for instance), not what the model learned. Adebayo et al. (2018, "
    '"Sanity Checks for Saliency Maps") found guided backpropagation largely insensitive to the '
    "upper layers' weights. This is the test to run before reading meaning into a projection."
)


# --- metrics ------------------------------------------------------------------------------


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened ``values``; tied values share the average of their ranks."""
    flat = np.asarray(values, np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    # Each run of equal values gets the mean of the ranks it spans: (first + last) / 2.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], flat.size]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(flat.size, np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally sized arrays (ties averaged).

    Returns NaN when either array is constant: its ranks carry no order to correlate.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.size != b.size:
        raise ValueError(f"spearman needs arrays of one size, got {a.size} and {b.size}")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator > 0 else math.nan


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """A 1-D Gaussian of ``size`` taps, centred, summing to 1."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    normalised: np.ndarray = weights / weights.sum()
    return normalised


def _local_mean(values: np.ndarray, window: np.ndarray) -> np.ndarray:
    # The Gaussian is separable: filter each axis in turn, keeping only full windows ("valid").
    size = len(window)
    out = values
    for axis in range(values.ndim):
        length = out.shape[axis] - size + 1
        taps = [np.take(out, np.arange(i, i + length), axis=axis) for i in range(size)]
        out = sum((w * t for w, t in zip(window, taps, strict=True)), np.zeros_like(taps[0]))
    return out


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images of one shape.

    Local statistics use a Gaussian window (11 taps, sigma 1.5) over every full window position,
    as the reference implementation does; the constants are ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``
    with ``L = data_range``. Along an axis shorter than the window, the window shrinks to it.
    """
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs images of one shape, got {x.shape} and {y.shape}")
    taps = gaussian_window(min(window, *x.shape), sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = _local_mean(x, taps), _local_mean(y, taps)
    var_x = _local_mean(x * x, taps) - mu_x**2
    var_y = _local_mean(y * y, taps) - mu_y**2
    cov = _local_mean(x * y, taps) - mu_x * mu_y
    similarity = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(similarity.mean())


def grey(projection: np.ndarray, layout: Layout | None) -> np.ndarray:
    """The signed projection averaged over its colour channels (none for ``layout=None``)."""
    values = np.asarray(projection, np.float64)
    axis = {"NCHW": 0, "NHWC": -1}.get(layout or "")
    averaged: np.ndarray = values if axis is None else values.mean(axis=axis)
    return averaged


def magnitude(projection: np.ndarray, layout: Layout | None) -> np.ndarray:
    """Per-pixel magnitude: the absolute values summed over the colour channels."""
    values = np.abs(np.asarray(projection, np.float64))
    axis = {"NCHW": 0, "NHWC": -1}.get(layout or "")
    summed: np.ndarray = values if axis is None else values.sum(axis=axis)
    return summed


def unit_range(values: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Map signed values to [0, 1] as a picture shows them: zero at 0.5, clipped at 0 and 1.

    The ``percentile`` of the magnitudes maps to 0 and 1, so that a few outlying pixels, common
    in projections, do not flatten the rest to mid-grey (which would make any two maps similar).
    """
    magnitudes = np.abs(values)
    peak = float(np.percentile(magnitudes, percentile)) if values.size else 0.0
    if peak == 0:
        peak = float(magnitudes.max()) if values.size else 0.0
    if peak == 0 or not math.isfinite(peak):
        return np.full(values.shape, 0.5)
    scaled: np.ndarray = np.clip(values / (2 * peak) + 0.5, 0.0, 1.0)
    return scaled


Region = tuple[tuple[int, int], ...]


def crop(projection: np.ndarray, layout: Layout | None, region: Region | None) -> np.ndarray:
    """The part of one projection inside ``region``: a ``[begin, end)`` range per spatial dim."""
    if region is None:
        return projection
    window: tuple[slice, ...] = tuple(slice(begin, end) for begin, end in region)
    if layout == "NCHW":
        window = (slice(None), *window)
    elif layout == "NHWC":
        window = (*window, slice(None))
    cropped: np.ndarray = projection[window]
    return cropped


def compare(
    reference: np.ndarray,
    other: np.ndarray,
    layout: Layout | None,
    region: Region | None = None,
) -> tuple[float, float]:
    """The two similarity scores of the test, between two projections of one input.

    Args:
        reference: The original model's projection, in the model's per-sample input layout.
        other: The projection to compare with it.
        layout: Where the colour axis is (None: no colour axis).
        region: Compare only inside this ``[begin, end)`` range per spatial dim.

    Returns:
        Spearman's rank correlation of the per-pixel magnitudes (channels summed), and the SSIM of
        the grey projections mapped to [0, 1] (:func:`unit_range`). Both are 1 for projections
        that differ only by a positive factor, and do not change under one. Both are NaN when
        either projection is zero everywhere (nothing to compare) or not finite.
    """
    reference, other = crop(reference, layout, region), crop(other, layout, region)
    if not (np.isfinite(reference).all() and np.isfinite(other).all()):
        return math.nan, math.nan
    if not (reference.any() and other.any()):
        return math.nan, math.nan
    rho = spearman(magnitude(reference, layout), magnitude(other, layout))
    similarity = ssim(unit_range(grey(reference, layout)), unit_range(grey(other, layout)))
    return rho, similarity


# --- the cascade --------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedLayer:
    """A node whose initializers the cascade replaces."""

    node: str
    op: str
    #: The node's first output, which names the layer.
    output: str
    #: The float initializers it reads (weights, then bias), in input order.
    weights: tuple[str, ...]


def weighted_layers(model: onnx.ModelProto, target: str | None = None) -> list[WeightedLayer]:
    """The Conv, Gemm and MatMul nodes that read float initializers, in graph order.

    Args:
        model: The model.
        target: Keep only the nodes ``target`` is computed from (including its own producer):
            the only ones whose weights can change a projection from ``target``.
    """
    graph = model.graph
    floats = {
        t.name
        for t in graph.initializer
        if t.data_type
        in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    }
    needed: set[int] | None = None
    if target is not None:
        producers = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
        if target not in producers:
            raise SelectionError(f"no node of the model computes tensor '{target}'")
        needed, stack = set(), [target]
        while stack:
            index = producers.get(stack.pop())
            if index is None or index in needed:
                continue
            needed.add(index)
            stack.extend(graph.node[index].input)
    layers = []
    for index, node in enumerate(graph.node):
        if node.op_type not in WEIGHTED_OPS or (needed is not None and index not in needed):
            continue
        weights = tuple(i for i in node.input if i in floats)
        if weights:
            name = node.name or f"{node.op_type}_{index}"
            layers.append(WeightedLayer(name, node.op_type, node.output[0], weights))
    return layers


def _random_like(values: np.ndarray, seed: int, name: str) -> np.ndarray:
    # Each tensor's draw depends on the seed and its own name only, so step k+1 of the cascade
    # keeps the random weights of step k and adds one more layer.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    std = float(np.std(values.astype(np.float64))) if values.size else 0.0
    return rng.normal(0.0, std, values.shape).astype(values.dtype)


def randomise(
    model: onnx.ModelProto, layers: Sequence[WeightedLayer], seed: int = 0
) -> onnx.ModelProto:
    """A copy of ``model`` with the initializers of ``layers`` replaced by random values.

    Each replaced tensor keeps its shape and dtype and is drawn from a normal distribution with
    mean 0 and the tensor's own standard deviation (a bias of zeros stays zero). The draw depends
    only on ``seed`` and the tensor's name. ``model`` is not modified. A tensor that another
    node reads too (tied weights) changes for that node as well.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {name for layer in layers for name in layer.weights}
    for index, tensor in enumerate(out.graph.initializer):
        if tensor.name in names:
            values = tensor_values(tensor)
            out.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(_random_like(values, seed, tensor.name), tensor.name)
            )
            names.discard(tensor.name)
    if names:
        raise ValueError(f"initializers {sorted(names)} are not in the model")
    return out


def cascade_step(
    model: onnx.ModelProto, layers: Sequence[WeightedLayer], step: int, seed: int = 0
) -> onnx.ModelProto:
    """Step ``step`` of the cascade: the top ``step`` of ``layers`` (graph order) randomised."""
    if not 0 <= step <= len(layers):
        raise ValueError(f"step {step} is outside 0..{len(layers)}")
    return randomise(model, layers[len(layers) - step :], seed)


def cascade_steps(count: int, steps: int | None = None) -> list[int]:
    """How many layers each step randomises: 0, then ``steps`` values spread up to ``count``.

    The last step randomises every layer; with two or more steps the first randomises the top
    layer alone. Without ``steps`` (or with ``steps >= count``), every layer is a step.
    """
    if steps is None or steps >= count:
        return list(range(count + 1))
    if steps <= 1:
        return [0, count]
    spread = np.unique(np.round(np.linspace(1, count, steps)).astype(int))
    return [0, *(int(s) for s in spread)]


# --- the test -----------------------------------------------------------------------------

#: The columns of :meth:`SanityReport.rows`.
CSV_COLUMNS = (
    "step",
    "randomised_layers",
    "down_to",
    "rule",
    "channel",
    "position",
    "activation",
    "spearman",
    "ssim",
)


def _number(value: float) -> float | None:
    # JSON has no NaN: a score of a zero projection is null.
    return value if math.isfinite(value) else None


@dataclass
class SanityReport:
    """What :func:`sanity_check` measured, one entry per cascade step."""

    #: The tensor the projections start from.
    layer: str
    #: The weighted layers the cascade runs over, in graph order (randomised from the last).
    layers: list[WeightedLayer]
    #: A short name per layer in ``layers`` (its alias, else the node name).
    labels: list[str]
    #: How many of the top layers each step has randomised (0 for the original).
    steps: list[int]
    rules: tuple[Rule, ...]
    target: Target
    #: The unit the original model projects; with ``target="same"`` every step projects it.
    selection: Selection
    #: The projected unit per step: ``(channel, position)``.
    units: list[tuple[int, tuple[int, ...]]]
    #: The projected unit's activation per step.
    activations: np.ndarray
    #: rule -> projections ``[steps, *input_shape]`` of a unit signal at the unit.
    projections: dict[str, np.ndarray]
    #: rule -> Spearman rank correlation of magnitudes with step 0, per step.
    spearman: dict[str, np.ndarray]
    #: rule -> SSIM with step 0, per step.
    ssim: dict[str, np.ndarray]
    #: The input region compared: the receptive fields of the projected units (None: all).
    region: Region | None
    #: The ONNX Runtime provider the projections ran on.
    provider: str = ""

    def step_label(self, index: int) -> str:
        """``original``, or the lowest layer randomised at step ``index`` of ``steps``."""
        count = self.steps[index]
        return "original" if count == 0 else self.labels[len(self.labels) - count]

    def rows(self) -> list[dict[str, object]]:
        """One row per step and rule, keyed by :data:`CSV_COLUMNS`, as the CSV holds them.

        Numbers are written with six significant digits (``nan``: a zero projection).
        """
        rows: list[dict[str, object]] = []
        for index, count in enumerate(self.steps):
            channel, position = self.units[index]
            for rule in self.rules:
                rows.append(
                    {
                        "step": index,
                        "randomised_layers": count,
                        "down_to": "" if count == 0 else self.step_label(index),
                        "rule": rule,
                        "channel": channel,
                        "position": " ".join(map(str, position)),
                        "activation": f"{self.activations[index]:.6g}",
                        "spearman": f"{self.spearman[rule][index]:.6g}",
                        "ssim": f"{self.ssim[rule][index]:.6g}",
                    }
                )
        return rows

    def to_json(self) -> dict[str, Any]:
        """The test as plain JSON values: the unit, the layers and the scores per step.

        Scores of a zero projection (NaN) are None; the projections themselves are left out.
        """
        return {
            "layer": self.layer,
            "target": self.target,
            "rules": list(self.rules),
            "layers": [
                {"node": w.node, "op": w.op, "output": w.output, "label": label}
                for w, label in zip(self.layers, self.labels, strict=True)
            ],
            "steps": [
                {
                    "randomised_layers": count,
                    "down_to": None if count == 0 else self.step_label(index),
                    "channel": self.units[index][0],
                    "position": list(self.units[index][1]),
                    "activation": _number(float(self.activations[index])),
                    "spearman": {r: _number(float(self.spearman[r][index])) for r in self.rules},
                    "ssim": {r: _number(float(self.ssim[r][index])) for r in self.rules},
                }
                for index, count in enumerate(self.steps)
            ],
            "region": None if self.region is None else [list(r) for r in self.region],
            "provider": self.provider,
        }


def unit_region(
    prepared: PreparedModel, layer: str, positions: Sequence[tuple[int, ...]]
) -> Region | None:
    """The input region the units at ``positions`` of ``layer`` see, clipped to the input.

    The bounding box of their receptive fields; None when a unit sees the whole input.
    """
    field = prepared.receptive_fields[layer]
    layout = input_layout(prepared)
    shape = prepared.input_shape
    spatial = shape[1:] if layout == "NCHW" else shape[:-1] if layout == "NHWC" else shape
    boxes = [field.box(p) for p in positions]
    if not boxes or any(b is None or len(b) != len(spatial) for b in boxes):
        return None
    known = [b for b in boxes if b is not None]
    return tuple(
        (max(min(b[d][0] for b in known), 0), min(max(b[d][1] for b in known), spatial[d]))
        for d in range(len(spatial))
    )


def input_layout(prepared: PreparedModel) -> Layout | None:
    """The image layout of the model's input, or None when it has no colour axis."""
    try:
        return image_layout(prepared.input_shape)[0]
    except InputError:
        return None


def sanity_steps(
    prepared: PreparedModel, layer: str | None = None, steps: int | None = None
) -> list[int]:
    """How many weighted layers each step of :func:`sanity_check` randomises (0 first).

    Raises:
        SelectionError: ``layer`` is computed from no weights: randomising cannot change it.
    """
    return cascade_steps(len(_cascade_layers(prepared, layer)[1]), steps)


def _cascade_layers(prepared: PreparedModel, layer: str | None) -> tuple[str, list[WeightedLayer]]:
    name = prepared.resolve(layer) if layer else sanity_layer(prepared)
    layers = weighted_layers(prepared.loaded.model, name)
    if not layers:
        raise SelectionError(
            f"layer '{layer or name}' is computed from no {', '.join(WEIGHTED_OPS)} weights, so "
            "randomising weights cannot change it: pick a deeper layer"
        )
    return name, layers


def _with_weights(prepared: PreparedModel, model: onnx.ModelProto) -> PreparedModel:
    # Random weights leave every shape as it was, so the measured shapes carry over.
    loaded = dataclasses.replace(prepared.loaded, model=model)
    return PreparedModel(loaded, prepared.input_shape, prepared.info, constant_tensors(model.graph))


def _unit_signal(projector: Projector, channel: int, position: tuple[int, ...]) -> np.ndarray:
    signal = np.zeros((1, *projector.layer_shape), np.float32)
    index = (0, channel, *position)
    signal[index] = 1.0
    return signal


def _scores(
    stacked: dict[str, np.ndarray], layout: Layout | None, region: Region | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per rule, the Spearman and SSIM scores of every step's projection against step 0's."""
    spearmans: dict[str, np.ndarray] = {}
    ssims: dict[str, np.ndarray] = {}
    for rule, stack in stacked.items():
        scores = np.array([compare(stack[0], other, layout, region) for other in stack], np.float64)
        spearmans[rule], ssims[rule] = scores[:, 0], scores[:, 1]
        if not np.isfinite(stack).all():
            logger.warning("rule %s: some projections are not finite; their scores are NaN", rule)
    return spearmans, ssims


def sanity_check(
    prepared: PreparedModel,
    image: np.ndarray,
    *,
    layer: str | None = None,
    rules: Sequence[Rule] = RULES,
    steps: int | None = None,
    seed: int = 0,
    channel: int | None = None,
    position: tuple[int, ...] | None = None,
    target: Target = "same",
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
) -> SanityReport:
    """Run the cascading randomisation test on one input.

    Step 0 is the model as trained; step k has the top k weighted layers below ``layer``
    randomised (:func:`randomise`). At every step each rule projects a unit signal (1 at the unit,
    0 elsewhere) from ``layer``, and the projection is compared with step 0's (:func:`compare`).
    A unit signal instead of the activation keeps a projection where the random model no longer
    fires; the scores do not depend on a positive factor, so for a firing unit it is the
    projection ``onnxdeconv project`` makes. The scores are computed inside the projected units'
    receptive fields (:func:`unit_region`).

    Args:
        prepared: The model.
        image: One preprocessed input ``[1, *input_shape]`` in the model's input dtype.
        layer: Tensor name or alias; default: :func:`sanity_layer`.
        rules: The rules to run.
        steps: How many cascade steps after the original, spread over the layers; default: one
            per layer.
        seed: Seed of the random weights.
        channel: The unit's channel; default: the strongest of the original model.
        position: The unit's position; default: that channel's arg-max in the original model.
        target: ``same``: project the original's unit at every step (the test as published);
            ``own``: each step projects its own strongest unit (in ``channel`` if given).
        device: Where ONNX Runtime runs.
        progress: Called with 1 after each step.
    """
    if len(image) != 1:
        raise InputError(f"the sanity check takes one input, got a batch of {len(image)}")
    if not rules:
        raise SelectionError("give at least one rule")
    name, layers = _cascade_layers(prepared, layer)
    aliases = prepared.alias_of
    labels = [aliases.get(w.output, w.node) for w in layers]
    counts = cascade_steps(len(layers), steps)
    rules = tuple(rules)
    projections: dict[str, list[np.ndarray]] = {rule: [] for rule in rules}
    selection: Selection | None = None
    units: list[tuple[int, tuple[int, ...]]] = []
    activations: list[float] = []
    provider = ""
    for index, count in enumerate(counts):
        model = cascade_step(prepared.loaded.model, layers, count, seed)
        step_model = prepared if count == 0 else _with_weights(prepared, model)
        for rule in rules:
            projector = Projector(step_model, name, rule, device)
            provider = projector.provider
            forward = projector.forward(image)
            if selection is None:
                selection = projector.strongest(forward, channel=channel, position=position)[0]
            if rule == rules[0]:
                # Every rule of a step projects the unit the step's first rule picks.
                own = target == "own" and index > 0
                pick = projector.strongest(forward, channel=channel)[0] if own else selection
                assert pick.position is not None
                units.append((pick.channel, pick.position))
                unit_index = (0, pick.channel, *pick.position)
                activations.append(float(forward.activations[unit_index]))
            unit = units[-1]
            signal = _unit_signal(projector, *unit)
            projections[rule].append(projector.project_signal(forward, signal, [0])[0])
        if progress is not None:
            progress(1)
    assert selection is not None
    # Outside the units' receptive fields every projection is zero by construction; comparing
    # those pixels too would inflate both scores.
    region = unit_region(prepared, name, [position for _, position in units])
    stacked = {rule: np.stack(values) for rule, values in projections.items()}
    spearmans, ssims = _scores(stacked, input_layout(prepared), region)
    return SanityReport(
        layer=name,
        layers=layers,
        labels=labels,
        steps=counts,
        rules=rules,
        target=target,
        selection=selection,
        units=units,
        activations=np.asarray(activations, np.float64),
        projections=stacked,
        spearman=spearmans,
        ssim=ssims,
        region=region,
        provider=provider,
    )
