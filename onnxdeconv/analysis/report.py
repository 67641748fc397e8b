"""The report: every analysis that applies to a model, on a few images, in one result.

:func:`build_report` computes the predictions on the images, the first-layer filter diagnostics
(Zeiler & Fergus Fig. 6), the occlusion maps of the first image (Fig. 7), the invariance of the
features to rotation (Fig. 5) and, for each chosen layer, the projections of the strongest
channels of the first images, each with the part of the image its unit sees. An analysis that does
not apply to the model leaves a note instead of its result. :mod:`onnxdeconv.outputs.report` writes
the result as one HTML page.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from onnxdeconv.analysis.evolution import Mapper
from onnxdeconv.analysis.filters import FilterReport, analyse_filters
from onnxdeconv.analysis.invariance import (
    InvarianceCurves,
    invariance_curves,
    model_image_size,
    sweep,
    transform_image,
)
from onnxdeconv.analysis.layers import evolution_layers, occlusion_layer
from onnxdeconv.analysis.occlusion import OcclusionResult, occlusion_maps, to_probabilities
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import InputError, OnnxDeconvError
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import Preprocessing, fit_image
from onnxdeconv.prepared import Layer, PreparedModel
from onnxdeconv.projector import Projector, Selection
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Layers projected by default, spread over the depth.
DEFAULT_LAYERS = 6
#: Steps of the rotation sweep: few, since the report is an overview.
INVARIANCE_STEPS = 7
#: Images the invariance curves are measured on.
INVARIANCE_IMAGES = 3
#: Rotations shown as examples beside the invariance curves.
INVARIANCE_EXAMPLES = 5
#: Occluder positions projected for the occlusion panel (c).
OCCLUSION_PROJECTIONS = 3
#: Aliasing scores above this are called high.
ALIASING_THRESHOLD = 0.1
#: The analyses before the per-layer projections, in the page's order.
ANALYSES = ("predictions", "filters", "occlusion", "invariance")

Crop = tuple[int, int, int, int]


@dataclass
class Predictions:
    """The model's class output on every image, as probabilities.

    Attributes:
        output: The class output (the model's last output).
        probabilities: ``[N, K]`` probabilities per image.
        softmax_applied: Whether the output held scores that softmax turned into probabilities.
    """

    output: str
    probabilities: np.ndarray
    softmax_applied: bool

    def top(self, image: int, count: int = 3) -> list[tuple[int, float]]:
        """The ``count`` most probable classes of image ``image`` and their probabilities."""
        row = self.probabilities[image]
        return [(int(c), float(row[c])) for c in np.argsort(-row)[:count]]

    def to_json(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The probabilities and the three most probable classes per image, as JSON values."""
        return {
            "output": self.output,
            "softmax_applied": self.softmax_applied,
            "top": [
                [
                    {"class": c, "name": _name(c, labels), "probability": p}
                    for c, p in self.top(index)
                ]
                for index in range(len(self.probabilities))
            ],
            "probabilities": self.probabilities.tolist(),
        }


@dataclass
class RotationInvariance:
    """The invariance curves under rotation, and the first image rotated by a few amounts."""

    curves: InvarianceCurves
    #: Names of the images the curves were measured on.
    images: list[str]
    #: ``(degrees, picture)``: the first image at a few of the amounts, for display.
    examples: list[tuple[float, np.ndarray]]

    def to_json(self) -> dict[str, Any]:
        """The amounts, the relative feature distances and the probabilities, as JSON values."""
        curves = self.curves
        return {
            "kind": curves.kind,
            "images": self.images,
            "amounts": curves.amounts.tolist(),
            "layers": curves.layers,
            "labels": curves.labels.tolist(),
            "relative_distances": curves.relative_distances.tolist(),
            "probabilities": curves.probabilities.tolist(),
            "original_probabilities": curves.original_probabilities.tolist(),
        }


@dataclass
class LayerProjections:
    """The strongest channels of one layer on the first images, projected to pixels.

    Attributes:
        layer: The tensor.
        alias: Its short name.
        op: The op that computes it.
        shape: Its per-sample shape, channels first.
        receptive_field: What one of its units sees.
        images: How many images (the first ones) were projected.
        top: Channels projected per image.
        selections: What was projected: per image, its ``top`` strongest channels.
        projections: ``[len(selections), *input_shape]`` the projections.
        crops: Per projection, the unit's receptive field clipped to the image as
            ``(top, bottom, left, right)`` (None: the whole image is shown, see :func:`crop_box`).
        guided: The same selections projected with guided backpropagation, where the report
            shows them beside deconvnet projections (the first layer aliases); else None.
    """

    layer: str
    alias: str
    op: str
    shape: tuple[int, ...]
    receptive_field: ReceptiveField
    images: int
    top: int
    selections: list[Selection]
    projections: np.ndarray
    crops: list[Crop | None]
    guided: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """The layer and what was projected, as JSON values (the pixels are left out)."""
        return {
            "layer": self.layer,
            "alias": self.alias,
            "op": self.op,
            "shape": list(self.shape),
            "receptive_field": self.receptive_field.describe(),
            "images": self.images,
            "top": self.top,
            "selections": [
                {
                    "image": pick.image,
                    "channel": pick.channel,
                    "position": None if pick.position is None else list(pick.position),
                    "value": pick.value,
                    "crop": None if crop is None else list(crop),
                }
                for pick, crop in zip(self.selections, self.crops, strict=True)
            ],
            "guided_beside": self.guided is not None,
        }


@dataclass
class Report:
    """Everything :func:`build_report` computed; an analysis that did not apply is a note.

    Attributes:
        names: The images' names.
        provider: The ONNX Runtime provider the model ran on.
        layers: Every tensor a projection can start from (``PreparedModel.layers``).
        projected: The layers whose projections were asked for, in graph order.
        labels: Class names, where known.
        predictions: The class probabilities of every image.
        filters: The first-layer filter diagnostics, on every image.
        occlusion: The occlusion maps of the first image, with the projections of panel (c).
        invariance: The invariance to rotation of the first images.
        projections: Per projected layer that could be projected, its projections.
        notes: Why an analysis did not apply, keyed by the analysis (one of :data:`ANALYSES`) or
            the projected layer's tensor name.
        rule: The rule every projection of the report was made with.
    """

    names: list[str]
    provider: str
    layers: list[Layer]
    projected: list[str]
    labels: list[str] | None = None
    predictions: Predictions | None = None
    filters: FilterReport | None = None
    occlusion: OcclusionResult | None = None
    invariance: RotationInvariance | None = None
    projections: list[LayerProjections] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    rule: Rule = "deconvnet"

    def to_json(self) -> dict[str, Any]:
        """Every section's data as JSON values (None for an analysis that did not apply)."""
        labels = self.labels
        return {
            "images": self.names,
            "provider": self.provider,
            "rule": self.rule,
            "layers": [
                {
                    "alias": layer.alias,
                    "tensor": layer.name,
                    "op": layer.op,
                    "shape": list(layer.shape),
                    "receptive_field": layer.receptive_field.describe(),
                    "projectable": layer.projectable,
                    "reason": layer.reason,
                }
                for layer in self.layers
            ],
            "projected": self.projected,
            "predictions": None if self.predictions is None else self.predictions.to_json(labels),
            "filters": None if self.filters is None else self.filters.to_json(),
            "occlusion": None if self.occlusion is None else self.occlusion.to_json(labels),
            "invariance": None if self.invariance is None else self.invariance.to_json(),
            "projections": [layer.to_json() for layer in self.projections],
            "notes": self.notes,
        }


def _name(index: int, labels: Sequence[str] | None) -> str | None:
    return labels[index] if labels is not None and 0 <= index < len(labels) else None


def report_layers(prepared: PreparedModel, layers: Sequence[str] | None = None) -> list[str]:
    """The layers a report projects: ``layers`` resolved, or a few spread over the depth.

    The default is up to :data:`DEFAULT_LAYERS` rectified layers with spatial maps
    (:func:`~onnxdeconv.analysis.layers.evolution_layers`); none, logged, for a model that has
    none.
    """
    if layers is not None:
        return [prepared.resolve(name) for name in layers]
    try:
        return evolution_layers(prepared, DEFAULT_LAYERS)
    except OnnxDeconvError as exc:
        logger.warning("no layer to project: %s", exc)
        return []


def crop_box(
    field: ReceptiveField, position: tuple[int, ...] | None, height: int, width: int
) -> Crop | None:
    """The unit's receptive field clipped to the image, as (top, bottom, left, right).

    None when the unit sees the whole image or at least half of it: then the whole picture says
    more than a patch, as in ``onnxdeconv project``.
    """
    box = field.box(position) if position else None
    if box is None or len(box) != 2:
        return None
    (top, bottom), (left, right) = box
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height), min(right, width)
    if (bottom - top) * (right - left) >= height * width / 2:
        return None
    return top, bottom, left, right


