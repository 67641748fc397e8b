"""Files the analyses write: JSON and CSV tables, pictures, pages and the HTML report.

Every writer is atomic (:mod:`onnxdeconv.files`): a failed run leaves no half-written file and an
existing file is replaced only by a complete one.
"""

from __future__ import annotations

from onnxdeconv.outputs.tables import (
    OutputPaths,
    json_safe,
    json_text,
    skipped_json,
    write_csv,
    write_json,
    write_text,
)

__all__ = [
    "OutputPaths",
    "json_safe",
    "json_text",
    "skipped_json",
    "write_csv",
    "write_json",
    "write_text",
]
