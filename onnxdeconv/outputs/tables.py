"""JSON and CSV files that always parse: non-finite numbers become ``null`` or empty cells."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxdeconv.files import atomic_path


@dataclass(frozen=True)
class OutputPaths:
    """Where an analysis writes: its main file (a figure), and the JSON and CSV asked for."""

    output: Path
    json: Path | None = None
    csv: Path | None = None


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values and NaN or infinity as None.

    ``json.dumps`` would write ``NaN`` and ``Infinity``, which strict JSON parsers refuse.
    """
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def skipped_json(skipped: Sequence[tuple[object, str]]) -> list[dict[str, str]]:
    """The images a command left out, as the ``skipped_images`` entry of its JSON."""
    return [{"image": str(image), "reason": reason} for image, reason in skipped]


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (see :func:`json_safe`), for a file or the terminal."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json(path: str | Path, value: Any, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON (see :func:`json_safe`) to ``path`` atomically."""
    write_text(path, json_text(value, indent) + "\n")


def write_csv(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
    header: Sequence[str],
) -> None:
    """Write ``rows`` (mappings keyed by ``header``, or sequences in its order) as CSV, atomically.

    Non-finite numbers are written as empty cells.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row.get(name) for name in header] if isinstance(row, Mapping) else list(row)
        writer.writerow(["" if cell is None else cell for cell in json_safe(cells)])
    write_text(path, buffer.getvalue())
