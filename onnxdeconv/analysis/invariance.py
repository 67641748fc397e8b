"""Feature invariance under translation, scaling and rotation (Zeiler & Fergus, Fig. 5).

Zeiler & Fergus translated, rotated and scaled five images by varying amounts and plotted, against
the amount, the Euclidean distance between the feature vectors of the original and the transformed
image at a bottom and a top layer, and the probability of the image's true label. Small
transformations changed the first layer a lot and the top feature layer much less; the output was
not invariant to rotation except for rotationally symmetric objects.

:func:`invariance_curves` measures the same on any ONNX convnet:

* The transform (:func:`transform_image`) is applied to the RGB image at the model's input
  resolution, before preprocessing, with ``cv2.warpAffine`` (bilinear) about the image centre. The
  pixels it brings in from outside the image are filled by reflection (``reflect``, OpenCV's
  ``BORDER_REFLECT_101``) or by repeating the edge pixels (``replicate``), never with black, so
  the border adds no artificial edge.
* For each layer the feature vector is the flattened activation of the image. The distance is the
  Euclidean distance ``||f(T x) - f(x)||`` (what the paper plots) and the relative distance divides
  it by ``||f(x)||``, which makes layers of different scale comparable.
* The probability is that of the label under the model's class output (the last graph output),
  through a softmax unless that output already comes out of one.

All transformed copies of one image run through one :class:`~onnxdeconv.runtime.ForwardRunner`
that returns every chosen layer and the class output together, in chunks.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from onnxdeconv.analysis.layers import PASSIVE_OPS, invariance_layers
from onnxdeconv.errors import InputError, SelectionError
from onnxdeconv.inputs import (
    IMAGE_SUFFIXES,
    Preprocessing,
    fit_image,
    image_layout,
    none_readable,
    normalise,
    read_each,
    read_image,
)
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

TransformKind = Literal["translate", "scale", "rotate"]
Border = Literal["reflect", "replicate"]
OutputKind = Literal["softmax", "log_softmax", "logits"]
#: The transforms, in the order the paper shows them.
TRANSFORMS: tuple[TransformKind, ...] = ("translate", "scale", "rotate")
BORDERS: tuple[Border, ...] = ("reflect", "replicate")
#: The amount that leaves an image unchanged.
IDENTITY: dict[TransformKind, float] = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
#: What an amount means, for axis labels.
UNITS: dict[TransformKind, str] = {
    "translate": "vertical shift (px, + is down)",
    "scale": "scale factor",
    "rotate": "rotation (degrees, counter-clockwise)",
}
#: Default sweep of each transform: (low, high, steps). Translation is a fraction of the height:
#: ±60 px at 224 px, as in the paper's figure.
DEFAULT_SWEEPS: dict[TransformKind, tuple[float, float, int]] = {
    "translate": (-60 / 224, 60 / 224, 13),
    "scale": (0.6, 1.6, 11),
    "rotate": (0.0, 360.0, 25),
}
_BORDER_MODES = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE}


def _check_kind(kind: str) -> TransformKind:
    if kind not in TRANSFORMS:
        raise InputError(f"unknown transform '{kind}': use one of {', '.join(TRANSFORMS)}")
    return kind


def transform_matrix(kind: TransformKind, amount: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine map from source to destination pixel coordinates (x right, y down).

    Args:
        kind: ``translate`` moves the content down by ``amount`` pixels (up when negative);
            ``scale`` magnifies it by the factor ``amount`` about the centre; ``rotate`` turns it
            ``amount`` degrees counter-clockwise as displayed, about the centre.
        amount: How much.
        size: The image's ``(height, width)``. The centre is ``((width-1)/2, (height-1)/2)`` in
            pixel-centre coordinates, so a square image rotated by 90 degrees maps its pixel grid
            onto itself exactly.
    """
    kind = _check_kind(kind)
    height, width = size
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    if kind == "translate":
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, float(amount)]])
    if kind == "scale":
        if not amount > 0:
            raise InputError(f"scale factor {amount:g} must be above 0: give factors like 0.6..1.6")
        s = float(amount)
        return np.array([[s, 0.0, (1 - s) * cx], [0.0, s, (1 - s) * cy]])
    quarter = float(amount) / 90.0
    if quarter == round(quarter):
        # cos/sin of right angles are exact here, so a 90-degree turn is a pure pixel permutation.
        cos, sin = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[round(quarter) % 4]
    else:
        cos, sin = math.cos(math.radians(amount)), math.sin(math.radians(amount))
    # In y-down coordinates a counter-clockwise turn on screen is x' = c x + s y, y' = -s x + c y.
    return np.array(
        [
            [cos, sin, (1 - cos) * cx - sin * cy],
            [-sin, cos, sin * cx + (1 - cos) * cy],
        ]
    )


