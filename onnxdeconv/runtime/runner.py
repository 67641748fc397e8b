"""The one forward runner: a model's forward pass on ONNX Runtime, at any number of inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import onnxruntime as ort

from onnxdeconv.errors import InputError, ModelLoadError, first_line
from onnxdeconv.runtime.sessions import Device, create_session, provider_of, run_bound

if TYPE_CHECKING:
    import onnx

    from onnxdeconv.prepared import PreparedModel

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
        self._prepared: PreparedModel | Callable[[], PreparedModel] = prepared
        loaded = prepared.loaded
        # A layer that is also a model output, or named twice, is one output of the session.
        expose, switches_of = list(dict.fromkeys(expose)), list(dict.fromkeys(switches_of))
        self.fixed_batch = loaded.fixed_batch
        self.input_name = loaded.input_name
        self.input_shape = prepared.input_shape
        self.input_dtype = loaded.input_dtype
        #: The data of the graph's detached large weights (shared with the prepared model).
        self.weights: dict[str, np.ndarray] = {}
        if model is None:
            import onnx

            from onnxdeconv.graph.passes import (
                check_model,
                detach_weights,
                instrument,
                large_weights,
                prune_to,
                skeleton,
                with_input_shape,
            )

            batch: int | str = self.fixed_batch or "N"
            # Switches do not exist before instrumenting; their pools stay with what needs them.
            kept = [name for name in expose if name in prepared.info]
            source = loaded.model if keep_outputs else prune_to(loaded.model, kept)
            # Pruned first, so that only the weights the graph keeps are read as arrays (not a
            # classifier's, often most of the model). They stay where the prepared model holds
            # them: the copies below (and the session) cost what the graph's structure costs.
            self.weights = large_weights(source, prepared.constants)
            source = detach_weights(source, self.weights)
            sized = with_input_shape(source, loaded.input_name, (batch, *prepared.input_shape))
            model, _ = instrument(sized, expose, switches_of, prepared.info, batch=batch)
            try:
                check_model(skeleton(model), full_check=True)
            except onnx.shape_inference.InferenceError as exc:
                # The model's own declared shapes contradict each other (an output of batch 1
                # behind an input of batch 5): strict inference sees it once outputs are exposed.
                first = first_line(exc)
                raise ModelLoadError(
                    f"the model's declared shapes contradict its graph: {first}; fix or remove "
                    "the declared shapes of its inputs and outputs"
                ) from exc
        self._model: onnx.ModelProto | Path = model
        where = f"'{loaded.path}'" if loaded.path else "the model"
        self._open(create_session(model, device, threads, where, weights=self.weights))

    @classmethod
    def from_file(
        cls,
        path: Path,
        prepared: Callable[[], PreparedModel],
        *,
        input_name: str,
        input_shape: tuple[int, ...],
        input_dtype: np.dtype,
        fixed_batch: int | None,
        quantized: bool = False,
        device: Device = "auto",
        threads: int | None = None,
    ) -> ForwardRunner:
        """The runner of an instrumented graph built and saved before (:mod:`~onnxdeconv.cache`).

        ONNX Runtime reads the file; ``prepared`` loads the model only if :attr:`prepared` or
        :attr:`model` is asked for.
        """
        runner = cls.__new__(cls)
        runner._prepared = prepared
        runner.fixed_batch = fixed_batch
        runner.input_name = input_name
        runner.input_shape = input_shape
        runner.input_dtype = input_dtype
        runner._model = path
        runner.weights = {}
        runner._open(create_session(path, device, threads, f"'{path}'", quantized=quantized))
        return runner

    def _open(self, session: ort.InferenceSession) -> None:
        self.session = session
        #: The tensors a run returns by default: every output of the graph, in order.
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.provider = provider_of(self.session)
        logger.info("forward pass runs on %s", self.provider)

    @property
    def prepared(self) -> PreparedModel:
        """The model, prepared for its input size (loaded now where the graph came from a file)."""
        if callable(self._prepared):
            self._prepared = self._prepared()
        return self._prepared

    @property
    def model(self) -> onnx.ModelProto:
        """The instrumented forward graph that the session runs."""
        if isinstance(self._model, Path):
            import onnx

            self._model = onnx.load(str(self._model))
        return self._model

    def check_inputs(self, inputs: np.ndarray) -> None:
        """Raise :class:`InputError` unless ``inputs`` is ``[N, *input_shape]``, in its dtype."""
        shape = self.input_shape
        if inputs.ndim != len(shape) + 1 or tuple(inputs.shape[1:]) != shape:
            raise InputError(
                f"input array has shape {list(inputs.shape)}; the model expects "
                f"[N, {', '.join(map(str, shape))}]"
            )
        if inputs.dtype != self.input_dtype:
            raise InputError(
                f"input array is {inputs.dtype}; the model's input '{self.input_name}' is "
                f"{self.input_dtype}: convert it with .astype(np.{self.input_dtype})"
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
