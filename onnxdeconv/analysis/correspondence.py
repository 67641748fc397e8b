"""Correspondence analysis (Zeiler & Fergus, Table 1): do parts mask alike across images?

Does masking the same object part change a deep layer's features in the same way in every image?

For images ``i = 1..N`` and a layer ``l``, ``ε_i = x_i - x̃_i`` is the layer's feature vector of
image ``i`` minus that of its copy with the part masked by a grey box, flattened to ``D``
features. The consistency of a masking is

    Δ_l = Σ_{i ≠ j} H(sign ε_i, sign ε_j)

over the ``N(N-1)`` *ordered* pairs, ``H`` being the Hamming distance: the number of features
whose signs differ. ``sign`` takes the values -1, 0 and +1, and 0 is a sign of its own: a feature
that the mask leaves unchanged in one image and moves in the other differs; one that it leaves
unchanged in both does not. The normalised form ``Δ_l / (N(N-1)·D)`` is the mean fraction of
differing signs over the pairs (the paper reports 0.07-0.11). A part that a layer represents
consistently scores lower than a box of the same size at a random place.

Boxes are ``(x0, y0, x1, y1)`` in pixels: ``x0, y0`` the top-left corner, ``x1, y1`` exclusive,
so ``x1 - x0`` is the width.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxdeconv.analysis.layers import correspondence_layers
from onnxdeconv.errors import InputError, require_path
from onnxdeconv.inputs import (
    IMAGE_SUFFIXES,
    PRESETS,
    Preprocessing,
    fit_image,
    image_layout,
    normalise,
    read_each,
    read_image,
)
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

#: A box in input pixels.
Box = tuple[int, int, int, int]
#: A box in the original image's pixels (may be fractional).
SourceBox = tuple[float, float, float, float]
#: The grey that masks a part, as the paper's grey square: a pixel value before preprocessing.
MASK_VALUE = 128


# --- geometry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitGeometry:
    """How :func:`onnxdeconv.inputs.fit_image` maps an original image onto the model input.

    The image is resized by ``scale_y``, ``scale_x`` (the shorter side fits), then the centre crop
    of ``size`` starts at ``top``, ``left`` of the resized image. An original pixel edge ``x`` lands
    at ``x · scale_x - left`` in the input.
    """

    scale_y: float
    scale_x: float
    top: int
    left: int
    size: tuple[int, int]

    def to_input(self, box: Sequence[float]) -> Box | None:
        """Map an original-image box to input pixels, clipped to the input; None if none is left.

        Edges are rounded to the nearest pixel edge; a box that would shrink below one pixel keeps
        one.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        left = _round(x0 * self.scale_x - self.left)
        top = _round(y0 * self.scale_y - self.top)
        right = max(_round(x1 * self.scale_x - self.left), left + 1)
        bottom = max(_round(y1 * self.scale_y - self.top), top + 1)
        height, width = self.size
        clipped = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
        if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
            return None
        return clipped


def _round(value: float) -> int:
    # Half up, not half to even: a box edge at .5 should not move with its parity.
    return math.floor(value + 0.5)


def fit_geometry(height: int, width: int, size: tuple[int, int]) -> FitGeometry:
    """The resize and centre crop that :func:`onnxdeconv.inputs.fit_image` applies.

    Args:
        height: Original image height.
        width: Original image width.
        size: The model's input ``(H, W)``.
    """
    want_h, want_w = size
    factor = max(want_h / height, want_w / width)
    new_h, new_w = max(want_h, round(height * factor)), max(want_w, round(width * factor))
    return FitGeometry(
        scale_y=new_h / height,
        scale_x=new_w / width,
        top=(new_h - want_h) // 2,
        left=(new_w - want_w) // 2,
        size=(want_h, want_w),
    )


def mask_box(rgb: np.ndarray, box: Box, value: int = MASK_VALUE) -> np.ndarray:
    """A copy of ``rgb`` (``[H, W]`` or ``[H, W, C]``) with ``box`` filled with ``value``."""
    x0, y0, x1, y1 = box
    masked: np.ndarray = rgb.copy()
    masked[y0:y1, x0:x1] = value
    return masked


