"""The files of ``filters``: the first-layer diagnostics (Fig. 6) as a figure and a JSON."""

from __future__ import annotations

from collections.abc import Sequence

from onnxdeconv.analysis.filters import FilterReport
from onnxdeconv.analysis.report import ALIASING_THRESHOLD
from onnxdeconv.outputs.tables import OutputPaths, skipped_json, write_json
from onnxdeconv.render import save_figure
from onnxdeconv.render.filters import filters_figure, filters_table


def write_filters(
    report: FilterReport,
    paths: OutputPaths,
    model_name: str,
    images: int,
    bgr: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
) -> str:
    """Write the figure, and the JSON ``paths`` ask for; return the verdict and the table.

    Args:
        report: The diagnostics.
        paths: Where to write.
        model_name: The model, named in the title.
        images: How many images the report measured (0: the filters alone).
        bgr: Whether the filters' channels are in BGR order.
        skipped: ``(image, reason)`` for each unreadable image left out, listed in the JSON.
    """
    title = f"{model_name} · first layer {report.layer}"
    threshold = ALIASING_THRESHOLD
    figure = filters_figure(report, title=title, bgr=bgr, aliasing_threshold=threshold)
    save_figure(figure, paths.output)
    if paths.json is not None:
        write_json(paths.json, {**report.to_json(), "skipped_images": skipped_json(skipped)})
    return f"{report.verdict}\n{filters_table(report, images, threshold)}"
