"""Transpose rules: one module per op family, each rule kept in :data:`TRANSPOSE_RULES`.

A rule receives the signal arriving at its node's output and returns the signals for the node's
inputs that lie on the projection path. Rules validate the attributes they support and raise
:class:`~onnxdeconv.errors.UnsupportedOpError` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxdeconv.deconv.emitter import DeconvGraph
from onnxdeconv.deconv.names import RULES as RULES
from onnxdeconv.deconv.names import Rule as Rule
from onnxdeconv.errors import UnsupportedOpError
from onnxdeconv.graph.passes import TensorInfo, node_attribute
from onnxdeconv.registry import OpRegistry


@dataclass
class TransposeContext:
    """What a rule may read about its node, and the graph it writes into."""

    node: onnx.NodeProto
    rule: Rule
    info: Mapping[str, TensorInfo]
    constants: Mapping[str, np.ndarray]
    on_path: Sequence[bool]
    graph: DeconvGraph
    switches: Mapping[str, str]
    #: The summed signal at each output of the node, ``None`` where none arrives. Rules of
    #: single-output ops read the ``signal`` argument; multi-output ones (Split) read this.
    output_signals: Sequence[str | None] = ()

    def attr(self, name: str, default: Any = None) -> Any:
        """Return attribute ``name`` of the node (text decoded), or ``default``."""
        return node_attribute(self.node, name, default)

    def unsupported(self, reason: str, parameter: str | None = None) -> UnsupportedOpError:
        """Build the error for this node with ``reason`` saying what is supported.

        ``parameter`` names the library parameter that would avoid it (``rule``), if any.
        """
        return UnsupportedOpError(self.node.name, self.node.op_type, reason, parameter=parameter)

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample (batch-free) static shape of tensor ``name``."""
        return self.info[name].per_sample

    def input_shape(self, index: int = 0) -> tuple[int, ...]:
        """Per-sample shape of input ``index``."""
        return self.shape(self.node.input[index])

    def output_shape(self, index: int = 0) -> tuple[int, ...]:
        """Per-sample shape of output ``index``."""
        return self.shape(self.node.output[index])

    def constant(self, index: int, what: str) -> np.ndarray:
        """Return input ``index`` as a constant array, or raise if it is computed at run time."""
        name = self.node.input[index] if index < len(self.node.input) else ""
        if name not in self.constants:
            raise self.unsupported(f"the {what} must be a constant (initializer or Constant node)")
        return np.asarray(self.constants[name])

    def optional_constant(self, index: int) -> np.ndarray | None:
        """Return input ``index`` as a constant array if it is present and constant."""
        name = self.node.input[index] if index < len(self.node.input) else ""
        return np.asarray(self.constants[name]) if name in self.constants else None

    def tied_weight(self, weight: np.ndarray) -> str:
        """Input 1, read as constant ``weight``, as a float32 constant of the deconv graph.

        The transpose uses the forward weights as they are ("tied"), as Zeiler & Fergus do.
        """
        return self.graph.const(weight.astype(np.float32, copy=False), self.node.input[1])

    def only_first_input_on_path(self, reason: str = "") -> None:
        """Raise unless the data input 0 is the only input that depends on the image.

        ``reason`` replaces the message's default (which calls input 0 the first input).
        """
        if not self.on_path[0] or any(self.on_path[1:]):
            raise self.unsupported(reason or "only the first input may depend on the image input")


#: The signature every rule has: ``(context, signal at output 0) -> {input index: signal}``.
TransposeRule = Callable[[TransposeContext, str], dict[int, str]]

#: Rule of each op type; the modules of this package register theirs on the first lookup.
TRANSPOSE_RULES: OpRegistry[TransposeRule] = OpRegistry("transpose rule", __name__)
#: Decorator: ``@transpose_rule("Conv")`` registers a rule (twice for one op raises).
transpose_rule = TRANSPOSE_RULES.register
