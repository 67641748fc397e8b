"""The files of ``correspondence``: the figure of Table 1, the table as JSON and CSV."""

from __future__ import annotations

from collections.abc import Sequence

from onnxdeconv.analysis.correspondence import CSV_FIELDS, CorrespondenceResult
from onnxdeconv.outputs.tables import OutputPaths, skipped_json, write_csv, write_json
from onnxdeconv.render import save_figure
from onnxdeconv.render.correspondence import correspondence_figure, correspondence_title


def write_correspondence(
    result: CorrespondenceResult,
    paths: OutputPaths,
    model_name: str,
    skipped: Sequence[tuple[str, str]] = (),
) -> str:
    """Write the figure, and the JSON and CSV ``paths`` ask for; return the text table.

    ``skipped`` lists ``(image, reason)`` for each unreadable image left out, in the JSON.
    """
    title = correspondence_title(result, model_name)
    save_figure(correspondence_figure(result, title=title), paths.output)
    if paths.json is not None:
        write_json(paths.json, {**result.to_json(), "skipped_images": skipped_json(skipped)})
    if paths.csv is not None:
        write_csv(paths.csv, result.rows(), CSV_FIELDS)
    return result.text_table()
