"""The one forward runner: a model's forward pass on ONNX Runtime, at any number of inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import onnx
import onnxruntime as ort

from onnxdeconv.errors import InputError
from onnxdeconv.graph.passes import (
    check_model,
    detach_weights,
    instrument,
    large_weights,
    prune_to,
    skeleton,
    with_input_shape,
)
from onnxdeconv.prepared import PreparedModel
from onnxdeconv.runtime.sessions import Device, create_session, provider_of, run_bound

logger = logging.getLogger(__name__)

#: What :meth:`ForwardRunner.run_bound` returns per tensor: a device value, or host data.
Value: TypeAlias = ort.OrtValue | np.ndarray


class ForwardRunner:
    """One forward session of a prepared model that returns chosen tensors for any batch.

    It fixes the per-sample input shape, exposes the tensors asked for (and the switches of the
    max pools named in ``switches_of``), creates the session on the provider that loads, and runs
    a model with a fixed batch chunk by chunk, filling a short last chunk with copies of its last
    row and dropping what they give.

    Args:
        prepared: The model, prepared for its input size.
        expose: Tensors to return besides the model's outputs.
        switches_of: Outputs of max pools whose switches (``Indices``) to return as well.
        keep_outputs: Keep the model's own outputs; otherwise the graph is pruned to what
            ``expose`` needs (the rest of a classifier would only slow loading).
        device: Where ONNX Runtime runs (``auto``: CUDA where it loads).
        model: Run this graph instead of one built from ``prepared``: a graph over the same
            image input (a cut or linearised copy of the model), run as it is.
        threads: Intra-op threads (default: ONNX Runtime's).

    Example:
        >>> runner = ForwardRunner(prepared, expose=["relu2"])
        >>> runner.provider
        'CPUExecutionProvider'
        >>> runner.run(images)["relu2"].shape   # images [N, 1, 28, 28]
        (N, 16, 14, 14)
    """

    def __init__(
        self,
        prepared: PreparedModel,
        expose: Sequence[str] = (),
        *,
        switches_of: Sequence[str] = (),
        keep_outputs: bool = True,
        device: Device = "auto",
        model: onnx.ModelProto | None = None,
        threads: int | None = None,
    ) -> None:
        self.prepared = prepared
        loaded = prepared.loaded
        self.fixed_batch = loaded.fixed_batch
        self.input_name = loaded.input_name
        weights: dict[str, np.ndarray] = {}
        if model is None:
            batch: int | str = self.fixed_batch or "N"
            # Large weights stay where the prepared model holds them: the copies below (and the
            # session) cost what the graph's structure costs.
            weights = large_weights(loaded.model, prepared.constants)
            source = detach_weights(loaded.model, weights)
            # Switches do not exist before instrumenting; their pools stay with what needs them.
            kept = [name for name in expose if name in prepared.info]
            source = source if keep_outputs else prune_to(source, kept)
            sized = with_input_shape(source, loaded.input_name, (batch, *prepared.input_shape))
            model, _ = instrument(sized, expose, switches_of, prepared.info, batch=batch)
            check_model(skeleton(model), full_check=True)
        self.model = model
        self.session = create_session(model, device, threads, weights)
        #: The tensors a run returns by default: every output of the graph, in order.
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.provider = provider_of(self.session)
        logger.info("forward pass runs on %s", self.provider)

    def check_inputs(self, inputs: np.ndarray) -> None:
        """Raise :class:`InputError` unless ``inputs`` is ``[N, *input_shape]``, in its dtype."""
        loaded = self.prepared.loaded
        shape = self.prepared.input_shape
        if inputs.ndim != len(shape) + 1 or tuple(inputs.shape[1:]) != shape:
            raise InputError(
                f"input array has shape {list(inputs.shape)}; the model expects "
                f"[N, {', '.join(map(str, shape))}]"
            )
        if inputs.dtype != loaded.input_dtype:
            raise InputError(
                f"input array is {inputs.dtype}; the model's input '{loaded.input_name}' is "
                f"{loaded.input_dtype}: convert it with .astype(np.{loaded.input_dtype})"
            )

    def _chunks(self, count: int, chunk: int | None) -> list[tuple[int, int]]:
        step = self.fixed_batch or chunk or max(count, 1)
        return [(start, min(start + step, count)) for start in range(0, count, step)]

    def _filled(self, rows: np.ndarray) -> np.ndarray:
        # A model with a fixed batch runs full batches only: repeat the last row.
        short = (self.fixed_batch or len(rows)) - len(rows)
        return np.concatenate([rows, np.repeat(rows[-1:], short, axis=0)]) if short else rows

    def run(
        self,
        inputs: np.ndarray | Callable[[int, int], np.ndarray],
        names: Sequence[str] | None = None,
        *,
        count: int | None = None,
        chunk: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the forward pass and return ``names`` (default: every output) on the host.

        Args:
            inputs: ``[N, *input_shape]``, or a function ``(start, stop) -> inputs[start:stop]``
                that builds each chunk when asked, so that the whole batch never sits in memory.
            names: Tensors to return.
            count: N, where ``inputs`` is a function.
            chunk: Inputs per run (default: all at once; a fixed-batch model runs its batch).
            progress: Called with the number of inputs done after each run.

        Returns:
            Each tensor, ``[N, ...]``.
        """
        wanted = list(dict.fromkeys(names if names is not None else self.outputs))
        if callable(inputs):
            if count is None:
                raise ValueError("count is needed when inputs is a function")
            build = inputs
        else:
            self.check_inputs(inputs)
            count = len(inputs)
            array = inputs

            def build(start: int, stop: int) -> np.ndarray:
                return array[start:stop]

        if count < 1:
            raise InputError("no inputs to run: give at least one")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for start, stop in self._chunks(count, chunk):
            rows = build(start, stop)
            values = self.session.run(wanted, {self.input_name: self._filled(rows)})
            for name, value in zip(wanted, values, strict=True):
                result = np.asarray(value)
                parts[name].append(result[: stop - start] if result.ndim else result)
            if progress is not None:
                progress(stop)
        return {name: _joined(name, arrays) for name, arrays in parts.items()}

    def run_bound(
        self, inputs: np.ndarray, names: Sequence[str], to_host: Sequence[str] = ()
    ) -> dict[str, Value]:
        """Run with IO binding: tensors stay on the session's device, except ``to_host``.

        A fixed-batch model given another number of inputs runs chunk by chunk, and then every
        tensor comes back on the host, joined.
        """
        self.check_inputs(inputs)
        wanted = list(dict.fromkeys(names))
        if self.fixed_batch is None or self.fixed_batch == len(inputs):
            return dict(run_bound(self.session, {self.input_name: inputs}, wanted, to_host))
        return dict(self.run(inputs, wanted))


def _joined(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    """The chunks of one tensor, joined along the batch; a scalar comes from one run only."""
    if arrays[0].ndim:
        return np.concatenate(arrays)
    if len(arrays) > 1:
        # A scalar computed from the inputs (a dynamic quantizer's scale) is a statistic of the
        # whole batch: chunks would each have their own.
        raise ValueError(f"'{name}' is a scalar of the whole batch: run the inputs in one chunk")
    return arrays[0]
