"""Occlusion sensitivity (Zeiler & Fergus, Fig. 7): slide a grey square over the image.

Zeiler & Fergus asked whether a classifier really finds the object or only uses the scene around
it. They covered parts of the image with a grey square and recorded, for every position of the
square, (b) the total activation of the feature map that is strongest on the unoccluded image,
(d) the probability of the correct class and (e) the most probable class; (c) shows that feature
map projected back to pixel space. When the square covers the object, the feature map and the
probability drop.

:func:`occlusion_maps` computes (b), (d) and (e) on any ONNX convnet, batching the occluded copies;
:func:`occlusion_projections` the projections of (c) for a few occluder positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxdeconv.analysis.layers import occlusion_layer
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import Preprocessing, image_layout, normalise
from onnxdeconv.labels import resolve_label
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.runtime import Device

logger = logging.getLogger(__name__)

#: The pixel value (0-255) of the grey occluder before preprocessing.
MID_GREY = 128
#: Outputs whose rows are non-negative and sum to 1 within this tolerance are probabilities
#: already (fp16 softmax outputs miss 1 by up to a few 1e-3).
PROBABILITY_TOLERANCE = 1e-2

Box = tuple[tuple[int, int], tuple[int, int]]


@dataclass
class OcclusionResult:
    """The maps over occluder positions, and what they were measured against.

    Map cell ``[i, j]`` belongs to the occluder whose top-left corner is ``(rows[i], columns[j])``.

    Attributes:
        layer: Tensor whose feature map (b) is measured.
        channel: The feature map (channel) of ``layer``: the strongest on the unoccluded image
            (highest maximum) unless chosen.
        label: The class whose probability (d) shows: the one predicted for the unoccluded image
            unless chosen.
        size: Side of the square occluder in input pixels.
        stride: Step between occluder positions in input pixels.
        rows: Top edge of each row of occluders.
        columns: Left edge of each column of occluders.
        feature_map: ``[Gy, Gx]`` total activation of ``channel`` (sum over its map) per position.
        probability: ``[Gy, Gx]`` probability of ``label`` per position.
        top_label: ``[Gy, Gx]`` the most probable class per position.
        top_probability: ``[Gy, Gx]`` the probability of that class.
        baseline_activation: Total activation of ``channel`` on the unoccluded image.
        baseline_probability: Probability of ``label`` on the unoccluded image.
        predicted: The most probable class on the unoccluded image.
        strongest: Position of the strongest unit of ``channel`` on the unoccluded image (``()``
            for a layer without spatial dims).
        strongest_value: Its activation.
        softmax_applied: Whether the class output was turned into probabilities here (it held
            scores, not a distribution).
        fill: The occluder's value after preprocessing: a scalar or per-channel values shaped to
            broadcast over the square (``[C, 1, 1]`` channels first).
        image_size: Height and width of the image.
        projections: The projections of panel (c), where they were asked for.
    """

    layer: str
    channel: int
    label: int
    size: int
    stride: int
    rows: list[int]
    columns: list[int]
    feature_map: np.ndarray
    probability: np.ndarray
    top_label: np.ndarray
    top_probability: np.ndarray
    baseline_activation: float
    baseline_probability: float
    predicted: int
    strongest: tuple[int, ...]
    strongest_value: float
    softmax_applied: bool
    fill: np.ndarray
    image_size: tuple[int, int]
    projections: OcclusionProjections | None = None

    @property
    def positions(self) -> list[tuple[int, int]]:
        """Top-left corner ``(y, x)`` of every occluder, row by row (the maps' flat order)."""
        return [(y, x) for y in self.rows for x in self.columns]

    def index_of(self, position: tuple[int, int]) -> tuple[int, int]:
        """The map cell ``(i, j)`` of the occluder at ``position``."""
        return self.rows.index(position[0]), self.columns.index(position[1])

    def to_json(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The parameters and maps as plain JSON values (maps as nested lists, row by row)."""

        def name(index: int) -> str | None:
            return labels[index] if labels is not None and 0 <= index < len(labels) else None

        used = sorted({int(v) for v in np.unique(self.top_label)} | {self.label, self.predicted})
        return {
            "layer": self.layer,
            "channel": self.channel,
            "label": self.label,
            "label_name": name(self.label),
            "predicted": self.predicted,
            "predicted_name": name(self.predicted),
            "size": self.size,
            "stride": self.stride,
            "image_size": list(self.image_size),
            "fill": [float(v) for v in np.ravel(self.fill)],
            "rows": self.rows,
            "columns": self.columns,
            "softmax_applied": self.softmax_applied,
            "baseline": {
                "activation": self.baseline_activation,
                "probability": self.baseline_probability,
                "strongest_position": list(self.strongest),
                "strongest_value": self.strongest_value,
            },
            "feature_map": self.feature_map.tolist(),
            "probability": self.probability.tolist(),
            "top_label": self.top_label.tolist(),
            "top_probability": self.top_probability.tolist(),
            "label_names": {str(i): name(i) for i in used} if labels is not None else None,
        }


@dataclass
class OcclusionProjections:
    """Projections of the measured feature map with and without the occluder (panel c).

    Row ``k`` of ``projections`` is the projection of the strongest unit of the channel on the
    image occluded at ``positions[k]`` (``None``: the unoccluded image, always row 0).
    """

    positions: list[tuple[int, int] | None]
    reasons: list[str]
    selections: list[Selection]
    projections: np.ndarray
    #: The input box of each projected unit's receptive field (None after global layers).
    boxes: list[Box | None] = field(default_factory=list)


def occluder_starts(length: int, size: int, stride: int) -> list[int]:
    """Where occluders of ``size`` start along an axis of ``length`` pixels, ``stride`` apart.

    The last occluder is moved flush with the far border when the stride would leave a strip
    uncovered, so every pixel is occluded at least once.

    Raises:
        InputError: The occluder does not fit, or ``size``/``stride`` is below 1.
    """
    if size < 1 or stride < 1:
        raise InputError(f"occluder size and stride must be at least 1, got {size} and {stride}")
    if size > length:
        raise InputError(
            f"the occluder ({size} px) is larger than the image side ({length} px): make it "
            f"{length} px or smaller"
        )
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def default_size(height: int, width: int) -> int:
    """A sixth of the shorter image side, rounded half up (at least 1 pixel)."""
    return max(1, int(min(height, width) / 6 + 0.5))


def default_stride(size: int) -> int:
    """Half the occluder size, rounded down (at least 1 pixel)."""
    return max(1, size // 2)


def occluder_grid(
    input_shape: tuple[int, ...], size: int | None = None, stride: int | None = None
) -> tuple[int, int, list[int], list[int]]:
    """The occluder side and stride (defaults filled in), and the occluders' top and left edges.

    Args:
        input_shape: The model's per-sample input shape.
        size: Occluder side in pixels; default :func:`default_size`.
        stride: Step in pixels; default :func:`default_stride`.

    Raises:
        InputError: The input is no image, or the occluder does not fit.
    """
    axes = spatial_axes(input_shape)
    height, width = (input_shape[a] for a in axes)
    size = default_size(height, width) if size is None else size
    stride = default_stride(size) if stride is None else stride
    return size, stride, occluder_starts(height, size, stride), occluder_starts(width, size, stride)


def spatial_axes(per_sample: tuple[int, ...]) -> tuple[int, int]:
    """The two image axes of a per-sample input shape (channels first unless clearly last)."""
    if len(per_sample) != 3:
        raise InputError(
            f"occlusion needs a 2-D image input with a channel axis; the model's per-sample "
            f"input shape is {list(per_sample)}"
        )
    try:
        layout, _ = image_layout(per_sample)
    except InputError:
        layout = "NCHW"
    return (1, 2) if layout == "NCHW" else (0, 1)


def mid_grey(
    preprocessing: Preprocessing, per_sample: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """The value of a mid-grey pixel (128) after ``preprocessing``, shaped to broadcast per sample.

    Returns:
        ``[C, 1, 1]`` for channels-first inputs, ``[1, 1, C]`` for channels-last ones.
    """
    layout, channels = image_layout(per_sample)
    grey = np.full((1, 1, 3), MID_GREY, np.uint8)
    value: np.ndarray = normalise(grey, preprocessing, layout, channels, dtype)[0]
    return value


def mean_fill(image: np.ndarray) -> np.ndarray:
    """Per-channel mean of one input ``[1, *per_sample]``: the occluder for arrays fed as is."""
    axes = spatial_axes(tuple(image.shape[1:]))
    mean: np.ndarray = image[0].astype(np.float64).mean(axis=axes, keepdims=True)
    return mean


def occluded_copies(
    image: np.ndarray,
    positions: Sequence[tuple[int, int]],
    size: int,
    fill: float | np.ndarray,
) -> np.ndarray:
    """Copies of ``image`` ``[1, *per_sample]``, each with a ``size`` square set to ``fill``.

    Args:
        image: One input in the model's layout.
        positions: Top-left corner ``(y, x)`` of the square in each copy.
        size: Side of the square.
        fill: A scalar, or per-channel values that broadcast over the square (as
            :func:`mid_grey` returns them).
    """
    axes = spatial_axes(tuple(image.shape[1:]))
    copies = np.repeat(image, len(positions), axis=0)
    value = np.asarray(fill).astype(image.dtype)
    for row, (y, x) in enumerate(positions):
        index: list[slice | int] = [row, slice(None), slice(None), slice(None)]
        index[axes[0] + 1] = slice(y, y + size)
        index[axes[1] + 1] = slice(x, x + size)
        copies[tuple(index)] = value
    return copies


def to_probabilities(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rows of class scores as probabilities; softmax unless they already are a distribution.

    Returns:
        ``[N, K]`` float64 probabilities, and whether softmax was applied.
    """
    values = np.asarray(scores, np.float64).reshape(len(scores), -1)
    if values.min() >= -1e-4 and np.allclose(values.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE):
        return values, False
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True), True


def _projector(prepared: PreparedModel | Projector, layer: str | None, device: Device) -> Projector:
    if isinstance(prepared, Projector):
        if layer is not None and prepared.prepared.resolve(layer) != prepared.layer:
            raise SelectionError(
                f"the projector is for layer '{prepared.layer}', not '{layer}': pass the model "
                "or a projector for that layer"
            )
        if not prepared.keeps_outputs:
            raise SelectionError(
                "occlusion reads the model's class output: build the projector with "
                "keep_outputs=True, or pass the prepared model"
            )
        return prepared
    target = prepared.resolve(layer) if layer else occlusion_layer(prepared)
    return Projector(prepared, layer=target, device=device, keep_outputs=True)


def class_count(prepared: PreparedModel) -> int:
    """The number of classes: the per-sample size of the model's last output."""
    info = prepared.info.get(prepared.loaded.model.graph.output[-1].name)
    if info is None:
        raise InputError("the model's last output has no known shape: cannot read class scores")
    return int(np.prod(info.per_sample))


def check_choice(
    projector: Projector,
    channel: int | None = None,
    label: int | str | None = None,
    labels: Sequence[str] | None = None,
) -> int | None:
    """Check a chosen channel of the projector's layer, and look the class ``label`` up.

    Runs nothing, so that a mistake costs nothing.

    Returns:
        The class index (None when ``label`` is None: the predicted class).

    Raises:
        SelectionError: The channel is out of range, or the class unknown or out of range.
    """
    channels = projector.layer_shape[0]
    if channel is not None and not 0 <= channel < channels:
        raise SelectionError(
            f"channel {channel} is out of range: layer '{projector.layer}' has {channels} "
            f"channels (0..{channels - 1})"
        )
    if label is None:
        return None
    return resolve_label(label, labels, class_count(projector.prepared))


def occlusion_maps(
    prepared: PreparedModel | Projector,
    image: np.ndarray,
    *,
    layer: str | None = None,
    channel: int | None = None,
    label: int | str | None = None,
    labels: Sequence[str] | None = None,
    size: int | None = None,
    stride: int | None = None,
    fill: float | np.ndarray | None = None,
    preprocessing: Preprocessing | None = None,
    projections: int = 0,
    batch_size: int = 32,
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
) -> OcclusionResult:
    """Slide a grey square over ``image`` and record the feature map and class maps.

    Args:
        prepared: The prepared model, or a :class:`~onnxdeconv.projector.Projector` for the layer
            built with ``keep_outputs=True`` (its forward session is reused).
        image: One preprocessed input ``[1, *input_shape]`` in the model's dtype.
        layer: Tensor name or alias for map (b); default: the deepest projectable layer with a
            spatial map.
        channel: The feature map to measure; default: the strongest on the unoccluded image.
        label: The class for map (d), as an index or a name in ``labels``; default: the one
            predicted for the unoccluded image.
        labels: Class names, to look ``label`` up in.
        size: Occluder side in pixels; default :func:`default_size`.
        stride: Step in pixels; default :func:`default_stride`.
        fill: The occluder's value (scalar or per channel, see :func:`mid_grey`); default:
            mid-grey through ``preprocessing``, else the per-channel mean of ``image``.
        preprocessing: How ``image`` was made from a picture, for the mid-grey occluder.
        projections: How many occluder positions to project for in panel (c)
            (:func:`occlusion_projections`); 0 leaves the panel out.
        batch_size: Occluded copies per forward run (a model with a fixed batch runs at its own).
        device: Where ONNX Runtime runs, when ``prepared`` is not a projector already.
        progress: Called with the number of occluded copies done in each batch.
    """
    projector = _projector(prepared, layer, device)
    prepared = projector.prepared
    target = check_choice(projector, channel, label, labels)
    if image.ndim != len(prepared.input_shape) + 1 or image.shape[0] != 1:
        raise InputError(
            f"give one input [1, {', '.join(map(str, prepared.input_shape))}], got "
            f"{list(image.shape)}"
        )
    size, stride, rows, columns = occluder_grid(prepared.input_shape, size, stride)
    height, width = (prepared.input_shape[axis] for axis in spatial_axes(prepared.input_shape))
    if fill is not None:
        fill_value = np.asarray(fill, np.float64)
    elif preprocessing is not None:
        fill_value = mid_grey(preprocessing, prepared.input_shape, prepared.loaded.input_dtype)
    else:
        fill_value = mean_fill(image)

    forward = projector.forward(image)
    pick = projector.strongest(forward, top=1, channel=channel)[0]
    output = prepared.loaded.model.graph.output[-1].name
    chunk = projector.runner.fixed_batch or max(1, batch_size)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Only the class output and the layer: the switches and rectifier inputs the deconv would
        # need are not computed for the many occluded copies.
        values = projector.runner.run(batch, [output, projector.layer])
        scores = values[output].reshape(len(batch), -1)
        maps = values[projector.layer][:, pick.channel].reshape(len(batch), -1)
        return scores, maps.astype(np.float64).sum(axis=1)

    base_scores, base_total = run(image)
    positions = [(y, x) for y in rows for x in columns]
    scores, totals = [], []
    for start in range(0, len(positions), chunk):
        batch = occluded_copies(image, positions[start : start + chunk], size, fill_value)
        batch_scores, batch_totals = run(batch)
        scores.append(batch_scores)
        totals.append(batch_totals)
        if progress is not None:
            progress(len(batch))
    probabilities, applied = to_probabilities(np.concatenate([base_scores, *scores]))
    base, occluded = probabilities[0], probabilities[1:]
    predicted = int(base.argmax())
    target = predicted if target is None else target
    grid = (len(rows), len(columns))
    top = occluded.argmax(axis=1)
    result = OcclusionResult(
        layer=projector.layer,
        channel=pick.channel,
        label=target,
        size=size,
        stride=stride,
        rows=rows,
        columns=columns,
        feature_map=np.concatenate(totals).reshape(grid),
        probability=occluded[:, target].reshape(grid),
        top_label=top.reshape(grid).astype(np.int64),
        top_probability=occluded[np.arange(len(top)), top].reshape(grid),
        baseline_activation=float(base_total[0]),
        baseline_probability=float(base[target]),
        predicted=predicted,
        strongest=pick.position or (),
        strongest_value=pick.value,
        softmax_applied=applied,
        fill=fill_value,
        image_size=(height, width),
    )
    if projections:
        result.projections = occlusion_projections(projector, image, result, count=projections)
    return result


def unit_box(field: ReceptiveField | None, position: tuple[int, ...] | None) -> Box | None:
    """The input box ``((top, bottom), (left, right))`` a unit of a 2-D map sees, if it has one."""
    if field is None or not position or len(position) != 2:
        return None
    box = field.box(position)
    if box is None:
        return None
    return (box[0], box[1])


def _centre(box: Box) -> tuple[float, float]:
    # The unclipped centre: a deep unit's field reaches past the border, and clipping it would
    # pull the centre towards the middle of the image, away from what the unit looks at.
    (top, bottom), (left, right) = box
    return (top + bottom) / 2, (left + right) / 2


def projection_positions(
    result: OcclusionResult, field: ReceptiveField | None, count: int = 3
) -> list[tuple[tuple[int, int], str]]:
    """Occluder positions worth projecting for, and why.

    The first covers the strongest unit's receptive field (its centre nearest to the field's
    centre), the next lowers the feature map most, the last lies farthest
    from the unit; duplicates give way to the next largest drops.
    """
    positions = result.positions
    centres = np.array([(y + result.size / 2, x + result.size / 2) for y, x in positions])
    drops = np.argsort(result.feature_map.ravel(), kind="stable")
    box = unit_box(field, result.strongest)
    wanted: list[tuple[int, str]] = []
    if box is not None:
        centre = np.array(_centre(box))
        distance = np.linalg.norm(centres - centre, axis=1)
        wanted.append((int(distance.argmin()), "covers the unit"))
    wanted.append((int(drops[0]), "largest drop"))
    if box is not None:
        wanted.append((int(distance.argmax()), "far from the unit"))
    else:
        wanted.append((int(drops[-1]), "smallest drop"))
    wanted.extend((int(i), "large drop") for i in drops[1:])
    chosen: list[tuple[tuple[int, int], str]] = []
    seen: set[int] = set()
    for index, reason in wanted:
        if index not in seen:
            seen.add(index)
            chosen.append((positions[index], reason))
        if len(chosen) == min(count, len(positions)):
            break
    return chosen


def occlusion_projections(
    prepared: PreparedModel | Projector,
    image: np.ndarray,
    result: OcclusionResult,
    *,
    fill: float | np.ndarray | None = None,
    positions: Sequence[tuple[int, int]] | None = None,
    count: int = 3,
    device: Device = "auto",
) -> OcclusionProjections:
    """Project the measured channel's strongest unit with the occluder at a few positions.

    Row 0 is the unoccluded image; the others use ``positions`` (default:
    :func:`projection_positions`). All run as one forward pass and one batched deconv.

    Args:
        prepared: The prepared model, or a projector for ``result.layer``.
        image: The input ``result`` was computed on.
        result: What :func:`occlusion_maps` returned.
        fill: The occluder value (default: the one ``result`` used).
        positions: Top-left corners of the occluders to project for.
        count: How many positions to choose when ``positions`` is None.
        device: Where ONNX Runtime runs, when ``prepared`` is not a projector already.
    """
    projector = _projector(prepared, result.layer, device)
    field = projector.prepared.receptive_fields.get(projector.layer)
    if positions is None:
        chosen = projection_positions(result, field, count)
    else:
        chosen = [((int(y), int(x)), "chosen") for y, x in positions]
    value = result.fill if fill is None else fill
    copies = occluded_copies(image, [p for p, _ in chosen], result.size, value)
    forward = projector.forward(np.concatenate([image, copies]))
    selections = [
        projector.strongest(forward, channel=result.channel, image=i)[0]
        for i in range(1 + len(chosen))
    ]
    projections = projector.project(forward, selections)
    return OcclusionProjections(
        positions=[None, *(p for p, _ in chosen)],
        reasons=["unoccluded", *(r for _, r in chosen)],
        selections=selections,
        projections=projections,
        boxes=[unit_box(field, pick.position) for pick in selections],
    )
