"""The table of ``onnxdeconv layers``: the tensors a projection can start from."""

from __future__ import annotations

from collections.abc import Sequence

from onnxdeconv.prepared import Layer

HEADER = ("alias", "tensor", "op", "shape", "receptive field", "projectable")


def layers_table(rows: Sequence[Layer]) -> list[str]:
    """One line per layer, columns padded to their widest cell; the last column is free."""
    table = [HEADER]
    for r in rows:
        status = "yes" if r.projectable else f"no: {r.reason}"
        shape = "x".join(map(str, r.shape))
        table.append((r.alias, r.name, r.op, shape, r.receptive_field.describe(), status))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in table
    ]
