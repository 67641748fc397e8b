"""A memory budget for batched deconv runs: how many rows one run may carry.

ONNX Runtime's CPU arena grows to the largest run a session has seen and never gives memory
back, so K projections in one run cost memory in proportion to K, for the rest of the process.
Runs of at most :func:`rows_per_run` rows bound the memory whatever K is asked for: the arena
grows to the first and largest run, and the smaller ones that follow fit in it.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING

from onnxdeconv.errors import OnnxDeconvError

if TYPE_CHECKING:
    import onnx

#: The budget when none is given: about 1 GB of activations per deconv run.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: The environment variable that sets the budget when the caller gives none (such as ``2G``).
MEMORY_BUDGET_ENV = "ONNXDECONV_MEMORY_BUDGET"
#: What ONNX Runtime holds per row over :func:`bytes_per_row`'s estimate, with a margin
#: (measured: 2.5 to 2.6 times on ZFNet).
HELD_PER_PLANNED = 3.0
#: The batch size at which the graph's shapes are inferred (a value no other axis has).
_PROBE_ROWS = 7
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``text``: a number with an optional unit K, M, G or T (powers of 1024).

    ``1G``, ``512M``, ``1.5GB`` and ``1000000`` are all sizes.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise OnnxDeconvError(
            f"memory budget '{text}' is no size: give a positive number of bytes, optionally "
            "with a unit K, M or G (such as 512M or 2G)",
            parameter="memory_budget",
        )
    return max(1, int(float(match.group(1)) * _UNITS[match.group(2).upper()]))


def memory_budget(budget: int | str | None = None) -> int:
    """The budget in bytes: ``budget`` itself, else the environment's, else the default."""
    if budget is None:
        budget = os.environ.get(MEMORY_BUDGET_ENV) or DEFAULT_MEMORY_BUDGET
    if isinstance(budget, str):
        return parse_size(budget)
    if budget <= 0:
        raise OnnxDeconvError(
            f"memory budget {budget} is not positive: give a number of bytes",
            parameter="memory_budget",
        )
    return int(budget)


def bytes_per_row(model: onnx.ModelProto) -> int:
    """Peak bytes of the activations one row of a deconv graph holds while the graph runs.

    The graph's shapes are inferred at a fixed batch; walking its nodes in order, each tensor
    lives from the node that makes it to the last that reads it (as ONNX Runtime's memory
    planner reuses buffers), and the largest sum of live tensors with a batch axis, per row, is
    the estimate. Forward tensors (one per image, not per row) and weights are left out.
    """
    import onnx  # only where a graph is measured: a cached projector stores its estimate
    from onnx import helper

    from onnxdeconv.graph.passes import skeleton

    # The weights become inputs (they do not change shapes); constants that shape ops read
    # (Reshape targets, ...) stay values.
    probe = skeleton(model)
    for value in [*probe.graph.input, *probe.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == "K":
                dim.dim_value = _PROBE_ROWS
            elif dim.dim_param == "N":
                dim.dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if dims and dims[0] == _PROBE_ROWS and all(dims):
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
            sizes[value.name] = math.prod(dims[1:]) * itemsize
    last_use = {name: index for index, node in enumerate(model.graph.node) for name in node.input}
    live: dict[str, int] = {}
    peak = 0
    for index, node in enumerate(model.graph.node):
        live.update({name: sizes[name] for name in node.output if name in sizes})
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= index:
                del live[name]
    return max(1, peak)


def rows_per_run(budget: int, per_row: int) -> int:
    """How many rows one run may carry under ``budget`` bytes: at least one.

    ``per_row`` is :func:`bytes_per_row`. ONNX Runtime holds more than that peak: its arena
    grows in doubling steps, and kernels keep buffers of their own (measured on ZFNet's
    windowed relu5 graph at 76 and 152 rows a run: 2.5 to 2.6 times), so the budget is shared
    out at :data:`HELD_PER_PLANNED` times ``per_row``.
    """
    return max(1, int(budget // (HELD_PER_PLANNED * max(1, per_row))))


def run_sizes(rows: int, most: int) -> list[int]:
    """The row counts of the fewest runs of at most ``most`` rows that carry ``rows`` rows.

    The runs are as even as they can be (they differ by one row at most): no run is much
    smaller than the others, and none larger than ``most``, so that the arena of ONNX Runtime,
    sized by the first and largest run, serves the others without growing.
    """
    count = max(1, math.ceil(rows / max(1, most)))
    size, extra = divmod(rows, count)
    return [size + 1] * extra + [size] * (count - extra)
