"""The picture ``onnxdeconv sanity`` writes: scores per cascade step and the projections."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from onnxdeconv.analysis.sanity import CAVEAT, SanityReport, crop
from onnxdeconv.inputs import Layout
from onnxdeconv.render.picture import display_projection, outline_box, plain_text, show_picture

RULE_COLOURS = {"deconvnet": "#4c72b0", "guided": "#dd8452", "gradient": "#55a868"}
REGION_COLOUR = "#d62728"


def shown_steps(count: int, most: int) -> list[int]:
    """Indices of at most ``most`` of ``count`` steps, evenly spread, first and last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(i) for i in np.linspace(0, count - 1, most)})


@plain_text
def sanity_figure(
    report: SanityReport,
    display: np.ndarray,
    *,
    layout: Layout | None,
    bgr: bool = False,
    title: str = "",
    max_columns: int = 9,
) -> Figure:
    """Draw the scores against the cascade step, and the projections of each rule per step.

    Args:
        report: What :func:`~onnxdeconv.analysis.sanity.sanity_check` measured.
        display: The input as a person sees it (HxW or HxWx3, uint8).
        layout: The model's input layout (None: no colour axis).
        bgr: Whether the model reads BGR (projections are shown in RGB).
        title: The figure's title.
        max_columns: Show at most this many steps in the grid (spread evenly).
    """
    columns = shown_steps(len(report.steps), max_columns)
    rows = len(report.rules)
    # Few steps leave room for larger tiles.
    tile = 1.9 if len(columns) > 5 else 2.4
    figure = plt.figure(figsize=(max(12.0, 1.55 * len(columns) + 1.0), 4.3 + tile * rows))
    outer = figure.add_gridspec(2, 1, height_ratios=(3.0, tile * rows), hspace=0.32)
    top = outer[0].subgridspec(1, 3, width_ratios=(1.0, 2.0, 2.0), wspace=0.28)
    _input_panel(figure.add_subplot(top[0]), report, display)
    ticks = [report.step_label(i) for i in range(len(report.steps))]
    spearman = "Spearman \N{GREEK SMALL LETTER RHO}"
    _score_panel(figure.add_subplot(top[1]), report, report.spearman, ticks, spearman)
    _score_panel(figure.add_subplot(top[2]), report, report.ssim, ticks, "SSIM")
    grid = outer[1].subgridspec(rows, len(columns), wspace=0.08, hspace=0.42)
    for row, rule in enumerate(report.rules):
        for column, index in enumerate(columns):
            axis = figure.add_subplot(grid[row, column])
            projection = crop(report.projections[rule][index], layout, report.region)
            show_picture(
                axis, display_projection(projection, layout or "NCHW", bgr), vmin=0, vmax=1
            )
            if row == 0:
                step = report.step_label(index)
                head = "original" if index == 0 else f"step {index}: to {step}"
                axis.set_title(head, fontsize=8)
            if column == 0:
                axis.set_ylabel(rule, fontsize=10, color=RULE_COLOURS.get(rule, "black"))
            axis.set_xlabel(_scores(report, rule, index), fontsize=7)
    caveat = textwrap.fill(CAVEAT, width=int(figure.get_figwidth() * 15))
    figure.text(0.5, 0.01, caveat, ha="center", va="bottom", fontsize=8, style="italic")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.subplots_adjust(
        left=0.05, right=0.98, top=0.93, bottom=0.05 + 0.012 * caveat.count("\n")
    )
    return figure


def _scores(report: SanityReport, rule: str, index: int) -> str:
    rho, similarity = report.spearman[rule][index], report.ssim[rule][index]
    if math.isnan(rho) and math.isnan(similarity):
        return "zero projection"
    return f"\N{GREEK SMALL LETTER RHO} {rho:.2f} · SSIM {similarity:.2f}"


def _input_panel(axis: Axes, report: SanityReport, display: np.ndarray) -> None:
    show_picture(axis, display)
    if report.region is not None and len(report.region) == 2:
        outline_box(axis, report.region, REGION_COLOUR)
    pick = report.selection
    where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
    target = "every step" if report.target == "same" else "step 0; later steps: their own"
    axis.set_title(
        f"unit: channel {pick.channel}{where} ({target})\n"
        f"compared inside the red box (its receptive field)",
        fontsize=8,
    )


def _score_panel(
    axis: Axes,
    report: SanityReport,
    scores: dict[str, np.ndarray],
    ticks: list[str],
    name: str,
) -> None:
    steps = np.arange(len(report.steps))
    lowest = 0.0
    for rule in report.rules:
        values = scores[rule]
        colour = RULE_COLOURS.get(rule, "black")
        axis.plot(steps, values, "o-", color=colour, label=rule, markersize=3.5, linewidth=1.4)
        dead = np.isnan(values)
        if dead.any():
            axis.plot(steps[dead], np.zeros(int(dead.sum())), "x", color=colour, markersize=6)
        if np.isfinite(values).any():
            lowest = min(lowest, float(np.nanmin(values)))
    axis.axhline(0.0, color="#999999", linewidth=0.8)
    axis.set_ylim(lowest - 0.05, 1.05)
    axis.set_xticks(steps)
    axis.set_xticklabels(ticks, rotation=90, fontsize=7 if len(ticks) > 12 else 8)
    axis.set_xlim(-0.5, len(steps) - 0.5)
    axis.set_xlabel("randomised from the top layer down to (cumulative)", fontsize=8)
    axis.set_ylabel(f"{name} with the original", fontsize=8)
    axis.grid(alpha=0.3)
    axis.tick_params(labelsize=8)
    axis.set_title(f"{name} of the projection vs cascade step (x = zero projection)", fontsize=9)
    axis.legend(fontsize=8, loc="lower left")


def _score(value: float) -> str:
    return "zero" if math.isnan(value) else f"{value:.3f}"


def sanity_table(report: SanityReport) -> str:
    """The scores as an aligned text table: one row per step, two columns per rule."""
    header = ["step", "randomised", "down to", "activation"]
    for rule in report.rules:
        header += [f"{rule} spearman", f"{rule} SSIM"]
    table = [header]
    for index, count in enumerate(report.steps):
        row = [
            str(index),
            f"{count}/{len(report.layers)}",
            "none (original)" if count == 0 else report.step_label(index),
            f"{report.activations[index]:.4g}",
        ]
        for rule in report.rules:
            row += [_score(report.spearman[rule][index]), _score(report.ssim[rule][index])]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def sanity_summary(report: SanityReport) -> list[str]:
    """One line per rule: its scores with every weighted layer of the cascade randomised."""
    last = len(report.steps) - 1
    count = report.steps[last]
    lines = []
    for rule in report.rules:
        rho, similarity = report.spearman[rule][last], report.ssim[rule][last]
        scores = (
            "the projection is zero"
            if math.isnan(rho)
            else f"Spearman {rho:.2f}, SSIM {similarity:.2f} (1 = unchanged)"
        )
        lines.append(
            f"{rule}: with {count} of {len(report.layers)} weighted layers randomised "
            f"(down to {report.step_label(last)}): {scores}"
        )
    return lines


def sanity_text(report: SanityReport) -> str:
    """What ``onnxdeconv sanity`` prints: the table, the summary lines and the caveat."""
    return "\n\n".join(
        [sanity_table(report), "\n".join(sanity_summary(report)), f"Caveat: {CAVEAT}"]
    )