def build_report(
    prepared: PreparedModel,
    images: np.ndarray,
    names: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    top: int = 4,
    show: int = 3,
    pictures: Sequence[np.ndarray] | None = None,
    preprocessing: Preprocessing | None = None,
    rule: Rule = "deconvnet",
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
    mapper: Mapper | None = None,
) -> Report:
    """Run every analysis of the report on ``images``.

    Args:
        prepared: The model.
        images: Preprocessed inputs ``[N, *input_shape]``.
        names: A name per image.
        labels: Class names.
        layers: Tensor names or aliases to project; default: :func:`report_layers`.
        top: Strongest channels projected per image and layer.
        show: Images (the first ones) whose channels are projected.
        pictures: The images before preprocessing (RGB or gray uint8, any size), for the
            invariance curves, which transform the pictures; without them (or ``preprocessing``)
            the invariance is a note.
        preprocessing: How ``pictures`` became ``images``; it also gives the occluder its
            mid-grey (without it, the occluder is the image's mean).
        rule: How the layers' projections and the occlusion's panel (c) are projected.
        device: Where ONNX Runtime runs.
        progress: Called with 1 after each analysis and each projected layer.
        mapper: Where the layers are projected, each on its own (default: here, one after the
            other; see :class:`~onnxdeconv.analysis.evolution.Mapper`).

    Returns:
        The report; :attr:`Report.notes` says which analyses did not apply and why.
    """
    if len(images) != len(names):
        raise InputError(f"got {len(names)} names for {len(images)} images: give one per image")
    chosen = report_layers(prepared, layers)
    runner = ForwardRunner(prepared, keep_outputs=True, device=device)
    runner.check_inputs(images)
    report = Report(
        names=list(names),
        provider=runner.provider,
        layers=prepared.layers(),
        projected=chosen,
        labels=None if labels is None else list(labels),
        rule=rule,
    )

    def step(key: str, compute: Callable[[], T]) -> T | None:
        try:
            return compute()
        except OnnxDeconvError as exc:
            logger.info("%s: not available: %s", key, exc)
            report.notes[key] = str(exc)
            return None
        finally:
            if progress is not None:
                progress(1)

    report.predictions = step("predictions", lambda: _predictions(runner, images))
    report.filters = step(
        "filters",
        lambda: analyse_filters(
            prepared, images, aliasing_threshold=ALIASING_THRESHOLD, device=device
        ),
    )
    report.occlusion = step(
        "occlusion", lambda: _occlusion(prepared, images[:1], preprocessing, rule, device)
    )
    report.invariance = step(
        "invariance", lambda: _invariance(prepared, names, pictures, preprocessing, device)
    )
    # An aliasing first layer makes deconvnet pictures speckled (see aliasing_note): the report
    # then shows guided backpropagation beside them, which the forward masks keep cleaner.
    guided = rule == "deconvnet" and first_layer_aliases(report.filters)
    computes: list[Callable[[], Any]] = [
        functools.partial(_projections, prepared, name, images, top, show, rule, device, guided)
        for name in chosen
    ]
    if mapper is not None:
        # Each layer elsewhere; what it gives (or why it could not) is recorded here, in order.
        computes = [outcome.get for outcome in mapper(attempt, computes)]
    for name, compute in zip(chosen, computes, strict=True):
        projected = step(name, compute)
        if projected is not None:
            report.projections.append(projected)
    return report


