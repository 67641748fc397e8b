"""The picture ``onnxdeconv invariance`` writes: feature distances and probabilities (Fig. 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from onnxdeconv.analysis.invariance import (
    IDENTITY,
    UNITS,
    Border,
    InvarianceCurves,
    TransformKind,
    transform_image,
)
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.render.picture import plain_text

Distance = Literal["relative", "euclidean"]
#: Row titles, as the paper names the transforms.
ROW_TITLES: dict[TransformKind, str] = {
    "translate": "vertical translation",
    "scale": "scale",
    "rotate": "rotation",
}
DISTANCE_LABELS: dict[Distance, str] = {
    "relative": "||f(Tx) - f(x)|| / ||f(x)||",
    "euclidean": "||f(Tx) - f(x)|| (Euclidean)",
}


#: Transformed copies of the first image shown in each row of the picture.
EXAMPLES = 5


def transformed_examples(
    picture: np.ndarray,
    kind: TransformKind,
    amounts: np.ndarray,
    border: Border = "reflect",
    count: int = EXAMPLES,
) -> list[tuple[float, np.ndarray]]:
    """``(amount, transformed picture)`` at ``count`` amounts spread evenly over the sweep."""
    shown = np.unique(np.linspace(0, len(amounts) - 1, count).round().astype(int))
    return [
        (float(amounts[i]), transform_image(picture, kind, float(amounts[i]), border))
        for i in shown
    ]


def examples_for(
    results: Sequence[InvarianceCurves], picture: np.ndarray, border: Border = "reflect"
) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Per transform of ``results``, :func:`transformed_examples` of ``picture`` over its sweep."""
    return {c.kind: transformed_examples(picture, c.kind, c.amounts, border) for c in results}


def layer_titles(prepared: PreparedModel, layers: Sequence[str]) -> dict[str, str]:
    """A panel title per layer tensor: its alias (else its name) and its shape, ``relu1 16x28x28``.

    Args:
        prepared: The model the layers belong to.
        layers: Tensor names.
    """
    aliases = prepared.alias_of
    return {
        name: f"{aliases.get(name, name)} {'x'.join(map(str, prepared.info[name].per_sample))}"
        for name in layers
    }