def transform_image(
    rgb: np.ndarray, kind: TransformKind, amount: float, border: Border = "reflect"
) -> np.ndarray:
    """Translate, scale or rotate an image, keeping its size (see :func:`transform_matrix`).

    Args:
        rgb: ``[H, W, 3]`` or ``[H, W]`` uint8 image.
        kind: ``translate``, ``scale`` or ``rotate``.
        amount: Pixels down, magnification factor, or degrees counter-clockwise.
        border: How pixels from outside the image are filled: ``reflect`` (mirrored without
            repeating the edge, OpenCV's ``BORDER_REFLECT_101``) or ``replicate`` (the edge pixel
            repeated).

    Returns:
        The transformed image, same shape and dtype; bilinear interpolation.
    """
    if border not in _BORDER_MODES:
        raise InputError(f"unknown border '{border}': use one of {', '.join(BORDERS)}")
    height, width = rgb.shape[:2]
    matrix = transform_matrix(kind, amount, (height, width))
    if np.array_equal(matrix, np.eye(2, 3)):
        unchanged: np.ndarray = rgb.copy()
        return unchanged
    warped: np.ndarray = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=_BORDER_MODES[border],
    )
    return warped.reshape(rgb.shape)


def sweep(
    kind: TransformKind,
    height: int,
    steps: int | None = None,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """Evenly spaced amounts of a transform, always including the identity.

    Args:
        kind: The transform.
        height: Input height in pixels; the default translation range is ±60/224 of it.
        steps: How many evenly spaced amounts from ``low`` to ``high`` (default: 13 shifts,
            11 scale factors 0.6..1.6, 25 rotations 0..360 degrees, every 15).
        low: Start of the range, in the transform's unit (pixels, factor, degrees).
        high: End of the range.

    Returns:
        Sorted unique float64 amounts; the identity is added when the grid misses it.
    """
    kind = _check_kind(kind)
    default_low, default_high, default_steps = DEFAULT_SWEEPS[kind]
    if kind == "translate":
        default_low, default_high = round(default_low * height), round(default_high * height)
    low = default_low if low is None else low
    high = default_high if high is None else high
    steps = default_steps if steps is None else steps
    if steps < 2 or not high > low:
        raise InputError(
            f"a sweep needs at least 2 steps over a range low < high; got {steps} steps over "
            f"{low:g}..{high:g}"
        )
    if kind == "scale" and not low > 0:
        raise InputError(f"scale factors must be above 0, got the range {low:g}..{high:g}")
    amounts = np.linspace(low, high, steps)
    return np.unique(np.round(np.append(amounts, IDENTITY[kind]), 9))


@dataclass(frozen=True)
class ClassOutput:
    """The model's class output: the tensor, and whether it holds probabilities or logits."""

    name: str
    #: ``softmax`` when it already comes out of a Softmax, ``log_softmax`` out of a LogSoftmax,
    #: ``logits`` otherwise.
    kind: OutputKind


def class_output(prepared: PreparedModel) -> ClassOutput:
    """The last graph output, and whether a Softmax (through reshapes) produced it."""
    name = prepared.graph.output[-1].name
    tensor = name
    while tensor in prepared.producers:
        node = prepared.producers[tensor]
        if node.op_type == "Softmax":
            return ClassOutput(name, "softmax")
        if node.op_type == "LogSoftmax":
            return ClassOutput(name, "log_softmax")
        if node.op_type not in PASSIVE_OPS or not node.input:
            break
        tensor = node.input[0]
    return ClassOutput(name, "logits")


def probabilities(values: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Class probabilities ``[N, K]`` (float64) from a class output ``[N, ...]``."""
    flat = np.asarray(values, np.float64).reshape(len(values), -1)
    if kind == "softmax":
        return flat
    if kind == "log_softmax":
        return np.exp(flat)
    shifted = np.exp(flat - flat.max(axis=1, keepdims=True))
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def invariance_runner(
    prepared: PreparedModel, layers: Sequence[str], device: Device = "auto"
) -> ForwardRunner:
    """The forward runner :func:`invariance_curves` needs: ``layers`` and the class output.

    Build it once to reuse it over several transforms.

    Args:
        prepared: The prepared model.
        layers: Tensor names to return (resolved names, not aliases).
        device: Where ONNX Runtime runs.
    """
    return ForwardRunner(prepared, expose=list(layers), device=device)


#: The columns of :meth:`InvarianceCurves.rows`.
CSV_COLUMNS = (
    "image",
    "transform",
    "parameter",
    "layer",
    "tensor",
    "distance",
    "relative_distance",
    "probability",
    "label",
)


@dataclass
class InvarianceCurves:
    """What :func:`invariance_curves` measured for one transform.

    Attributes:
        kind: The transform.
        amounts: ``[A]`` amounts, in the transform's unit.
        layers: The layers' tensor names.
        labels: ``[I]`` the class whose probability is tracked, per image.
        distances: ``[I, A, L]`` Euclidean distance between the flattened activations of the
            original and of the transformed image.
        norms: ``[I, L]`` norm of each original image's flattened activations.
        probabilities: ``[I, A]`` probability of the label for each transformed image.
        original_probabilities: ``[I]`` probability of the label for the original image.
        aliases: A short name for each layer tensor that has one (``relu1``).
    """

    kind: TransformKind
    amounts: np.ndarray
    layers: list[str]
    labels: np.ndarray
    distances: np.ndarray
    norms: np.ndarray
    probabilities: np.ndarray
    original_probabilities: np.ndarray
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def relative_distances(self) -> np.ndarray:
        """``[I, A, L]`` distances divided by the original's norm (NaN where that norm is 0)."""
        norms = self.norms[:, None, :]
        out = np.full_like(self.distances, np.nan)
        np.divide(self.distances, norms, out=out, where=norms > 0)
        return out

    def moved_relative_distances(self) -> np.ndarray:
        """``[L]`` mean relative distance over the images and every amount that moves pixels.

        The identity (and a full turn) would pull every mean towards zero.
        """
        period = 360.0 if self.kind == "rotate" else np.inf
        moved = ~np.isclose(np.fmod(self.amounts - IDENTITY[self.kind], period), 0.0)
        relative = self.relative_distances[:, moved].reshape(-1, len(self.layers))
        with warnings.catch_warnings():
            # No moved amount, or a zero norm everywhere: NaN, without a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            means: np.ndarray = np.nanmean(relative, axis=0)
        return means

    def summary(self) -> str:
        """One line: the mean relative distance per layer and the mean probability of the label."""
        names = self.aliases
        parts = [
            f"{names.get(layer, layer)} {value:.3f}"
            for layer, value in zip(self.layers, self.moved_relative_distances(), strict=True)
        ]
        probability = float(self.probabilities.mean())
        original = float(self.original_probabilities.mean())
        return (
            f"{self.kind:<9}  mean relative distance: {'  '.join(parts)}  "
            f"mean P(label) {probability:.3f} (original {original:.3f})"
        )

    def rows(self, image_names: Sequence[str]) -> list[tuple[str | int | None, ...]]:
        """One row (:data:`CSV_COLUMNS`) per image, amount and layer; numbers to 6 digits.

        Args:
            image_names: The images' names, in order.
        """
        names = self.aliases
        relative = self.relative_distances
        rows: list[tuple[str | int | None, ...]] = []
        for image, name in enumerate(image_names):
            for step, amount in enumerate(self.amounts):
                for column, layer in enumerate(self.layers):
                    rows.append(
                        (
                            name,
                            self.kind,
                            f"{amount:g}",
                            names.get(layer, layer),
                            layer,
                            _digits(self.distances[image, step, column]),
                            _digits(relative[image, step, column]),
                            _digits(self.probabilities[image, step]),
                            int(self.labels[image]),
                        )
                    )
        return rows

    def to_json(self, image_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The curves as JSON-ready values (NaN stays NaN: write them with a strict writer).

        Args:
            image_names: The images' names, in order.
        """
        return {
            "transform": self.kind,
            "unit": UNITS[self.kind],
            "identity": IDENTITY[self.kind],
            "amounts": self.amounts.tolist(),
            "layers": list(self.layers),
            "aliases": {layer: self.aliases.get(layer) for layer in self.layers},
            "images": list(image_names) if image_names is not None else None,
            "labels": self.labels.tolist(),
            "distances": self.distances.tolist(),
            "relative_distances": self.relative_distances.tolist(),
            "norms": self.norms.tolist(),
            "probabilities": self.probabilities.tolist(),
            "original_probabilities": self.original_probabilities.tolist(),
        }


def _digits(value: float) -> str | None:
    return f"{value:.6g}" if math.isfinite(value) else None


def model_image_size(prepared: PreparedModel) -> tuple[int, int]:
    """The model's input ``(height, width)``."""
    layout, _ = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
    if len(spatial) != 2:
        raise InputError(f"the model input {list(prepared.input_shape)} is not a 2-D image input")
    return int(spatial[0]), int(spatial[1])


@dataclass
class Pictures:
    """Images read from files, fitted to the model's input size, before preprocessing."""

    #: RGB uint8 ``[H, W, 3]`` pictures.
    pictures: list[np.ndarray]
    #: The file name of each picture.
    names: list[str]
    #: ``(path, why)`` for each path that gave no picture.
    skipped: list[tuple[Path, str]]


def read_pictures(paths: Sequence[Path], size: tuple[int, int]) -> Pictures:
    """Read image files, and the image files in folders (recursively, sorted), fitted to ``size``.

    A folder without images and an unreadable file are skipped (and listed as such).

    Raises:
        InputError: No image could be read.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                skipped.append((path, "no images in this folder"))
            files.extend(found)
        else:
            files.append(path)
    done, failed = read_each(files, lambda path: fit_image(read_image(path), size))
    if not done:
        raise none_readable(len(files), "given", [*skipped, *failed])
    return Pictures([p for _, p in done], [path.name for path, _ in done], [*skipped, *failed])


def invariance_curves(
    prepared: PreparedModel,
    images: Sequence[np.ndarray],
    preprocessing: Preprocessing,
    kind: TransformKind,
    amounts: Sequence[float] | np.ndarray,
    layers: Sequence[str] | None = None,
    label: int | Sequence[int] | None = None,
    *,
    border: Border = "reflect",
    runner: ForwardRunner | None = None,
    device: Device = "auto",
    chunk: int = 32,
    progress: Callable[[int], None] | None = None,
) -> InvarianceCurves:
    """Feature distances and label probability of transformed copies of each image.

    Args:
        prepared: The prepared model.
        images: RGB (or gray) uint8 images; any other size than the model's input is first
            resized on its shorter side and centre-cropped, as ``onnxdeconv project`` does.
        preprocessing: How pixels become model inputs.
        kind: ``translate``, ``scale`` or ``rotate`` (see :func:`transform_image`).
        amounts: The amounts to apply (e.g. from :func:`sweep`).
        layers: Tensor names or aliases (default: :func:`invariance_layers`).
        label: The class whose probability is tracked: one index for every image, one per image,
            or None for each original image's predicted class.
        border: How transforms fill the pixels they bring in.
        runner: A runner of ``prepared`` that returns the layers (from
            :func:`invariance_runner`), to reuse across calls; default: a new one.
        device: Where ONNX Runtime runs, when no runner is given.
        chunk: Inputs per forward run (a model with a fixed batch runs that batch).
        progress: Called with 1 after each image.

    Returns:
        The curves, with the original as reference for every distance.
    """
    kind = _check_kind(kind)
    if not images:
        raise InputError("no images to transform: give at least one")
    names = chosen_layers(prepared, layers or None)
    output = class_output(prepared)
    if runner is None:
        runner = invariance_runner(prepared, names, device)
    # A chosen layer may be the class output itself; fetch each tensor once.
    fetched = list(dict.fromkeys([output.name, *names]))
    steps = np.asarray(amounts, np.float64).reshape(-1)
    if steps.size == 0:
        raise InputError("no transform amounts given: give at least one")
    size = model_image_size(prepared)
    layout, channels = image_layout(prepared.input_shape)
    dtype = prepared.loaded.input_dtype
    labels = _labels(label, len(images))
    distances = np.zeros((len(images), len(steps), len(names)))
    norms = np.zeros((len(images), len(names)))
    probs = np.zeros((len(images), len(steps)))
    originals = np.zeros(len(images))
    chosen = np.zeros(len(images), np.int64)
    for index, image in enumerate(images):
        rgb = _fit(np.asarray(image), size)
        batch = [rgb] + [transform_image(rgb, kind, float(a), border) for a in steps]
        inputs = np.concatenate(
            [normalise(picture, preprocessing, layout, channels, dtype) for picture in batch]
        )
        values = runner.run(inputs, fetched, chunk=chunk)
        class_probs = probabilities(values[output.name], output.kind)
        wanted = labels[index] if labels is not None else int(class_probs[0].argmax())
        if not 0 <= wanted < class_probs.shape[1]:
            raise InputError(
                f"label {wanted} is out of range: the model has {class_probs.shape[1]} classes "
                f"(0..{class_probs.shape[1] - 1})"
            )
        chosen[index] = wanted
        originals[index] = class_probs[0, wanted]
        probs[index] = class_probs[1:, wanted]
        for column, name in enumerate(names):
            features = values[name].reshape(len(inputs), -1).astype(np.float64)
            norms[index, column] = np.linalg.norm(features[0])
            distances[index, :, column] = np.linalg.norm(features[1:] - features[0], axis=1)
        if progress is not None:
            progress(1)
    aliases = {tensor: alias for tensor, alias in prepared.alias_of.items() if tensor in names}
    return InvarianceCurves(kind, steps, names, chosen, distances, norms, probs, originals, aliases)


def sweep_transforms(
    prepared: PreparedModel,
    images: Sequence[np.ndarray],
    preprocessing: Preprocessing,
    kinds: Sequence[str] = TRANSFORMS,
    *,
    steps: int | None = None,
    amount_range: tuple[float | None, float | None] = (None, None),
    layers: Sequence[str] | None = None,
    label: int | Sequence[int] | None = None,
    border: Border = "reflect",
    runner: ForwardRunner | None = None,
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
) -> list[InvarianceCurves]:
    """:func:`invariance_curves` over a :func:`sweep` of each transform, with one runner.

    Args:
        prepared: The prepared model.
        images: RGB (or gray) uint8 images.
        preprocessing: How pixels become model inputs.
        kinds: The transforms, one result each.
        steps: Amounts per sweep (default: each transform's, see :func:`sweep`).
        amount_range: ``(low, high)`` of every sweep, in the transforms' unit (default: each
            transform's).
        layers: Tensor names or aliases (default: :func:`invariance_layers`).
        label: As for :func:`invariance_curves`.
        border: How transforms fill the pixels they bring in.
        runner: A runner from :func:`invariance_runner` for these layers (default: a new one).
        device: Where ONNX Runtime runs, when no runner is given.
        progress: Called with 1 after each image of each transform.
    """
    names = chosen_layers(prepared, layers)
    runner = runner or invariance_runner(prepared, names, device)
    height = model_image_size(prepared)[0]
    return [
        invariance_curves(
            prepared,
            images,
            preprocessing,
            kind,
            sweep(kind, height, steps, *amount_range),
            names,
            label,
            border=border,
            runner=runner,
            progress=progress,
        )
        for kind in [_check_kind(kind) for kind in kinds]
    ]


def chosen_layers(prepared: PreparedModel, layers: Sequence[str] | None = None) -> list[str]:
    """The tensor names of ``layers`` (names or aliases; blank ones dropped).

    Args:
        prepared: The prepared model.
        layers: The layers asked for; None for :func:`invariance_layers`.

    Raises:
        SelectionError: A layer is unknown, or ``layers`` names none.
    """
    if layers is None:
        return invariance_layers(prepared)
    names = [prepared.resolve(name.strip()) for name in layers if name.strip()]
    if not names:
        raise SelectionError("no layers given: name at least one, e.g. relu1,relu3")
    return names


def _labels(label: int | Sequence[int] | None, count: int) -> list[int] | None:
    if label is None:
        return None
    if isinstance(label, (int, np.integer)):
        return [int(label)] * count
    labels = [int(x) for x in label]
    if len(labels) != count:
        raise InputError(f"got {len(labels)} labels for {count} images: give one per image")
    return labels


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(
            f"images must be uint8 [H, W, 3] or [H, W] arrays, got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[:2] != size:
        image = fit_image(image, size)
    return np.ascontiguousarray(image)
