"""Which preprocessing a classifier expects: rank the presets by how confident the model is.

A model that is fed its images the wrong way (RGB for BGR, 0-1 for 0-255) still predicts a class,
just with little confidence and usually the wrong one. Running the same photos under every preset
and keeping the one under which the model is most sure of its top class finds the right one for
almost every classifier trained on natural images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxdeconv import inputs
from onnxdeconv.analysis.occlusion import to_probabilities
from onnxdeconv.errors import InputError
from onnxdeconv.inputs import PRESETS, Preprocessing
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.runtime import Device, ForwardRunner

#: Certainties closer than this to the best one do not tell the candidates apart.
CLOSE = 0.01
#: The candidate name of the preprocessing a model declares in its metadata.
DECLARED = "declared"


@dataclass
class PreprocessingReport:
    """The model's class probabilities on each image under each candidate preprocessing.

    The recommended candidate is the one under which the model is most certain: the highest
    :attr:`certainty`, the mean over the images of ``1 - entropy / log(classes)`` of the class
    probabilities (softmax applied to scores that are not probabilities). The entropy weighs the
    whole distribution: a wrongly scaled input can make a few images look very confident in their
    top class while the rest spread out, which the mean top-1 probability alone rewards.
    """

    #: Candidate names (presets, ``custom``, ``declared``), in the order of the arrays' first axis.
    candidates: list[str]
    preprocessings: list[Preprocessing]
    #: The image files, in the order of the arrays' second axis.
    images: list[str]
    #: ``[candidates, images, classes]`` class probabilities.
    probabilities: np.ndarray
    #: Whether softmax turned the model's scores into probabilities.
    softmax_applied: bool
    #: How many classes :attr:`top_classes` keeps per image.
    top: int = 5
    #: The ONNX Runtime provider the model ran on.
    provider: str = ""
    #: ``(image, reason)`` for each image that could not be read and was left out.
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def top_classes(self) -> np.ndarray:
        """``[candidates, images, top]`` class indices, most probable first."""
        order: np.ndarray = np.argsort(-self.probabilities, axis=2, kind="stable")
        return order[:, :, : self.top]

    @property
    def top_probabilities(self) -> np.ndarray:
        """``[candidates, images, top]`` the probabilities of :attr:`top_classes`."""
        values: np.ndarray = np.take_along_axis(self.probabilities, self.top_classes, axis=2)
        return values

    @property
    def certainty(self) -> np.ndarray:
        """``[candidates]``: the mean over the images of ``1 - entropy / log(classes)``."""
        p = self.probabilities
        entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=2)
        values: np.ndarray = (1.0 - entropy / np.log(p.shape[2])).mean(axis=1)
        return values

    @property
    def mean_top1(self) -> np.ndarray:
        """``[candidates]``: the mean over the images of the top-1 probability."""
        values: np.ndarray = self.probabilities.max(axis=2).mean(axis=1)
        return values

    @property
    def close(self) -> list[str]:
        """The other candidates within :data:`CLOSE` of the recommended one's certainty.

        The images do not tell these apart (saturated, or too easy): the choice among them rests
        on what the model was trained with.
        """
        best = self.certainty.max()
        return [
            name
            for name, value in zip(self.candidates, self.certainty, strict=True)
            if name != self.recommended and best - value <= CLOSE
        ]

    @property
    def recommended(self) -> str:
        """The candidate under which the model is most certain.

        ``declared`` (the model's own metadata), when it comes within :data:`CLOSE` of the best.
        """
        best = float(self.certainty.max())
        declared = self.candidates.index(DECLARED) if DECLARED in self.candidates else None
        if declared is not None and best - float(self.certainty[declared]) <= CLOSE:
            return DECLARED
        return self.candidates[int(self.certainty.argmax())]

    def preprocessing(self, name: str) -> Preprocessing:
        """The preprocessing of candidate ``name``."""
        return self.preprocessings[self.candidates.index(name)]

    def to_json(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The recommendation and, per candidate, its values and top classes on each image."""

        def name(index: int) -> str | None:
            return labels[index] if labels is not None and 0 <= index < len(labels) else None

        rows = []
        for c, candidate in enumerate(self.candidates):
            chosen = self.preprocessings[c]
            per_image = [
                {
                    "image": image,
                    "top": [
                        {"class": int(k), "name": name(int(k)), "probability": float(p)}
                        for k, p in zip(
                            self.top_classes[c, i], self.top_probabilities[c, i], strict=True
                        )
                    ],
                }
                for i, image in enumerate(self.images)
            ]
            rows.append(
                {
                    "name": candidate,
                    "preprocessing": inputs.preprocessing_json(chosen),
                    "certainty": float(self.certainty[c]),
                    "mean_top1": float(self.mean_top1[c]),
                    "images": per_image,
                }
            )
        return {
            "recommended": self.recommended,
            "close": self.close,
            "criterion": "highest certainty: mean over the images of 1 - entropy/log(classes)",
            "softmax_applied": self.softmax_applied,
            "skipped_images": [{"image": image, "reason": why} for image, why in self.skipped],
            "candidates": rows,
        }


def class_output(prepared: PreparedModel) -> tuple[str, int]:
    """The model's class output (its last output) and its number of classes.

    Raises:
        InputError: The last output is not ``[N, classes]`` or ``[N, classes, 1, 1]``.
    """
    name = prepared.loaded.model.graph.output[-1].name
    info = prepared.info.get(name)
    shape = tuple(info.per_sample) if info is not None else ()
    if len(shape) not in (1, 3) or any(d != 1 for d in shape[1:]) or shape[0] < 2:
        raise InputError(
            f"the model's last output '{name}' has per-sample shape {list(shape)}, not "
            "[classes] or [classes, 1, 1]: it gives no class scores, so there is nothing to rank"
        )
    return name, int(shape[0])


def rank_preprocessing(
    prepared: PreparedModel,
    images: Sequence[str | Path],
    *,
    candidates: Mapping[str, Preprocessing] | None = None,
    top: int = 5,
    device: Device = "auto",
    progress: Callable[[int], None] | None = None,
) -> PreprocessingReport:
    """Run ``images`` under each candidate preprocessing and rank the candidates.

    Args:
        prepared: A classifier, prepared for its input size.
        images: Image files.
        candidates: Name and preprocessing of each candidate; default: every preset (for an
            integer pixel input, only ``raw``: the model preprocesses itself).
        top: How many classes to keep per image.
        device: Where ONNX Runtime runs.
        progress: Called with the number of images done after each candidate.

    Unreadable images are left out and listed in :attr:`PreprocessingReport.skipped`.

    Raises:
        InputError: The model has no class output, or no image is given or readable.
    """
    output, classes = class_output(prepared)
    if not images:
        raise InputError("give at least one image to rank preprocessings on", parameter="images")
    chosen = dict(candidates if candidates is not None else PRESETS)
    if prepared.loaded.input_dtype.kind in "iu":
        chosen = {name: p for name, p in chosen.items() if p.is_raw} or {"raw": PRESETS["raw"]}
    spatial = _spatial_size(prepared.input_shape)
    layout, channels = inputs.image_layout(prepared.input_shape)
    # Each image is decoded once, and preprocessed once per candidate.
    read, failed = inputs.read_each(
        list(images), lambda path: inputs.fit_image(inputs.read_image(path), spatial)
    )
    skipped = [(str(path), why) for path, why in failed]
    if not read:
        raise inputs.none_readable(len(images), "given", skipped)
    dtype = prepared.loaded.input_dtype
    runner = ForwardRunner(prepared, device=device)
    all_scores = []
    for preprocessing in chosen.values():
        batch = np.concatenate(
            [inputs.normalise(rgb, preprocessing, layout, channels, dtype) for _, rgb in read]
        )
        all_scores.append(runner.run(batch, [output])[output].reshape(len(read), -1))
        if progress is not None:
            progress(len(images))
    probabilities, applied = to_probabilities(np.concatenate(all_scores))
    return PreprocessingReport(
        candidates=list(chosen),
        preprocessings=list(chosen.values()),
        images=[str(path) for path, _ in read],
        probabilities=probabilities.reshape(len(chosen), len(read), -1),
        softmax_applied=applied,
        top=min(top, classes),
        provider=runner.provider,
        skipped=skipped,
    )


def _spatial_size(per_sample: tuple[int, ...]) -> tuple[int, int]:
    layout, _ = inputs.image_layout(per_sample)
    height, width = per_sample[1:3] if layout == "NCHW" else per_sample[0:2]
    return int(height), int(width)