@dataclass
class Outcome:
    """What a computation gave, or the library error it raised (to raise again elsewhere)."""

    value: Any = None
    error: OnnxDeconvError | None = None

    def get(self) -> Any:
        """The value; the error raised again."""
        if self.error is not None:
            raise self.error
        return self.value


def attempt(compute: Callable[[], Any]) -> Outcome:
    """``compute()``, its library error kept rather than raised (for a :class:`Mapper`)."""
    try:
        return Outcome(compute())
    except OnnxDeconvError as exc:
        return Outcome(error=exc)


def _predictions(runner: ForwardRunner, images: np.ndarray) -> Predictions:
    output = runner.prepared.loaded.model.graph.output[-1].name
    scores = runner.run(images, [output])[output].reshape(len(images), -1)
    probabilities, applied = to_probabilities(scores.astype(np.float64))
    return Predictions(output, probabilities, applied)


def _occlusion(
    prepared: PreparedModel,
    image: np.ndarray,
    preprocessing: Preprocessing | None,
    rule: Rule,
    device: Device,
) -> OcclusionResult:
    projector = Projector(
        prepared, occlusion_layer(prepared), rule, device=device, keep_outputs=True
    )
    return occlusion_maps(
        projector, image, preprocessing=preprocessing, projections=OCCLUSION_PROJECTIONS
    )


