"""The files of ``features`` and ``merge``: per layer, pages of projections beside patches, a JSON.

The projections come from :meth:`onnxdeconv.engines.FeaturesResult.pages`; this module only
lays them out and writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onnxdeconv.analysis.features import Entry, FeaturesState, FeatureTile, LayerTopK, unit_box
from onnxdeconv.engines import FeaturesPage, FeaturesResult
from onnxdeconv.graph.receptive_field import ReceptiveField
from onnxdeconv.inputs import image_layout
from onnxdeconv.outputs.tables import json_safe, write_text
from onnxdeconv.render import display_projection, save_figure
from onnxdeconv.render.features import FeatureBlock, features_figure

#: The ``schema`` entry of a layer's JSON.
LAYER_SCHEMA = "onnxdeconv.features.layer/1"


def compact_json(value: Any, indent: int = 0) -> str:
    """JSON with one line per flat object or list (of numbers, strings and short lists)."""
    if not _nested(value):
        return json.dumps(value, allow_nan=False)
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{compact_json(v, indent + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def _nested(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(v, dict) or _nested(v) for v in value.values())
    if isinstance(value, list):
        return any(isinstance(v, dict) or _nested(v) for v in value)
    return False


def entry_json(
    state: FeaturesState,
    entry: Entry,
    field: ReceptiveField,
    spatial: Sequence[int],
    projected: bool,
) -> dict[str, Any]:
    """One entry of a layer's JSON: image, position and box of the unit (if known), value."""
    where = entry.position
    return {
        "image": state.images[entry.image],
        "position": None if where is None else list(where),
        "value": entry.value,
        "box": None if where is None else [list(b) for b in unit_box(field, where, spatial)],
        **({} if projected else {"missing": True}),
    }


def write_features(
    result: FeaturesResult,
    outdir: Path,
    *,
    model_name: str,
    per_page: int = 16,
    state_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Project every top-k entry of ``result`` and write each layer's pictures and JSON.

    The positions of the maxima, found on the way, are recorded in the state, which is saved
    again to ``state_path`` when given.

    Args:
        result: The mined state.
        outdir: The folder to write into (it exists).
        model_name: The model, for the titles and the JSON.
        per_page: Channels per picture.
        state_path: Where to save the state once the positions are known.
        progress: Called with the number of entries projected so far.

    Returns:
        The files written.
    """
    written: list[Path] = []
    pages = result.pages(per_page, progress)
    for name in result.state.layers:
        written += _write_layer(result, name, _layer_pages(pages, name), outdir, model_name)
    if state_path is not None:
        result.state.save(state_path)
    return written


def _layer_pages(pages: Iterator[FeaturesPage], layer: str) -> Iterator[FeaturesPage]:
    for page in pages:
        assert page.layer == layer
        yield page
        if page.number == page.count - 1:
            return


def _write_layer(
    result: FeaturesResult,
    name: str,
    pages: Iterator[FeaturesPage],
    outdir: Path,
    model_name: str,
) -> list[Path]:
    state, prepared = result.state, result.prepared
    layer = state.layers[name]
    alias = prepared.alias_of.get(name, name.replace("/", "_"))
    field = prepared.receptive_fields[name]
    layout, _ = image_layout(prepared.input_shape)
    spatial = prepared.input_shape[1:] if layout == "NCHW" else prepared.input_shape[:-1]
    grid = max(1, math.ceil(math.sqrt(state.k)))
    channels_json: list[dict[str, Any]] = []
    pictures: list[Path] = []
    for page in pages:
        picture = outdir / (
            f"{alias}.png" if page.count == 1 else f"{alias}_page{page.number + 1}.png"
        )
        blocks = [_block(layer, row, page.tiles, result.preprocessing.bgr) for row in page.rows]
        for row in page.rows:
            channels_json.append(
                {
                    "channel": int(layer.channels[row]),
                    "entries": [
                        entry_json(state, entry, field, spatial, (row, slot) in page.tiles)
                        for slot, entry in enumerate(layer.entries(row))
                    ],
                }
            )
        page_note = f" · page {page.number + 1}/{page.count}" if page.count > 1 else ""
        title = (
            f"{model_name} · {alias} ({name}) · top {state.k} of {state.counted} images "
            f"per channel · receptive field {field.describe()}{page_note}\n"
            "each channel: deconvnet projections (left) beside the image patches (right), "
            "strongest first"
        )
        save_figure(features_figure(blocks, title, grid=grid), picture)
        pictures.append(picture)
    report = {
        "schema": LAYER_SCHEMA,
        "model": model_name,
        "layer": name,
        "alias": alias,
        "receptive_field": asdict(field),
        **state.counts_json(),
        "pictures": [p.name for p in pictures],
        "channels": channels_json,
    }
    json_path = outdir / f"{alias}.json"
    write_text(json_path, compact_json(json_safe(report)) + "\n")
    return [*pictures, json_path]


def _block(
    layer: LayerTopK, row: int, tiles: dict[tuple[int, int], FeatureTile], bgr: bool
) -> FeatureBlock:
    entries = layer.entries(row)
    found = [tiles.get((row, slot)) for slot in range(len(entries))]
    top = f" · max {entries[0].value:.3g}" if entries else " · no images"
    return FeatureBlock(
        f"channel {int(layer.channels[row])}{top}",
        [None if t is None else display_projection(t.projection, "NHWC", bgr) for t in found],
        [None if t is None else t.patch for t in found],
    )
