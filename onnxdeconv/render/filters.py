"""The picture ``onnxdeconv filters`` writes: first-layer filters, frequency bands, aliasing."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onnxdeconv.analysis.filters import BAND_NAMES, FilterReport
from onnxdeconv.render.picture import plain_text

BAND_COLOURS = ("#4c72b0", "#55a868", "#dd8452")
BAND_LABELS = ("low\nr < 1/6", "mid\n1/6 ≤ r < 1/3", "high\nr ≥ 1/3")
DEAD_COLOUR = "#d62728"


def filter_mosaic(weights: np.ndarray, bgr: bool = False, gap: int = 1) -> tuple[np.ndarray, int]:
    """Tile filters in a square-ish grid, each min-max normalised to [0, 1].

    Args:
        weights: ``[M, C, kh, kw]`` filters. Three channels are shown in colour (flipped to RGB
            when ``bgr``), any other count in grey (the mean over channels).
        bgr: Whether the filters' input channels are in BGR order.
        gap: White pixels between tiles.

    Returns:
        The ``[H, W, 3]`` float mosaic, and the number of columns.
    """
    count, channels, height, width = weights.shape
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    mosaic = np.ones((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), np.float32)
    for index, kernel in enumerate(np.asarray(weights, np.float32)):
        if channels == 3:
            tile = kernel[::-1] if bgr else kernel
            tile = tile.transpose(1, 2, 0)
        else:
            tile = np.repeat(kernel.mean(axis=0)[..., None], 3, axis=2)
        low, high = float(tile.min()), float(tile.max())
        tile = (tile - low) / (high - low) if high > low else np.full_like(tile, 0.5)
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        mosaic[top : top + height, left : left + width] = tile
    return mosaic, columns


@plain_text
def filters_figure(
    report: FilterReport,
    *,
    title: str = "",
    bgr: bool = False,
    aliasing_threshold: float = 0.1,
) -> Figure:
    """Draw the four panels of the filter diagnostics.

    (a) the first-layer filters, dead ones outlined in red; (b) the frequency-coverage histogram;
    (c) each filter's band energies as stacked bars; (d) the aliasing score against its threshold.

    Args:
        report: What :func:`~onnxdeconv.analysis.filters.analyse_filters` found.
        title: The figure's first title line; the verdict follows it.
        bgr: Whether the model reads BGR images (the filters are shown in RGB).
        aliasing_threshold: The threshold the analysis used, drawn in panel (d).
    """
    figure = plt.figure(figsize=(14, 7.6))
    grid = figure.add_gridspec(
        2, 3, width_ratios=(1.25, 1.0, 0.8), height_ratios=(1.0, 0.9), hspace=0.55, wspace=0.3
    )
    _filter_panel(figure.add_subplot(grid[:, 0]), report, bgr)
    _coverage_panel(figure.add_subplot(grid[0, 1]), report)
    _aliasing_panel(figure.add_subplot(grid[0, 2]), report, aliasing_threshold)
    _band_panel(figure.add_subplot(grid[1, 1:]), report)
    verdict = textwrap.fill(report.verdict, width=175)
    figure.suptitle(f"{title}\n{verdict}" if title else verdict, fontsize=10, y=0.99)
    figure.subplots_adjust(left=0.04, right=0.98, bottom=0.08, top=0.87)
    return figure


def _filter_panel(axis: Axes, report: FilterReport, bgr: bool) -> None:
    count, channels, height, width = report.weights.shape
    gap = 1
    mosaic, columns = filter_mosaic(report.weights, bgr, gap)
    axis.imshow(mosaic, interpolation="nearest")
    dead = set(report.dead)
    for index in range(count):
        row, column = divmod(index, columns)
        axis.add_patch(
            Rectangle(
                (column * (width + gap) + gap - 0.5, row * (height + gap) + gap - 0.5),
                width,
                height,
                fill=False,
                edgecolor=DEAD_COLOUR if index in dead else "#999999",
                linewidth=2 if index in dead else 0.5,
                zorder=3 if index in dead else 2,
            )
        )
    rows = math.ceil(count / columns)
    axis.set_yticks([gap + r * (height + gap) + (height - 1) / 2 for r in range(rows)])
    axis.set_yticklabels([str(r * columns) for r in range(rows)], fontsize=7)
    axis.set_xticks([gap + c * (width + gap) + (width - 1) / 2 for c in range(columns)])
    axis.set_xticklabels([f"+{c}" for c in range(columns)], fontsize=7)
    axis.tick_params(length=0)
    colour = "RGB" if channels == 3 else "grey"
    outlined = f"; {len(dead)} dead, outlined in red" if dead else ""
    axis.set_title(
        f"(a) {count} filters {channels}x{height}x{width} ({colour}){outlined}\n"
        f"index = row label + column",
        fontsize=9,
    )


def _coverage_panel(axis: Axes, report: FilterReport) -> None:
    positions = np.arange(len(BAND_NAMES))
    bars = axis.bar(positions, report.coverage, color=BAND_COLOURS, width=0.6)
    for bar, value in zip(bars, report.coverage, strict=True):
        axis.text(
            bar.get_x() + bar.get_width() / 2,
            float(value) + 0.02,
            f"{float(value):.0%}",
            ha="center",
            fontsize=9,
        )
    axis.set_xticks(positions)
    axis.set_xticklabels(BAND_LABELS, fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("mean fraction of filter energy", fontsize=8)
    axis.set_title("(b) frequency coverage (r in cycles/pixel)", fontsize=9)
    axis.tick_params(labelsize=8)


def _band_panel(axis: Axes, report: FilterReport) -> None:
    count = len(report.band_energy)
    positions = np.arange(count)
    bottom = np.zeros(count)
    for band, (name, colour) in enumerate(zip(BAND_NAMES, BAND_COLOURS, strict=True)):
        values = report.band_energy[:, band]
        axis.bar(positions, values, bottom=bottom, color=colour, width=0.9, label=name)
        bottom += values
    for index in report.dead:
        axis.axvspan(index - 0.5, index + 0.5, color=DEAD_COLOUR, alpha=0.25, linewidth=0)
    if report.never_active:
        axis.plot(
            report.never_active,
            [1.04] * len(report.never_active),
            "v",
            color="black",
            markersize=4,
            label="never active",
        )
    axis.set_xlim(-0.5, count - 0.5)
    axis.set_ylim(0, 1.1)
    axis.set_xlabel("filter", fontsize=8)
    axis.set_ylabel("fraction of energy", fontsize=8)
    axis.set_title("(c) band energy per filter (dead filters shaded red)", fontsize=9)
    axis.legend(fontsize=7, ncol=4, loc="upper right", bbox_to_anchor=(1.0, 1.22), frameon=False)
    axis.tick_params(labelsize=8)


def _aliasing_panel(axis: Axes, report: FilterReport, threshold: float) -> None:
    high = report.aliasing > threshold
    axis.bar([0], [report.aliasing], color=DEAD_COLOUR if high else "#55a868", width=0.5)
    axis.axhline(threshold, color="black", linestyle="--", linewidth=1)
    axis.text(0.3, threshold, f" threshold {threshold:g}", va="bottom", fontsize=8)
    axis.text(
        0, report.aliasing + 0.02, f"{report.aliasing:.2f}", ha="center", fontsize=11, weight="bold"
    )
    stride = "x".join(map(str, report.stride))
    axis.set_xticks([0])
    axis.set_xticklabels([f"stride {stride}\nfrom {report.aliasing_source}"], fontsize=8)
    axis.set_xlim(-0.6, 1.2)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("energy above Nyquist 0.5/stride", fontsize=8)
    axis.set_title("(d) aliasing score", fontsize=9)
    axis.tick_params(labelsize=8)


def _indices(values: list[int] | None, count: int, images: int) -> str:
    if values is None:
        return "not measured (no images given)"
    if not values:
        return "none" if images == 0 else f"none (on {images} images)"
    shown = ", ".join(map(str, values[:12])) + (", ..." if len(values) > 12 else "")
    where = f" (on {images} images)" if images else ""
    return f"{len(values)} of {count}: {shown}{where}"


def filters_table(report: FilterReport, images: int, aliasing_threshold: float = 0.1) -> str:
    """The report as aligned text lines: layer, dead and never-active filters, coverage, aliasing.

    Args:
        report: What :func:`~onnxdeconv.analysis.filters.analyse_filters` found.
        images: How many images it ran on (0: none).
        aliasing_threshold: The threshold the verdict used.
    """
    count, channels = report.weights.shape[:2]
    kernel = "x".join(map(str, report.kernel))
    stride = "x".join(map(str, report.stride))
    coverage = "  ".join(
        f"{name} {value:.2f}" for name, value in zip(BAND_NAMES, report.coverage, strict=True)
    )
    rows = [
        ("layer", f"{report.layer} ({count} filters {channels}x{kernel}, stride {stride})"),
        ("dead filters", _indices(report.dead, count, 0)),
        ("never active", _indices(report.never_active, count, images)),
        ("coverage", coverage),
        (
            "aliasing",
            f"{report.aliasing:.3f} (from {report.aliasing_source}; "
            f"threshold {aliasing_threshold:g})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
