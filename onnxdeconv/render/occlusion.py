"""The picture ``onnxdeconv occlusion`` writes: the panels of Zeiler & Fergus's Fig. 7."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Patch, Rectangle

from onnxdeconv.analysis.occlusion import OcclusionProjections, OcclusionResult
from onnxdeconv.render.picture import display_projection, outline_box, plain_text, show_picture

#: Colour map of the activation and probability maps: blue low, red high, as in the paper.
HEAT = "RdYlBu_r"
#: How opaque the maps are over the image.
ALPHA = 0.6
OCCLUDER_EDGE = "#00e5ff"
FIELD_EDGE = "#ffd400"
#: Colours of the most frequent labels in the label map; the rest share OTHER.
LABEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
OTHER = "#7f7f7f"


def short_label(index: int, labels: Sequence[str] | None, width: int = 24) -> str:
    """A label's first synonym (``"tabby"`` for ``"tabby, tabby cat"``), or its index."""
    if labels is None or not 0 <= index < len(labels):
        return str(index)
    name = labels[index].split(",")[0].strip() or str(index)
    return name if len(name) <= width else name[: width - 1] + "…"


def cell_edges(starts: Sequence[int], size: int, length: int) -> np.ndarray:
    """Pixel edges of the map cells along one axis, in image coordinates.

    Pixel centres are at integers. Each cell is centred on its occluder, neighbours meet halfway,
    and the outer cells reach the image border.
    """
    centres = np.asarray(starts, np.float64) + size / 2 - 0.5
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[-0.5], middle, [length - 0.5]])


def _background(axis: Axes, picture: np.ndarray) -> None:
    gray = picture if picture.ndim == 2 else picture.mean(axis=2)
    show_picture(axis, gray, vmin=0, vmax=255)


def _heat_panel(
    axis: Axes,
    picture: np.ndarray,
    result: OcclusionResult,
    values: np.ndarray,
    limits: tuple[float, float],
    title: str,
    unit: str,
    baseline: float,
) -> None:
    _background(axis, picture)
    height, width = result.image_size
    mesh = axis.pcolormesh(
        cell_edges(result.columns, result.size, width),
        cell_edges(result.rows, result.size, height),
        values,
        cmap=HEAT,
        vmin=limits[0],
        vmax=limits[1],
        alpha=ALPHA,
        shading="flat",
    )
    i, j = np.unravel_index(int(values.argmin()), values.shape)
    y, x = result.rows[i], result.columns[j]
    outline_box(axis, ((y, y + result.size), (x, x + result.size)), "black", linestyle="--")
    axis.set_xlim(-0.5, width - 0.5)
    axis.set_ylim(height - 0.5, -0.5)
    axis.set_title(title, fontsize=9)
    bar = axis.figure.colorbar(mesh, ax=axis, fraction=0.046, pad=0.03)
    bar.solids.set_alpha(1)  # type: ignore[union-attr]
    bar.ax.tick_params(labelsize=7)
    bar.set_label(f"{unit} (black line: unoccluded)", fontsize=7)
    if limits[0] <= baseline <= limits[1]:
        bar.ax.axhline(baseline, color="black", linewidth=2.5)