def _invariance(
    prepared: PreparedModel,
    names: Sequence[str],
    pictures: Sequence[np.ndarray] | None,
    preprocessing: Preprocessing | None,
    device: Device,
) -> RotationInvariance:
    if pictures is None or preprocessing is None:
        raise InputError(
            "the invariance curves transform the pictures before preprocessing: give the "
            "pictures and their preprocessing"
        )
    size = model_image_size(prepared)
    # The transforms work on the picture as the model sees it, before preprocessing.
    fitted = [fit_image(picture, size) for picture in pictures[:INVARIANCE_IMAGES]]
    amounts = sweep("rotate", size[0], INVARIANCE_STEPS)
    curves = invariance_curves(
        prepared,
        fitted,
        preprocessing=preprocessing,
        kind="rotate",
        amounts=amounts,
        border="reflect",
        device=device,
    )
    shown = np.unique(np.linspace(0, len(amounts) - 1, INVARIANCE_EXAMPLES).round().astype(int))
    examples = [
        (float(amounts[i]), transform_image(fitted[0], "rotate", float(amounts[i]))) for i in shown
    ]
    return RotationInvariance(curves, list(names[: len(fitted)]), examples)


def _projections(
    prepared: PreparedModel,
    name: str,
    images: np.ndarray,
    top: int,
    show: int,
    rule: Rule,
    device: Device,
    guided: bool = False,
) -> LayerProjections:
    projector = Projector(prepared, name, rule, device=device)
    count = min(show, len(images))
    forward = projector.forward(images[:count])
    picks = [p for i in range(count) for p in projector.strongest(forward, top=top, image=i)]
    field = prepared.receptive_fields[name]
    height, width = model_image_size(prepared)
    aliases = prepared.alias_of
    return LayerProjections(
        layer=name,
        alias=aliases.get(name, name),
        op=prepared.producers[name].op_type,
        shape=projector.layer_shape,
        receptive_field=field,
        images=count,
        top=top,
        selections=picks,
        projections=projector.project(forward, picks),
        crops=[crop_box(field, pick.position, height, width) for pick in picks],
        guided=_guided(prepared, name, images[:count], picks, device) if guided else None,
    )


def _guided(
    prepared: PreparedModel, name: str, images: np.ndarray, picks: list[Selection], device: Device
) -> np.ndarray:
    """``picks`` projected with guided backpropagation, on a forward pass of its own.

    Guided backpropagation reads the rectifiers' inputs, which the deconvnet's pass leaves out.
    """
    projector = Projector(prepared, name, "guided", device=device)
    return projector.project(projector.forward(images), picks)


def first_layer_aliases(filters: FilterReport | None) -> bool:
    """Whether the first layer's aliasing score is above :data:`ALIASING_THRESHOLD`."""
    return filters is not None and filters.aliasing > ALIASING_THRESHOLD


def aliasing_note(filters: FilterReport) -> str:
    """Why deconvnet projections of a model whose first layer aliases look speckled."""
    return (
        f"The first layer aliases (score {filters.aliasing:.2f} > {ALIASING_THRESHOLD:g}): its "
        f"stride {'x'.join(map(str, filters.stride))} samples frequencies its filters pass above "
        "the Nyquist limit. The deconvnet sends every unit's signal back through the transposed "
        "strided convolution with nothing to stop it where the forward pass was inactive, so its "
        "pictures show that high-frequency content as speckle on the stride grid. Guided "
        "backpropagation also keeps only where the forward rectifiers were active, which removes "
        "most of it: the layer sections show it beside each deconvnet projection."
    )
