"""The picture ``onnxdeconv project`` writes: the input beside its projections."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onnxdeconv.files import atomic_path

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Panel:
    """One tile of a figure: an HxW or HxWx3 picture (uint8 or float in [0, 1]) and its title."""

    picture: np.ndarray
    title: str


def display_projection(
    projection: np.ndarray, layout: str = "NCHW", bgr: bool = False
) -> np.ndarray:
    """Contrast-normalise one projection for display: zero is mid-grey, the peak is 0 or 1.

    Args:
        projection: One projection in the model's per-sample input layout.
        layout: ``NCHW`` or ``NHWC``: where the channel axis is.
        bgr: Whether the channels are in BGR order (flipped to RGB for display).
    """
    values = np.asarray(projection, np.float32)
    if values.ndim == 3 and layout == "NCHW":
        values = values.transpose(1, 2, 0)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    elif values.ndim == 3 and bgr:
        values = values[..., ::-1]
    magnitude = np.abs(values[values != 0])
    # A projection is sparse and peaky; a high percentile keeps its faint structure visible.
    peak = float(np.percentile(magnitude, 99.9)) if magnitude.size else 0.0
    shown: np.ndarray = np.clip(values / (2 * peak) + 0.5 if peak > 0 else values + 0.5, 0, 1)
    return shown


def show_picture(axis: Axes, picture: np.ndarray, **imshow: Any) -> None:
    """Draw an HxW (gray) or HxWx3 picture pixel for pixel, with no ticks.

    ``imshow`` holds further options of :meth:`~matplotlib.axes.Axes.imshow` (``vmax``, ...).
    """
    axis.imshow(
        picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest", **imshow
    )
    axis.set_xticks([])
    axis.set_yticks([])


def outline_box(axis: Axes, box: Sequence[tuple[int, int]], colour: str, **style: Any) -> None:
    """Outline ``box``, ``((top, bottom), (left, right))`` with the ends exclusive, on a picture.

    ``style`` holds further options of :class:`~matplotlib.patches.Rectangle` (``linestyle``).
    """
    (top, bottom), (left, right) = box
    axis.add_patch(
        Rectangle(
            # Pixel i covers [i - 0.5, i + 0.5) in imshow coordinates.
            (left - 0.5, top - 0.5),
            right - left,
            bottom - top,
            fill=False,
            edgecolor=colour,
            linewidth=style.pop("linewidth", 1.5),
            **style,
        )
    )


def plain_text(build: F) -> F:
    """``build`` a figure with mathtext off: a ``$`` in a name is shown, never parsed as maths.

    Tensor, model, image and class names reach titles and labels as they are; matplotlib would
    read ``$...$`` in them as TeX, and fail on it (``$x^$``) or show something else. Every text
    made while ``build`` runs keeps ``parse_math=False``, so later layout and saving are safe too.
    """

    @functools.wraps(build)
    def plain(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context({"text.parse_math": False}):
            return build(*args, **kwargs)

    return cast(F, plain)


@plain_text
def projection_figure(panels: Sequence[Panel], title: str = "", max_columns: int = 9) -> Figure:
    """Lay out panels in a balanced grid with their titles."""
    rows = max(1, math.ceil(len(panels) / max_columns))
    columns = max(1, math.ceil(len(panels) / rows))
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.7 * rows + (0.4 if title else 0)), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, panel in zip(axes.flat, panels, strict=False):
        gray = panel.picture.ndim == 2
        axis.imshow(
            panel.picture,
            cmap="gray" if gray else None,
            vmin=0,
            vmax=1 if panel.picture.dtype.kind == "f" else 255,
            interpolation="nearest",
        )
        axis.set_title(panel.title, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 110) -> None:
    """Write ``figure`` to ``path`` atomically and release it."""
    try:
        with atomic_path(path) as temp:
            figure.savefig(temp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