def _label_panel(
    axis: Axes,
    picture: np.ndarray,
    result: OcclusionResult,
    labels: Sequence[str] | None,
    legend_size: int,
) -> None:
    _background(axis, picture)
    height, width = result.image_size
    counts = Counter(int(v) for v in result.top_label.ravel())
    shown = [label for label, _ in counts.most_common(min(legend_size, len(LABEL_COLOURS)))]
    codes = np.full(result.top_label.shape, len(shown), np.int64)
    for code, label in enumerate(shown):
        codes[result.top_label == label] = code
    colours = [*LABEL_COLOURS[: len(shown)], OTHER]
    axis.pcolormesh(
        cell_edges(result.columns, result.size, width),
        cell_edges(result.rows, result.size, height),
        codes,
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(shown) + 0.5,
        alpha=ALPHA,
        shading="flat",
    )
    axis.set_xlim(-0.5, width - 0.5)
    axis.set_ylim(height - 0.5, -0.5)
    total = result.top_label.size
    handles = [
        Patch(
            color=colour,
            label=f"{short_label(label, labels)} ({counts[label] / total:.0%})"
            + (" = class in (d)" if label == result.label else ""),
        )
        for label, colour in zip(shown, colours, strict=False)
    ]
    rest = total - sum(counts[label] for label in shown)
    if rest:
        handles.append(
            Patch(color=OTHER, label=f"{len(counts) - len(shown)} others ({rest / total:.0%})")
        )
    axis.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        fontsize=7,
        ncol=2 if len(handles) > 3 else 1,
        frameon=False,
        handlelength=1.2,
        columnspacing=0.8,
    )
    axis.set_title("(e) most probable class\nper occluder position", fontsize=9)


def _projection_panels(
    figure: SubFigure,
    result: OcclusionResult,
    projections: OcclusionProjections,
    layout: str,
    bgr: bool,
    layer_name: str,
) -> None:
    count = len(projections.positions)
    axes = figure.subplots(1, count, squeeze=False)[0]
    base = projections.selections[0].value
    for index, axis in enumerate(axes):
        pick = projections.selections[index]
        picture = display_projection(projections.projections[index], layout, bgr)
        show_picture(axis, picture, vmin=0, vmax=1)
        box = projections.boxes[index] if index < len(projections.boxes) else None
        if box is not None and pick.value > 0:
            outline_box(axis, box, FIELD_EDGE, linestyle="--", linewidth=1.2)
        position = projections.positions[index]
        where = f" @{','.join(map(str, pick.position))}" if pick.position else ""
        if position is None:
            head = "unoccluded"
            tail = f"strongest unit{where}: {pick.value:.3g}"
        else:
            y, x = position
            outline_box(axis, ((y, y + result.size), (x, x + result.size)), OCCLUDER_EDGE)
            head = f"occluder at y{y} x{x}: {projections.reasons[index]}"
            share = f" ({pick.value / base:.0%})" if base > 0 else ""
            tail = f"strongest unit{where}: {pick.value:.3g}{share}"
        axis.set_title(f"{head}\n{tail}", fontsize=8)
        axis.set_xlim(-0.5, picture.shape[1] - 0.5)
        axis.set_ylim(picture.shape[0] - 0.5, -0.5)
    figure.suptitle(
        f"(c) {layer_name} channel {result.channel} projected to pixels (deconvnet): cyan "
        "= occluder, dashed yellow = the projected unit's receptive field",
        fontsize=9,
    )