def random_boxes(
    sizes: Sequence[tuple[int, int]],
    regions: Sequence[Sequence[int]] | np.ndarray,
    draws: int,
    seed: int,
) -> np.ndarray:
    """Boxes of the given sizes at uniformly random places inside each image's region.

    Args:
        sizes: ``(height, width)`` of the box for each image.
        regions: ``(x0, y0, x1, y1)`` for each image: where the boxes may lie (the whole input, or
            the object). A box larger than its region is centred on it, cut to the region.
        draws: How many sets of boxes to draw.
        seed: Seed of the generator; the same seed gives the same boxes.

    Returns:
        ``[draws, images, 4]`` int64 boxes ``(x0, y0, x1, y1)``, drawn draw by draw, image by image:
        the top, then the left edge.
    """
    rng = np.random.default_rng(seed)
    boxes = np.zeros((draws, len(sizes), 4), np.int64)
    for draw in range(draws):
        for image, ((box_h, box_w), region) in enumerate(zip(sizes, regions, strict=True)):
            x0, y0, x1, y1 = (int(v) for v in region)
            box_h, box_w = min(box_h, y1 - y0), min(box_w, x1 - x0)
            top = int(rng.integers(y0, y1 - box_h + 1))
            left = int(rng.integers(x0, x1 - box_w + 1))
            boxes[draw, image] = (left, top, left + box_w, top + box_h)
    return boxes


# --- the score ----------------------------------------------------------------------------------


def signs(eps: np.ndarray) -> np.ndarray:
    """``sign`` of each difference as int8 -1, 0 or +1 (NaN counts as 0)."""
    eps = np.asarray(eps)
    return (eps > 0).astype(np.int8) - (eps < 0).astype(np.int8)


def sign_hamming(eps: np.ndarray) -> np.ndarray:
    """``H(sign ε_i, sign ε_j)`` for every pair: an ``[N, N]`` int64 matrix, zero diagonal.

    Args:
        eps: ``[N, D]`` differences (any shape ``[N, ...]`` is flattened).
    """
    flat = signs(np.asarray(eps).reshape(len(eps), -1))
    features = flat.shape[1]
    agree = np.zeros((len(flat), len(flat)), np.float64)
    for value in (-1, 0, 1):
        onehot = (flat == value).astype(np.float64)
        agree += onehot @ onehot.T
    # Counts up to 2^53 are exact in float64.
    hamming: np.ndarray = np.rint(features - agree).astype(np.int64)
    return hamming


def consistency(eps: np.ndarray) -> tuple[int, float]:
    """Δ = Σ over ordered pairs ``i ≠ j`` of ``H(sign ε_i, sign ε_j)``, and Δ / (N(N-1)·D).

    Args:
        eps: ``[N, D]`` feature differences, one row per image, ``N ≥ 2``.

    Returns:
        The total ``Δ`` and its normalised form: the mean fraction of features whose sign differs.
    """
    found = score(eps)
    return found.total, found.normalised


@dataclass(frozen=True)
class Score:
    """Δ of one masking (a part, or one random draw) at one layer."""

    #: Δ_l: the sum of Hamming distances over the ordered pairs i ≠ j.
    total: int
    #: Δ_l / (N(N-1)·D): the mean fraction of features whose sign differs.
    normalised: float
    #: The standard deviation of ``H_ij / D`` over the unordered pairs i < j.
    pair_std: float
    #: The mean fraction of features the mask changes (``ε != 0``): with sign(0) a sign of its
    #: own, a mask that changes more features has more signs to disagree on.
    changed: float


def score(eps: np.ndarray) -> Score:
    """The :class:`Score` of ``[N, D]`` differences (``N ≥ 2``, ``D ≥ 1``)."""
    eps = np.asarray(eps)
    count, features = len(eps), int(np.prod(eps.shape[1:]))
    if count < 2 or features < 1:
        raise InputError(
            f"consistency needs at least 2 images and 1 feature, got {count} x {features}"
        )
    hamming = sign_hamming(eps)
    total = int(hamming.sum())
    upper = hamming[np.triu_indices(count, k=1)] / features
    changed = float(np.count_nonzero(signs(eps)) / (count * features))
    return Score(total, total / (count * (count - 1) * features), float(upper.std()), changed)


# --- boxes files --------------------------------------------------------------------------------


@dataclass
class BoxesFile:
    """The content of a boxes file: part boxes per image, optional crops and object regions."""

    #: ``{image key: {part: box}}`` in the original image's pixels.
    images: dict[str, dict[str, SourceBox]]
    #: ``{image key: box}``: the part of the photo used as the image, before it is fitted.
    crops: dict[str, SourceBox]
    #: ``{image key: box}``: where random boxes are drawn (the object); others use the whole input.
    objects: dict[str, SourceBox]


