"""The picture ``onnxdeconv evolution`` writes: feature maps through training (Fig. 4)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onnxdeconv.analysis.evolution import EvolutionReport
from onnxdeconv.render.picture import display_projection, plain_text, show_picture

#: Cell size, gap between columns, caption height under a cell, all in inches.
CELL = 1.25
GAP = 0.3
CAPTION = 0.38
LABEL_WIDTH = 1.35
HEADER = 1.05
PLOT_HEIGHT = 2.6
LAYER_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


@plain_text
def evolution_figure(
    report: EvolutionReport,
    *,
    layout: str = "NCHW",
    bgr: bool = False,
    title: str = "",
    image_names: Sequence[str] | None = None,
) -> Figure:
    """Draw one row per (layer, map) and one column per checkpoint, then the stability plot.

    Each cell is the projection of the map's strongest activation over the image set, cut to the
    unit's receptive field and contrast-normalised on its own (mid-grey is zero). Under each cell:
    which image and position it came from, its activation, and its cosine similarity to the cell
    on its left. The bottom panel plots each layer's mean similarity per step against the
    threshold.

    Args:
        report: What :func:`~onnxdeconv.analysis.evolution.trace_evolution` found.
        layout: The model's input layout (``NCHW`` or ``NHWC``).
        bgr: Whether the input channels are BGR (shown as RGB).
        title: The figure's title.
        image_names: Names of the images, to say where each strongest activation is.
    """
    rows = [(name, row) for name in report.layers for row in range(len(report.channels[name]))]
    columns = len(report.labels)
    # One axes in inch units holds every cell: far quicker to draw than an axes per cell.
    pitch_x, pitch_y = CELL + GAP, CELL + CAPTION
    grid_width, grid_height = pitch_x * columns, pitch_y * len(rows)
    width = max(LABEL_WIDTH + grid_width + 0.3, 7.0)
    height = HEADER + grid_height + PLOT_HEIGHT + 0.9
    figure = plt.figure(figsize=(width, height))
    grid = figure.add_axes(
        (
            LABEL_WIDTH / width,
            1 - (HEADER + grid_height) / height,
            grid_width / width,
            grid_height / height,
        )
    )
    grid.set_xlim(0, grid_width)
    grid.set_ylim(grid_height, 0)
    grid.axis("off")
    gray = True
    for index, (name, row) in enumerate(rows):
        stable = report.stability[name]
        top = index * pitch_y
        if row == 0 and index:
            # A line above each layer's first row keeps the layers apart.
            grid.plot(
                [-LABEL_WIDTH + 0.1, grid_width],
                [top - 0.06, top - 0.06],
                color="#999999",
                linewidth=0.6,
                clip_on=False,
            )
        alias = report.aliases.get(name, name)
        grid.text(
            -0.12,
            top + CELL / 2,
            f"{alias}\nmap {report.channels[name][row]}",
            fontsize=8,
            ha="right",
            va="center",
        )
        for column in range(columns):
            trace = report.traces[column][name]
            picture = display_projection(trace.crops[row], layout, bgr)
            gray = gray and picture.ndim == 2
            left = column * pitch_x + GAP / 2
            show_picture(grid, picture, vmin=0, vmax=1, extent=(left, left + CELL, top + CELL, top))
            grid.add_patch(
                Rectangle((left, top), CELL, CELL, fill=False, edgecolor="#bbbbbb", linewidth=0.5)
            )
            pick = trace.picks[row]
            source = _short(image_names[pick.image]) if image_names else f"#{pick.image}"
            where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
            caption = f"{source}{where} a={pick.value:.3g}"
            if column:
                caption += f"\ncos {stable.channel_similarity[row, column - 1]:.2f}"
            grid.text(
                left + CELL / 2, top + CELL + 0.04, caption, fontsize=6, ha="center", va="top"
            )
    for column, label in enumerate(report.labels):
        grid.text(
            column * pitch_x + pitch_x / 2,
            -0.08,
            label,
            fontsize=9,
            weight="bold",
            ha="center",
            va="bottom",
        )
    # imshow with an extent resets the limits; put them back.
    grid.set_xlim(0, grid_width)
    grid.set_ylim(grid_height, 0)
    grid.set_aspect("equal")
    plot = figure.add_axes(
        (
            LABEL_WIDTH / width,
            0.55 / height,
            1 - (LABEL_WIDTH + 0.3) / width,
            (PLOT_HEIGHT - 0.2) / height,
        )
    )
    _stability_plot(plot, report)
    if gray:
        _colour_key(figure, width, height)
    heading = title or "feature evolution during training"
    figure.suptitle(
        f"{heading}\nstrongest activation of each map over the image set, projected "
        "(deconvnet) and cut to its receptive field\nunder each cell: image @position "
        "a=activation; cos = similarity to the cell on its left",
        fontsize=9,
        y=1 - 0.1 / height,
        va="top",
    )
    return figure


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _stability_plot(axis: Axes, report: EvolutionReport) -> None:
    steps = len(report.labels) - 1
    positions = np.arange(steps)
    threshold = report.threshold
    for index, name in enumerate(report.layers):
        stable = report.stability[name]
        converged = report.converged_label(name)
        verdict = f"converges at {converged}" if converged else "not converged"
        axis.plot(
            positions,
            stable.similarity,
            marker="o",
            color=LAYER_COLOURS[index % len(LAYER_COLOURS)],
            label=f"{report.aliases.get(name, name)}: {verdict}",
        )
    axis.axhline(
        threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}"
    )
    axis.set_xticks(positions)
    axis.set_xticklabels(
        [f"{a} → {b}" for a, b in zip(report.labels, report.labels[1:], strict=False)], fontsize=7
    )
    axis.set_xlim(-0.3, max(steps - 1, 0) + 0.3)
    lowest = min(float(report.stability[n].similarity.min()) for n in report.layers)
    axis.set_ylim(max(-1.05, min(lowest, threshold) - 0.1), 1.03)
    axis.set_ylabel("mean cosine similarity\nto the next checkpoint", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(axis="y", color="#dddddd", linewidth=0.5)
    axis.legend(fontsize=7, loc="lower right", frameon=False)
    axis.set_title("stability per layer (mean over its maps)", fontsize=9)


def _colour_key(figure: Figure, width: float, height: float) -> None:
    # Top left, above the row labels, clear of the column titles.
    key = figure.add_axes((0.15 / width, 1 - 0.85 / height, 1.1 / width, 0.1 / height))
    key.imshow(np.linspace(0, 1, 256)[None], cmap="gray", aspect="auto")
    key.set_yticks([])
    key.set_xticks([0, 127.5, 255])
    key.set_xticklabels(["-peak", "0", "+peak"], fontsize=6)
    key.tick_params(length=2, pad=1)
    key.set_title("projection, per cell", fontsize=6, pad=2)