@plain_text
def occlusion_figure(
    result: OcclusionResult,
    picture: np.ndarray,
    projections: OcclusionProjections | None = None,
    *,
    labels: Sequence[str] | None = None,
    layout: str = "NCHW",
    bgr: bool = False,
    layer_name: str | None = None,
    title: str = "",
    legend_size: int = 6,
) -> Figure:
    """Draw the occlusion panels of Zeiler & Fergus's Fig. 7.

    Top row: (a) the input with one occluder and the strongest unit's receptive field; (b) the
    total activation of the feature map and (d) the probability of the class, per occluder
    position, over the image; (e) the most probable class per position. Bottom row (with
    ``projections``): (c) the feature map's strongest unit projected to pixels, unoccluded and
    with the occluder at a few positions. Map cells sit at their occluder's centre; the dashed
    black square in (b) and (d) is the occluder with the lowest value.

    Args:
        result: What :func:`~onnxdeconv.analysis.occlusion.occlusion_maps` returned.
        picture: The input as a person sees it (uint8, HxW or HxWx3).
        projections: Panel (c), from
            :func:`~onnxdeconv.analysis.occlusion.occlusion_projections`.
        labels: Class names, indexed by class.
        layout: The model's input layout, for the projections.
        bgr: Whether the model reads BGR (projections are shown in RGB).
        layer_name: How to call the layer (default: its tensor name).
        title: The figure title.
        legend_size: Most labels named in the legend of (e).
    """
    layer_name = layer_name or result.layer
    rows = 2 if projections is not None else 1
    figure = plt.figure(figsize=(15, 4.3 * rows + (0.3 if title else 0)), layout="constrained")
    parts = figure.subfigures(rows, 1, height_ratios=[1.0, 1.0][:rows], squeeze=False)[:, 0]
    top = parts[0].subplots(1, 4)
    field_box = projections.boxes[0] if projections is not None and projections.boxes else None

    axis = top[0]
    show_picture(axis, picture, vmin=0, vmax=255)
    sample = None
    if projections is not None and len(projections.positions) > 1:
        sample = projections.positions[1]
    if sample is None:
        i, j = np.unravel_index(int(result.probability.argmin()), result.probability.shape)
        sample = (result.rows[i], result.columns[j])
    y, x = sample
    axis.add_patch(
        Rectangle((x - 0.5, y - 0.5), result.size, result.size, color="#808080", linewidth=0)
    )
    if field_box is not None:
        outline_box(axis, field_box, FIELD_EDGE, linestyle="--")
    grid = f"{len(result.rows)}x{len(result.columns)}"
    axis.set_title(
        f"(a) input, one grey occluder\n{result.size}x{result.size} px, stride {result.stride}, "
        f"{grid} positions",
        fontsize=9,
    )

    feature = result.feature_map
    low = min(float(feature.min()), result.baseline_activation)
    high = max(float(feature.max()), result.baseline_activation)
    _heat_panel(
        top[1],
        picture,
        result,
        feature,
        (low, high if high > low else low + 1),
        f"(b) total activation of {layer_name}\nchannel {result.channel}, per occluder position",
        "sum over the feature map",
        result.baseline_activation,
    )
    name = short_label(result.label, labels)
    _heat_panel(
        top[2],
        picture,
        result,
        result.probability,
        (0.0, 1.0),
        f"(d) p(class {name}) per occluder position\n"
        f"unoccluded {result.baseline_probability:.3f}, lowest {result.probability.min():.3f}",
        "probability",
        result.baseline_probability,
    )
    _label_panel(top[3], picture, result, labels, legend_size)
    if projections is not None:
        _projection_panels(parts[1], result, projections, layout, bgr, layer_name)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def occlusion_summary(
    result: OcclusionResult, labels: Sequence[str] | None, layer_name: str
) -> list[str]:
    """Four summary lines of the maps, as ``onnxdeconv occlusion`` prints them.

    The class and its unoccluded probability, the grid, the lowest probability and where, the
    largest drop of the feature map and where.
    """
    name = short_label(result.label, labels)
    i, j = np.unravel_index(int(result.probability.argmin()), result.probability.shape)
    fi, fj = np.unravel_index(int(result.feature_map.argmin()), result.feature_map.shape)
    scores = "logits, softmax applied" if result.softmax_applied else "probabilities"
    changed = int((result.top_label != result.label).sum())
    drop = (
        f" ({1 - result.feature_map.min() / result.baseline_activation:.0%} drop)"
        if result.baseline_activation > 0
        else ""
    )
    return [
        f"class {result.label} ({name}): p = {result.baseline_probability:.3f} unoccluded, "
        f"predicted {result.predicted} ({short_label(result.predicted, labels)}); "
        f"class output read as {scores}",
        f"occluder {result.size}x{result.size} px, stride {result.stride}: "
        f"{len(result.rows)}x{len(result.columns)} positions",
        f"lowest p = {result.probability.min():.3f} with the occluder at y {result.rows[i]}, "
        f"x {result.columns[j]}; another class wins at {changed} of {result.top_label.size} "
        "positions",
        f"{layer_name} channel {result.channel}: total {result.baseline_activation:.4g} "
        f"unoccluded, lowest {result.feature_map.min():.4g}{drop} with the occluder at "
        f"y {result.rows[fi]}, x {result.columns[fj]}",
    ]