def parse_boxes(data: Any, source: str = "the boxes file") -> BoxesFile:
    """Check the structure of a boxes file.

    The file is ``{"images": {"A.jpg": {"nose": [x0, y0, x1, y1], ...}, ...}}`` with boxes in the
    original image's pixels. Optional: ``"crops": {"A.jpg": [x0, y0, x1, y1]}`` (use only that
    part of the photo, e.g. to centre a face), ``"objects"`` in the same form (the region random
    boxes are drawn in) and a ``"description"`` string, which is ignored.

    Raises:
        InputError: The structure or a box is malformed.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise InputError(
            f"{source} must be a JSON object like "
            '{"images": {"A.jpg": {"nose": [x0, y0, x1, y1]}}}'
        )
    unknown = sorted(set(data) - {"images", "crops", "objects", "description"})
    if unknown:
        raise InputError(
            f"{source} has unknown key(s) {', '.join(map(repr, unknown))}: only 'images', "
            "'crops', 'objects' and 'description' are read"
        )
    if not data["images"]:
        raise InputError(f"{source} lists no images: add at least two under 'images'")
    images: dict[str, dict[str, SourceBox]] = {}
    for key, parts in data["images"].items():
        if not isinstance(parts, dict) or not parts:
            raise InputError(
                f"{source}: image '{key}' must map part names to boxes, like "
                '{"nose": [x0, y0, x1, y1]}'
            )
        images[key] = {
            part: _source_box(box, f"{source}: box '{part}' of image '{key}'")
            for part, box in parts.items()
        }
    regions = []
    for section in ("crops", "objects"):
        given = data.get(section, {})
        if not isinstance(given, dict):
            raise InputError(
                f"{source}: '{section}' must map images to boxes, like "
                '{"A.jpg": [x0, y0, x1, y1]}'
            )
        stray = [key for key in given if key not in images]
        if stray:
            raise InputError(
                f"{source}: '{section}' names '{stray[0]}', which is not under 'images': use the "
                "same key"
            )
        regions.append(
            {
                key: _source_box(box, f"{source}: {section} box of image '{key}'")
                for key, box in given.items()
            }
        )
    return BoxesFile(images, regions[0], regions[1])


def _source_box(box: Any, what: str) -> SourceBox:
    valid = (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        and all(math.isfinite(v) for v in box)
    )
    if not valid:
        raise InputError(
            f"{what} is {json_text(box)}; give four numbers [x0, y0, x1, y1] in the original "
            "image's pixels"
        )
    if not (box[0] < box[2] and box[1] < box[3]):
        raise InputError(
            f"{what} is {json_text(box)}; it needs x0 < x1 and y0 < y1 (x1, y1 are the "
            "bottom-right corner, exclusive)"
        )
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def json_text(value: Any) -> str:
    """A short one-line rendering of a JSON value for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def boxes_by_part(
    entries: Sequence[Mapping[str, SourceBox]],
    names: Sequence[str],
    parts: Sequence[str] | None = None,
) -> dict[str, list[SourceBox]]:
    """Regroup per-image boxes by part: ``{part: [box of image 0, box of image 1, ...]}``.

    Args:
        entries: Each image's ``{part: box}``.
        names: The images' names, for messages.
        parts: The parts to keep (default: every part, in order of first appearance).

    Raises:
        InputError: A part lacks a box in some image.
    """
    if parts is None:
        parts = list(dict.fromkeys(part for entry in entries for part in entry))
    grouped: dict[str, list[SourceBox]] = {}
    for part in parts:
        missing = [name for name, entry in zip(names, entries, strict=True) if part not in entry]
        if len(missing) == len(names):
            known = sorted({p for entry in entries for p in entry})
            raise InputError(
                f"no image has a box for part '{part}': the parts are {', '.join(known)}"
            )
        if missing:
            raise InputError(
                f"image '{missing[0]}' has no box for part '{part}': every image needs a box for "
                "every part; add it, or choose other parts"
            )
        grouped[part] = [entry[part] for entry in entries]
    return grouped


def read_boxes(path: Path) -> BoxesFile:
    """Read and check a boxes file (see :func:`parse_boxes`).

    Raises:
        InputError: The file is missing, unreadable, not JSON or malformed.
    """
    missing = f"boxes file '{path}' does not exist: check its path"
    require_path(path, "file", "a boxes file (JSON)", missing, error=InputError)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "fix the file"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read boxes file '{path}': {exc}") from exc
    return parse_boxes(data, f"'{path}'")


