"""The picture ``onnxdeconv features`` writes: per channel, its top-k projections beside patches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from onnxdeconv.render.picture import plain_text

#: Tiles smaller than this many pixels are enlarged (nearest neighbour) so they stay visible.
MIN_TILE = 48
EMPTY_GREY = 0.85


@dataclass(frozen=True)
class FeatureBlock:
    """One channel: its projections and the matching image patches, best first.

    Projections are float pictures in [0, 1] (zero activation at 0.5, see
    :func:`~onnxdeconv.render.picture.display_projection`), patches uint8; each ``HxW`` or
    ``HxWx3``, all of one size. ``None`` leaves a slot empty (fewer images than k).
    """

    label: str
    projections: Sequence[np.ndarray | None]
    patches: Sequence[np.ndarray | None]


def _rgb(picture: np.ndarray) -> np.ndarray:
    values = picture.astype(np.float32) / (255.0 if picture.dtype == np.uint8 else 1.0)
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    return values


def block_mosaic(block: FeatureBlock, grid: int) -> np.ndarray:
    """Tile a block: ``grid x grid`` projections, a gap, then ``grid x grid`` patches.

    Returns:
        An ``[H, W, 3]`` float picture in [0, 1] on white.
    """
    pictures = [p for p in (*block.projections, *block.patches) if p is not None]
    height, width = pictures[0].shape[:2] if pictures else (1, 1)
    factor = max(1, math.ceil(MIN_TILE / max(height, width)))
    tile_h, tile_w = height * factor, width * factor
    gap = 2 + max(tile_h, tile_w) // 40
    half = grid * (tile_w + gap) - gap
    separator = 4 * gap
    mosaic = np.ones((grid * (tile_h + gap) - gap, 2 * half + separator, 3), np.float32)
    for side, pictures_of_side in enumerate((block.projections, block.patches)):
        for slot in range(grid * grid):
            row, column = divmod(slot, grid)
            top = row * (tile_h + gap)
            left = side * (half + separator) + column * (tile_w + gap)
            picture = pictures_of_side[slot] if slot < len(pictures_of_side) else None
            target = mosaic[top : top + tile_h, left : left + tile_w]
            if picture is None:
                target[:] = EMPTY_GREY
                continue
            big = np.repeat(np.repeat(_rgb(picture), factor, axis=0), factor, axis=1)
            target[:] = np.clip(big, 0.0, 1.0)
    return mosaic


@plain_text
def features_figure(
    blocks: Sequence[FeatureBlock], title: str = "", columns: int = 4, grid: int = 3
) -> Figure:
    """Lay out channel blocks, ``columns`` per row, as in Fig. 2 of Zeiler & Fergus.

    Args:
        blocks: One per channel.
        title: The figure title (several lines allowed).
        columns: Blocks per row.
        grid: Tiles per side of each half of a block (``ceil(sqrt(k))``).
    """
    columns = max(1, min(columns, len(blocks)))
    rows = max(1, math.ceil(len(blocks) / columns))
    mosaics = [block_mosaic(block, grid) for block in blocks]
    aspect = mosaics[0].shape[1] / mosaics[0].shape[0] if mosaics else 2.0
    block_h = 2.0
    lines = title.count("\n") + 1 if title else 0
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * block_h * aspect + 0.4, rows * (block_h + 0.35) + 0.25 * lines + 0.2),
        squeeze=False,
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, block, mosaic in zip(axes.flat, blocks, mosaics, strict=False):
        axis.imshow(mosaic, interpolation="nearest")
        axis.set_title(block.label, fontsize=9)
        # A frame keeps one channel's patches apart from the next channel's projections.
        axis.axis("on")
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_edgecolor("#999999")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(pad=0.6)
    return figure
