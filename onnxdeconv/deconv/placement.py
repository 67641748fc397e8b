"""Where a window lies in a tensor (no ONNX: a cached projector places its crops with it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Where a window lies in a tensor: ``origin = position * scale + shift``, and its size."""

    scale: tuple[int, ...]
    shift: tuple[int, ...]
    size: tuple[int, ...]

    def through(
        self, strides: Sequence[int], extent: Sequence[int], pads: Sequence[int]
    ) -> Placement:
        """The placement in the input of a sliding-window op with this placement at its output."""
        return Placement(
            tuple(a * s for a, s in zip(self.scale, strides, strict=True)),
            tuple(b * s - p for b, s, p in zip(self.shift, strides, pads, strict=True)),
            tuple((r - 1) * s + e for r, s, e in zip(self.size, strides, extent, strict=True)),
        )

    def origins(self, positions: np.ndarray) -> np.ndarray:
        """``[K, rank]`` int64: the window origins of units at ``positions`` ``[K, rank]``."""
        scale = np.asarray(self.scale, np.int64)
        return np.asarray(positions, np.int64) * scale + np.asarray(self.shift, np.int64)