def _file_of(key: str) -> Path:
    """The file part of a key ``A.jpg`` or ``A.jpg#label``."""
    return Path(key.split("#", 1)[0])


def _matches(key: str, path: Path) -> bool:
    wanted = _file_of(key).parts
    return path.parts[-len(wanted) :] == wanted


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def resolve_images(
    boxes_file: BoxesFile, given: Sequence[Path], boxes_path: Path
) -> list[tuple[str, Path]]:
    """Pair each image key of the boxes file with its file, in the file's order.

    Images given as files must each have an entry; keys are looked up among those files and in
    the folders given (every key must be found there), or beside the boxes file when nothing is
    given. A key ``A.jpg#label`` names one object of the photo ``A.jpg``.

    Raises:
        InputError: A path does not exist, a file has no entry, or a key matches no image (or
            several).
    """
    for path in given:
        if not path.exists():
            raise InputError(f"'{path}' does not exist: check the image path")
    files = [p for p in given if not p.is_dir()]
    folders = [p for p in given if p.is_dir()]
    for path in files:
        if not any(_matches(key, path) for key in boxes_file.images):
            raise InputError(
                f"image '{path}' has no entry in the boxes file: add its boxes under 'images' "
                f"with the key '{path.name}', or leave it out"
            )
    if not given:
        return [(key, boxes_path.parent / _file_of(key)) for key in boxes_file.images]
    searched = [f for folder in folders for f in _image_files(folder)]
    chosen = []
    for key in boxes_file.images:
        found = _find(key, files, searched, folders)
        if found is not None:
            chosen.append((key, found))
    return chosen


def _find(key: str, files: list[Path], searched: list[Path], folders: list[Path]) -> Path | None:
    """The image of ``key``: among ``files``, else in the ``folders`` (``searched``: theirs).

    None when only files were given and none of them is the key's.
    """
    found = [p for p in files if _matches(key, p)] or [p for p in searched if _matches(key, p)]
    if len(found) > 1:
        shown = ", ".join(str(p) for p in found[:3])
        raise InputError(
            f"'{_file_of(key)}' matches {len(found)} images ({shown}): write its path "
            "relative to the folder in the boxes file"
        )
    if not found and folders:
        raise InputError(
            f"no image under {', '.join(map(str, folders))} is named '{_file_of(key)}' "
            f"(boxes file key '{key}'): fix the key or the image folder"
        )
    return found[0] if found else None


@dataclass
class BoxedImages:
    """The images of a boxes file that could be read, with their boxes grouped by part."""

    #: The boxes file's key of each image (``A.jpg`` or ``A.jpg#label``).
    keys: list[str]
    #: RGB uint8 originals.
    pictures: list[np.ndarray]
    #: ``{part: [box in image 0, box in image 1, ...]}`` in original pixels.
    boxes: dict[str, list[SourceBox]]
    #: Per image, the part of the photo to use, or None.
    crops: list[SourceBox | None]
    #: Per image, the region random boxes are drawn in, or None.
    objects: list[SourceBox | None]
    #: ``(key, why)`` for each image that could not be read.
    skipped: list[tuple[str, str]]


def read_boxed_images(
    boxes_path: Path, images: Sequence[Path] = (), parts: Sequence[str] | None = None
) -> BoxedImages:
    """Read a boxes file and the images it names (see :func:`resolve_images`).

    Args:
        boxes_path: The boxes file.
        images: Image files or folders to find the images in (default: beside the boxes file).
        parts: The parts to mask (default: every part, in order of first appearance).

    Raises:
        InputError: The boxes file or the images are unusable, fewer than two images can be read,
            or an image lacks a box for a part.
    """
    boxes_file = read_boxes(boxes_path)
    chosen = resolve_images(boxes_file, images, boxes_path)
    # A photo that holds several objects (keys A.jpg#a, A.jpg#b) is read once.
    read, failed = read_each(list(dict.fromkeys(path for _, path in chosen)), read_image)
    cache, why = dict(read), dict(failed)
    keys = [key for key, path in chosen if path in cache]
    pictures = [cache[path] for key, path in chosen if path in cache]
    skipped = [(key, why[path]) for key, path in chosen if path in why]
    if len(keys) < 2:
        raise InputError(
            f"only {len(keys)} of {len(chosen)} images could be read; correspondence needs at "
            "least 2: check the image paths"
        )
    boxes = boxes_by_part([boxes_file.images[key] for key in keys], keys, parts)
    crops = [boxes_file.crops.get(key) for key in keys]
    objects = [boxes_file.objects.get(key) for key in keys]
    return BoxedImages(keys, pictures, boxes, crops, objects, skipped)