def example_strip(pictures: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Tile equally sized HxW or HxWx3 uint8 pictures in one row, on dark grey.

    Returns:
        The strip and the gap between tiles, in pixels.
    """
    tiles = [p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in pictures]
    height, width = tiles[0].shape[:2]
    # Dark grey gaps, wide enough to see at any size, part white photos from each other.
    gap = max(2, width // 24)
    strip = np.full((height, len(tiles) * (width + gap) - gap, 3), 64, np.uint8)
    for index, tile in enumerate(tiles):
        left = index * (width + gap)
        strip[:, left : left + width] = tile
    return strip, gap


@plain_text
def invariance_figure(
    rows: Sequence[InvarianceCurves],
    image_names: Sequence[str],
    *,
    layer_titles: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    examples: Mapping[str, Sequence[tuple[float, np.ndarray]]] | None = None,
    distance: Distance = "relative",
    title: str = "",
) -> Figure:
    """One row per transform: example copies, one distance panel per layer, the probability.

    Args:
        rows: One result per transform, all over the same images and layers.
        image_names: The images' names, for the legend (one line per image, same colour in every
            panel).
        layer_titles: Panel title per layer tensor name (default: the tensor name).
        class_names: Class names, to name each image's tracked label in the legend.
        examples: Per transform kind, ``(amount, picture)`` pairs of one transformed image, shown
            as a strip in the first column.
        distance: Plot the ``relative`` distance (divided by the original's norm; one scale per
            row) or the raw ``euclidean`` one (one scale per panel).
        title: The figure title.
    """
    if not rows:
        raise ValueError("no curves to draw")
    layers = rows[0].layers
    with_examples = bool(examples) and all(r.kind in (examples or {}) for r in rows)
    columns = len(layers) + 1 + int(with_examples)
    ratios = ([1.5] if with_examples else []) + [1.0] * (len(layers) + 1)
    legend_columns = min(len(image_names), 3)
    legend_rows = -(-len(image_names) // legend_columns)
    # Margins in inches: matplotlib's constrained layout would find them, at several times the cost.
    top, bottom = 0.65, 0.75 + 0.22 * legend_rows
    width, height = sum(ratios) * 3.3, 2.9 * len(rows) + top + bottom
    figure = plt.figure(figsize=(width, height))
    grid = figure.add_gridspec(
        len(rows),
        columns,
        width_ratios=ratios,
        left=0.6 / width,
        right=1 - 0.2 / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=0.55,
        wspace=0.35,
    )
    colours = plt.get_cmap("tab10")
    titles = layer_titles or {}
    for row, curves in enumerate(rows):
        start = 0
        if with_examples and examples is not None:
            _example_panel(figure.add_subplot(grid[row, 0]), curves.kind, examples[curves.kind])
            start = 1
        values = curves.relative_distances if distance == "relative" else curves.distances
        # Relative distances share one scale per row, so the layers compare at a glance; raw
        # distances of different layers have unrelated scales.
        finite = values[np.isfinite(values)]
        shared = float(finite.max()) * 1.05 if distance == "relative" and finite.size else None
        for column, layer in enumerate(curves.layers):
            axis = figure.add_subplot(grid[row, start + column])
            for image in range(len(values)):
                axis.plot(
                    curves.amounts,
                    values[image, :, column],
                    "o-",
                    ms=2.5,
                    lw=1.2,
                    color=colours(image % 10),
                )
            axis.set_ylim(0, shared if shared else None)
            _decorate(
                axis,
                curves.kind,
                curves.amounts,
                f"{ROW_TITLES[curves.kind]} · {titles.get(layer, layer)}",
            )
            axis.set_ylabel(DISTANCE_LABELS[distance], fontsize=8)
        axis = figure.add_subplot(grid[row, start + len(curves.layers)])
        for image in range(len(curves.probabilities)):
            axis.plot(
                curves.amounts,
                curves.probabilities[image],
                "o-",
                ms=2.5,
                lw=1.2,
                color=colours(image % 10),
            )
        axis.set_ylim(-0.02, 1.02)
        _decorate(axis, curves.kind, curves.amounts, f"{ROW_TITLES[curves.kind]} · P(true label)")
        axis.set_ylabel("probability of the label", fontsize=8)
    handles = [
        Line2D([], [], color=colours(i % 10), marker="o", ms=4, lw=1.5)
        for i in range(len(image_names))
    ]
    figure.legend(
        handles,
        [_legend_entry(rows[0], i, name, class_names) for i, name in enumerate(image_names)],
        loc="lower center",
        bbox_to_anchor=(0.5, 0.1 / height),
        ncols=legend_columns,
        fontsize=8,
        frameon=False,
    )
    if title:
        figure.suptitle(title, fontsize=11, y=1 - 0.15 / height)
    return figure


def _legend_entry(
    curves: InvarianceCurves, image: int, name: str, class_names: Sequence[str] | None
) -> str:
    label = int(curves.labels[image])
    named = class_names[label] if class_names and label < len(class_names) else f"class {label}"
    # ImageNet names list synonyms ("tabby, tabby cat"); the first one is enough for a legend.
    named = named.split(",")[0].strip() or named
    return f"{name}: {named} (p = {curves.original_probabilities[image]:.2f})"


def _decorate(axis: Axes, kind: TransformKind, amounts: np.ndarray, title: str) -> None:
    axis.axvline(IDENTITY[kind], color="0.6", lw=0.8, ls=":")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(UNITS[kind], fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)
    low, high = float(amounts.min()), float(amounts.max())
    if kind == "rotate" and high - low >= 180:
        axis.set_xticks(np.arange(np.ceil(low / 90) * 90, high + 1e-9, 90))


def _example_panel(
    axis: Axes, kind: TransformKind, pairs: Sequence[tuple[float, np.ndarray]]
) -> None:
    pictures = [picture for _, picture in pairs]
    strip, gap = example_strip(pictures)
    width = pictures[0].shape[1]
    axis.imshow(strip, interpolation="nearest" if width < 64 else "antialiased")
    centres = [i * (width + gap) + (width - 1) / 2 for i in range(len(pairs))]
    axis.set_xticks(centres, [f"{amount:g}" for amount, _ in pairs], fontsize=7)
    axis.set_yticks([])
    axis.set_xlabel(UNITS[kind], fontsize=8)
    axis.set_title(f"{ROW_TITLES[kind]}: first image", fontsize=9)
    for spine in axis.spines.values():
        spine.set_visible(False)
