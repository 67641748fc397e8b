"""The picture ``onnxdeconv correspondence`` writes: the masked parts and Δ against random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onnxdeconv.analysis.correspondence import MASK_VALUE, CorrespondenceResult, plural
from onnxdeconv.render.picture import plain_text

PART_COLOURS = (
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#ff7f00",
    "#984ea3",
    "#a65628",
    "#f781bf",
    "#17becf",
)
RANDOM_COLOUR = "#9e9e9e"


def part_colour(index: int) -> str:
    """The colour of the ``index``-th part, in the boxes and the bars."""
    return PART_COLOURS[index % len(PART_COLOURS)]


def correspondence_title(result: CorrespondenceResult, model_name: str) -> str:
    """The picture's title: the model, how many parts and images, and how they were masked."""
    return (
        f"{model_name} · correspondence of {len(result.parts)} parts over "
        f"{result.image_count} images (grey {MASK_VALUE} masks; random: {result.draws} draws, "
        f"seed {result.seed})"
    )


@plain_text
def correspondence_figure(
    result: CorrespondenceResult,
    names: Sequence[str] | None = None,
    layer_labels: Mapping[str, str] | None = None,
    title: str = "",
    max_images: int = 8,
) -> Figure:
    """Draw the images with their part boxes, and per layer a bar chart of Δ per part and random.

    Args:
        result: What :func:`~onnxdeconv.analysis.correspondence.correspondence_scores` found.
        names: The images' names, as titles (default: the result's).
        layer_labels: A short label per layer tensor (default: the result's).
        title: The figure title.
        max_images: Show at most this many images (the bars use all of them).
    """
    labels = dict(layer_labels or result.layer_labels)
    names = names or result.names or [f"image {i}" for i in range(result.image_count)]
    shown = min(result.image_count, max_images)
    layers = len(result.layers)
    width = max(2.3 * shown, 4.6 * layers, 8.0)
    figure = plt.figure(figsize=(width, 2.6 + 3.9 + (0.5 if title else 0)))
    grid = figure.add_gridspec(2, 1, height_ratios=(2.4, 3.6), hspace=0.3)
    top = grid[0].subgridspec(1, shown, wspace=0.06)
    bottom = grid[1].subgridspec(1, layers, wspace=0.28)
    for index in range(shown):
        _image_panel(figure.add_subplot(top[0, index]), result, index, names[index])
    for index, layer in enumerate(result.layers):
        _bar_panel(figure.add_subplot(bottom[0, index]), result, layer, labels.get(layer, layer))
    handles = [
        Rectangle((0, 0), 1, 1, fill=False, edgecolor=part_colour(i), linewidth=2)
        for i in range(len(result.parts))
    ]
    legend = [f"{part} box" for part in result.parts]
    if result.draws:
        handles.append(
            Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linestyle="--", linewidth=1.5)
        )
        legend.append("one random box (draw 1)")
        if _has_regions(result):
            handles.append(
                Rectangle((0, 0), 1, 1, fill=False, edgecolor=RANDOM_COLOUR, linestyle=":")
            )
            legend.append("where random boxes are drawn")
    figure.legend(handles, legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.075, right=0.99, bottom=0.13, top=0.9 if title else 0.95)
    return figure


def _image_panel(axis: Axes, result: CorrespondenceResult, index: int, name: str) -> None:
    picture = result.fitted[index]
    axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(name, fontsize=8)
    if result.draws:
        if _has_regions(result):
            axis.add_patch(_outline(result.regions[index], RANDOM_COLOUR, ":", 1.2))
        # Black dashes on a white line stay visible on dark and light images alike.
        axis.add_patch(_outline(result.random_boxes[0, index], "white", "-", 1.5))
        axis.add_patch(_outline(result.random_boxes[0, index], "black", "--", 1.5))
    for part_index, part in enumerate(result.parts):
        axis.add_patch(_outline(result.boxes[part][index], part_colour(part_index), "-", 2.0))


def _has_regions(result: CorrespondenceResult) -> bool:
    height, width = result.fitted[0].shape[:2]
    return bool(np.any(result.regions != np.array([0, 0, width, height])))


def _outline(box: Sequence[int] | np.ndarray, colour: str, style: str, width: float) -> Rectangle:
    x0, y0, x1, y1 = (int(v) for v in box)
    # Pixel i covers [i - 0.5, i + 0.5) in imshow coordinates.
    return Rectangle(
        (x0 - 0.5, y0 - 0.5),
        x1 - x0,
        y1 - y0,
        fill=False,
        edgecolor=colour,
        linestyle=style,
        linewidth=width,
    )


def _bar_panel(axis: Axes, result: CorrespondenceResult, layer: str, label: str) -> None:
    names, values, errors, colours, changed = [], [], [], [], []
    for index, part in enumerate(result.parts):
        found = result.part_scores[part][layer]
        names.append(part)
        values.append(found.normalised)
        errors.append(found.pair_std)
        colours.append(part_colour(index))
        changed.append(found.changed)
    mean, std = result.random_mean(layer)
    if result.draws:
        names.append(f"random\n({result.draws} draws)")
        values.append(mean)
        errors.append(std)
        colours.append(RANDOM_COLOUR)
        changed.append(float(np.mean([s.changed for s in result.random_scores[layer]])))
    positions = [float(i) for i in range(len(values))]
    axis.bar(positions, values, color=colours, yerr=errors, capsize=4, width=0.65)
    if result.draws:
        axis.patches[-1].set_hatch("//")
        axis.axhline(mean, color=RANDOM_COLOUR, linestyle="--", linewidth=1)
    top = max(v + e for v, e in zip(values, errors, strict=True))
    for position, value, error, moved in zip(positions, values, errors, changed, strict=True):
        axis.text(
            position,
            value + error + 0.02 * top,
            f"{value:.3f}\n{moved:.0%} changed",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    axis.set_ylim(0, top * 1.25)
    axis.set_xticks(positions)
    axis.set_xticklabels(names, fontsize=8)
    axis.set_ylabel("normalised Δ\n(fraction of signs that differ)", fontsize=8)
    axis.tick_params(axis="y", labelsize=7)
    count = result.image_count
    axis.set_title(
        f"{label} · {result.features[layer]} features\nlower = more consistent · "
        f"± over {plural(count * (count - 1) // 2, 'image pair')} (random: over draws)",
        fontsize=8,
    )