# --- the analysis -------------------------------------------------------------------------------


#: What :meth:`CorrespondenceResult.to_json` writes, and its version.
SCHEMA = "onnxdeconv.correspondence/1"
#: The columns of :meth:`CorrespondenceResult.rows`.
CSV_FIELDS = (
    "part",
    "layer",
    "alias",
    "kind",
    "delta",
    "normalised",
    "std",
    "std_over",
    "vs_random",
    "changed",
    "features",
    "images",
    "ordered_pairs",
)


@dataclass
class CorrespondenceResult:
    """Δ per part and layer, and the random baseline, for one set of images."""

    #: Tensor names of the layers, in the order given.
    layers: list[str]
    #: Features (D) per layer.
    features: dict[str, int]
    parts: list[str]
    #: The images as the model sees them (resized and cropped), RGB uint8, unmasked.
    fitted: list[np.ndarray]
    #: Each part's box in every image, in input pixels: ``{part: [N, 4]}``.
    boxes: dict[str, np.ndarray]
    #: Where the random boxes were drawn in each image, in input pixels, ``[N, 4]``.
    regions: np.ndarray
    #: The random boxes in input pixels, ``[draws, N, 4]``.
    random_boxes: np.ndarray
    seed: int
    #: ``{part: {layer: Score}}``.
    part_scores: dict[str, dict[str, Score]] = field(default_factory=dict)
    #: ``{layer: [Score of each random draw]}``.
    random_scores: dict[str, list[Score]] = field(default_factory=dict)
    #: The images' names.
    names: list[str] = field(default_factory=list)
    #: Per image, the part of the photo used (original pixels), or None.
    crops: list[SourceBox | None] = field(default_factory=list)
    #: Per image, the region random boxes were drawn in (original pixels), or None.
    objects: list[SourceBox | None] = field(default_factory=list)
    #: A short alias per layer tensor that has one.
    aliases: dict[str, str] = field(default_factory=dict)
    #: A label per layer: alias, tensor name and shape.
    layer_labels: dict[str, str] = field(default_factory=dict)
    #: The model's file, where it came from one.
    model: str | None = None
    #: The execution provider that ran the forward passes.
    provider: str = ""

    @property
    def image_count(self) -> int:
        """N, the number of images."""
        return len(self.fitted)

    @property
    def draws(self) -> int:
        """How many random draws."""
        return len(self.random_boxes)

    def random_mean(self, layer: str) -> tuple[float, float]:
        """Mean and standard deviation of the normalised Δ over the random draws (NaN if none)."""
        values = np.array([s.normalised for s in self.random_scores.get(layer, [])])
        if not values.size:
            return math.nan, math.nan
        return float(values.mean()), float(values.std())

    def random_changed(self, layer: str) -> float:
        """The mean fraction of features the random boxes change (NaN without draws)."""
        scores = self.random_scores.get(layer, [])
        return float(np.mean([s.changed for s in scores])) if scores else math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One row (:data:`CSV_FIELDS`) per part and layer, then the random baseline per layer."""
        count = self.image_count
        common = {"images": count, "ordered_pairs": count * (count - 1)}
        rows: list[dict[str, Any]] = []
        for part in self.parts:
            for layer in self.layers:
                found = self.part_scores[part][layer]
                baseline, _ = self.random_mean(layer)
                rows.append(
                    {
                        "part": part,
                        "layer": layer,
                        "alias": self.aliases.get(layer, ""),
                        "kind": "part",
                        "delta": found.total,
                        "normalised": found.normalised,
                        "std": found.pair_std,
                        "std_over": plural(count * (count - 1) // 2, "image pair"),
                        "vs_random": found.normalised / baseline if baseline > 0 else None,
                        "changed": found.changed,
                        "features": self.features[layer],
                        **common,
                    }
                )
        for layer in self.layers:
            scores = self.random_scores.get(layer, [])
            if not scores:
                continue
            mean, std = self.random_mean(layer)
            rows.append(
                {
                    "part": "random",
                    "layer": layer,
                    "alias": self.aliases.get(layer, ""),
                    "kind": "random",
                    "delta": float(np.mean([s.total for s in scores])),
                    "normalised": mean,
                    "std": std,
                    "std_over": plural(len(scores), "random draw"),
                    "vs_random": 1.0,
                    "changed": self.random_changed(layer),
                    "features": self.features[layer],
                    **common,
                }
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready values: settings, boxes in input pixels and :meth:`rows`.

        Non-finite numbers stay as they are: write them with a strict writer
        (:func:`onnxdeconv.outputs.write_json`).
        """
        names = self.names or [f"image {i}" for i in range(self.image_count)]
        crops = self.crops or [None] * len(names)
        objects = self.objects or [None] * len(names)
        return {
            "schema": SCHEMA,
            "model": self.model,
            "images": names,
            "parts": list(self.parts),
            "layers": [
                {"name": layer, "label": self.layer_labels.get(layer, layer)}
                for layer in self.layers
            ],
            "pairs": "ordered",
            "sign_of_zero": "0 is its own sign: it differs from -1 and +1",
            "mask_value": MASK_VALUE,
            "crops": {
                key: list(box) for key, box in zip(names, crops, strict=True) if box is not None
            },
            "random": {
                "draws": self.draws,
                "seed": self.seed,
                "regions": {
                    key: list(box)
                    for key, box in zip(names, objects, strict=True)
                    if box is not None
                },
            },
            "boxes_in_input_pixels": {
                part: {key: [int(v) for v in self.boxes[part][i]] for i, key in enumerate(names)}
                for part in self.parts
            },
            "table": self.rows(),
        }

    def text_table(self) -> str:
        """The normalised Δ per part and layer (± std over image pairs), then random, as text."""
        count = self.image_count
        header = ["part", *(self.layer_labels.get(layer, layer) for layer in self.layers)]
        lines = []
        for part in self.parts:
            cells = [part]
            for layer in self.layers:
                found = self.part_scores[part][layer]
                cells.append(
                    f"{found.normalised:.3f} ± {found.pair_std:.3f}  ({found.changed:.0%} changed)"
                )
            lines.append(cells)
        if self.draws:
            cells = ["random"]
            for layer in self.layers:
                mean, std = self.random_mean(layer)
                moved = self.random_changed(layer)
                cells.append(f"{mean:.3f} ± {std:.3f}  ({moved:.0%} changed)")
            lines.append(cells)
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        text = [
            f"normalised Δ: the fraction of feature signs that differ, over {count * (count - 1)} "
            f"ordered pairs of {count} images (lower = more consistent)",
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        ]
        text += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        baseline = (
            f"; random: mean ± std over {plural(self.draws, 'draw')} (seed {self.seed})"
            if self.draws
            else ""
        )
        pairs = plural(count * (count - 1) // 2, "image pair")
        text.append(f"parts: ± std over the {pairs}{baseline}")
        return "\n".join(text)


def layer_label(prepared: PreparedModel, layer: str) -> str:
    """``alias (tensor, CxHxW)``, or ``tensor (CxHxW)`` for a layer without another alias."""
    shape = "x".join(map(str, prepared.info[layer].per_sample))
    alias = prepared.alias_of.get(layer)
    return f"{alias} ({layer}, {shape})" if alias and alias != layer else f"{layer} ({shape})"


def correspondence_scores(
    prepared: PreparedModel,
    images: Sequence[np.ndarray],
    boxes: Mapping[str, Sequence[Sequence[float]]],
    layers: Sequence[str] | None = None,
    preprocessing: Preprocessing = PRESETS["imagenet"],
    random_draws: int = 10,
    seed: int = 0,
    *,
    crops: Sequence[Sequence[float] | None] | None = None,
    objects: Sequence[Sequence[float] | None] | None = None,
    names: Sequence[str] | None = None,
    device: Device = "auto",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> CorrespondenceResult:
    """Measure how consistently ``layers`` respond to masking each part across ``images``.

    Every image (or its crop) is resized and centre-cropped as
    :func:`onnxdeconv.inputs.fit_image` does; each part's box (given in the original image's
    pixels) is mapped the same way and filled with grey (pixel 128, before preprocessing). The
    random baseline masks, in each image, a box of the mean size of that image's part boxes at a
    random place inside the image's object region (the whole input where none is given),
    ``random_draws`` times. The originals and every masked copy run through one
    :class:`~onnxdeconv.runtime.ForwardRunner` that returns the layers.

    Args:
        prepared: The model, from :func:`onnxdeconv.prepare`.
        images: The original images, RGB uint8 ``[H, W, 3]``, any size.
        boxes: ``{part: [box in image 0, box in image 1, ...]}``, boxes ``(x0, y0, x1, y1)``.
        layers: Tensor names or aliases (default: :func:`correspondence_layers`).
        preprocessing: How pixels become input values.
        random_draws: How many random boxes per image (0 for no baseline).
        seed: Seed of the random boxes.
        crops: Per image, the part of the photo to use (original pixels, rounded to whole
            pixels), or None for all of it; boxes stay in the photo's coordinates.
        objects: Per image, the region random boxes are drawn in (original pixels), or None.
        names: The images' names, for messages.
        device: Where to run.
        batch_size: Inputs per run.
        progress: Called with the number of inputs done so far, of
            ``len(images) * (1 + len(boxes) + random_draws)``: the originals and every masked
            copy.

    Raises:
        InputError: Fewer than two images, a box outside its image or outside the part the model
            sees, or an image the model cannot take.
    """
    count = len(images)
    names = list(names) if names is not None else [f"image {i}" for i in range(count)]
    objects = list(objects) if objects is not None else [None] * count
    crops = list(crops) if crops is not None else [None] * count
    _check_counts(count, boxes)
    layer_names = _chosen_layers(prepared, layers)
    layout, channels = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
    size = (int(spatial[0]), int(spatial[1]))

    fitted, input_boxes, regions, sizes = _fit_all(images, boxes, crops, objects, names, size)
    chance = random_boxes(sizes, regions, random_draws, seed)

    # Jobs: the originals, then each part's masked copies, then each random draw's.
    jobs: list[tuple[int, Box | None]] = [(i, None) for i in range(count)]
    for part in boxes:
        jobs += [(i, _box(input_boxes[part][i])) for i in range(count)]
    for draw in range(random_draws):
        jobs += [(i, _box(chance[draw, i])) for i in range(count)]
    dtype = prepared.loaded.input_dtype

    def build(start: int, stop: int) -> np.ndarray:
        batch = []
        for image, box in jobs[start:stop]:
            rgb = fitted[image] if box is None else mask_box(fitted[image], box)
            batch.append(normalise(rgb, preprocessing, layout, channels, dtype))
        return np.concatenate(batch)

    # Only the layers are read: the rest of a classifier would only slow loading.
    runner = ForwardRunner(prepared, expose=layer_names, keep_outputs=False, device=device)
    outputs = runner.run(build, layer_names, count=len(jobs), chunk=batch_size, progress=progress)
    features = {name: value.reshape(len(jobs), -1) for name, value in outputs.items()}
    inverse = prepared.alias_of
    path = prepared.loaded.path
    result = CorrespondenceResult(
        layers=layer_names,
        features={name: int(values.shape[1]) for name, values in features.items()},
        parts=list(boxes),
        fitted=fitted,
        boxes=input_boxes,
        regions=regions,
        random_boxes=chance,
        seed=seed,
        names=names,
        crops=[_source_or_none(crop) for crop in crops],
        objects=[_source_or_none(region) for region in objects],
        aliases={name: inverse[name] for name in layer_names if name in inverse},
        layer_labels={name: layer_label(prepared, name) for name in layer_names},
        model=str(path) if path else None,
        provider=runner.provider,
    )
    _score_groups(result, features)
    return result


def _check_counts(count: int, boxes: Mapping[str, Sequence[Sequence[float]]]) -> None:
    if count < 2:
        raise InputError(f"correspondence needs at least 2 images, got {count}: give more images")
    if not boxes:
        raise InputError("no parts to mask: give at least one part box per image")
    for part, per_image in boxes.items():
        if len(per_image) != count:
            raise InputError(
                f"part '{part}' has {len(per_image)} boxes for {count} images: give one per image"
            )


def _fit_all(
    images: Sequence[np.ndarray],
    boxes: Mapping[str, Sequence[Sequence[float]]],
    crops: Sequence[Sequence[float] | None],
    objects: Sequence[Sequence[float] | None],
    names: Sequence[str],
    size: tuple[int, int],
) -> tuple[list[np.ndarray], dict[str, np.ndarray], np.ndarray, list[tuple[int, int]]]:
    """Fit every image (or its crop) to ``size`` and map its boxes and region onto the input.

    Returns:
        The fitted images, ``{part: [N, 4]}`` input boxes, ``[N, 4]`` regions, and per image
        the mean ``(height, width)`` of its part boxes (the size of its random boxes).
    """
    count = len(images)
    fitted = []
    input_boxes = {part: np.zeros((count, 4), np.int64) for part in boxes}
    regions = np.zeros((count, 4), np.int64)
    sizes = []
    for index, (rgb, name) in enumerate(zip(images, names, strict=True)):
        rgb, origin = _cropped(rgb, crops[index], name)
        geometry = fit_geometry(rgb.shape[0], rgb.shape[1], size)
        fitted.append(fit_image(rgb, size))
        for part, per_image in boxes.items():
            input_boxes[part][index] = _map_box(
                per_image[index], origin, geometry, images[index].shape, part, name
            )
        region = objects[index]
        regions[index] = (
            (0, 0, size[1], size[0])
            if region is None
            else _map_box(region, origin, geometry, images[index].shape, "object", name)
        )
        stacked = np.stack([input_boxes[part][index] for part in boxes])
        sizes.append(
            (
                max(1, round(float((stacked[:, 3] - stacked[:, 1]).mean()))),
                max(1, round(float((stacked[:, 2] - stacked[:, 0]).mean()))),
            )
        )
    return fitted, input_boxes, regions, sizes


def _cropped(
    rgb: np.ndarray, crop: Sequence[float] | None, name: str
) -> tuple[np.ndarray, tuple[float, float]]:
    """The part of ``rgb`` inside ``crop`` (rounded to whole pixels), and its top-left corner."""
    if crop is None:
        return rgb, (0.0, 0.0)
    x0, y0, x1, y1 = _source_box_inside(crop, rgb.shape, "crop", name)
    part = rgb[_round(y0) : _round(y1), _round(x0) : _round(x1)]
    return part, (float(_round(x0)), float(_round(y0)))


def _score_groups(result: CorrespondenceResult, features: Mapping[str, np.ndarray]) -> None:
    """Score each group of masked copies (parts, then random draws) against the originals."""
    count, parts = result.image_count, result.parts
    for name, values in features.items():
        # Signs of fp16 differences are exact in float32: a - b is zero only where a == b.
        original = values[:count].astype(np.float32)
        result.random_scores[name] = []
        for group in range(1, len(values) // count):
            masked = values[group * count : (group + 1) * count].astype(np.float32)
            found = score(original - masked)
            if group <= len(parts):
                result.part_scores.setdefault(parts[group - 1], {})[name] = found
            else:
                result.random_scores[name].append(found)
        logger.info(
            "%s: %s",
            name,
            {part: round(result.part_scores[part][name].normalised, 4) for part in parts},
        )


def _source_box_inside(
    box: Sequence[float], shape: tuple[int, ...], part: str, name: str
) -> SourceBox:
    height, width = shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height or x0 >= x1 or y0 >= y1:
        raise InputError(
            f"box '{part}' [{', '.join(f'{v:g}' for v in box)}] of '{name}' is not inside "
            f"the {width}x{height} image: give [x0, y0, x1, y1] with 0 <= x0 < x1 <= "
            f"{width} and 0 <= y0 < y1 <= {height}"
        )
    return x0, y0, x1, y1


def _map_box(
    box: Sequence[float],
    origin: tuple[float, float],
    geometry: FitGeometry,
    shape: tuple[int, ...],
    part: str,
    name: str,
) -> Box:
    x0, y0, x1, y1 = _source_box_inside(box, shape, part, name)
    left, top = origin
    mapped = geometry.to_input((x0 - left, y0 - top, x1 - left, y1 - top))
    if mapped is None:
        size_h, size_w = geometry.size
        raise InputError(
            f"box '{part}' of '{name}' lies outside the part of the image the model sees "
            f"(x {left + geometry.left / geometry.scale_x:.0f}..."
            f"{left + (geometry.left + size_w) / geometry.scale_x:.0f}, "
            f"y {top + geometry.top / geometry.scale_y:.0f}..."
            f"{top + (geometry.top + size_h) / geometry.scale_y:.0f} of the original): move it, "
            "or crop or choose another image"
        )
    return mapped


def plural(count: int, noun: str) -> str:
    """``1 image pair``, ``3 image pairs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _source_or_none(box: Sequence[float] | None) -> SourceBox | None:
    return None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _chosen_layers(prepared: PreparedModel, layers: Sequence[str] | None) -> list[str]:
    if not layers:
        return correspondence_layers(prepared)
    return list(dict.fromkeys(prepared.resolve(layer) for layer in layers))


def _box(values: np.ndarray) -> Box:
    return (int(values[0]), int(values[1]), int(values[2]), int(values[3]))
