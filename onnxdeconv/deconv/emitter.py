"""A small builder of ONNX graphs that the transpose rules write into."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

# The graphs' input and output names live with the rules' names, where no ONNX import is needed.
from onnxdeconv.deconv.names import BATCH_INDEX as BATCH_INDEX
from onnxdeconv.deconv.names import PROJECTION as PROJECTION
from onnxdeconv.deconv.names import SIGNAL as SIGNAL
from onnxdeconv.deconv.names import WINDOW_ORIGIN as WINDOW_ORIGIN
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.passes import SHARED_WEIGHT_BYTES, TensorInfo, detached_tensor

#: Generated graphs stay at opset 18 or lower so that every op has a CUDA kernel (see NOTES);
#: ScatterElements needs 16 for ``reduction``. The ops the rules emit mean the same from 16 to 18.
DECONV_OPSET = 17
OPSET_RANGE = (16, 18)


class DeconvGraph:
    """Accumulates the nodes, weights and inputs of a generated deconv graph.

    Signals are float32 and batched along a symbolic first dimension ``K``: one row per projection.
    Forward tensors (switches, rectifier inputs) enter as extra inputs with the forward batch ``N``
    and are gathered to ``K`` rows by ``batch_index``.
    """

    def __init__(self, signal_shape: Sequence[int], info: dict[str, TensorInfo]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        #: The data of large constants (tied weights), held as the arrays given: their
        #: initializers are placeholders, and sessions share these buffers (see ``detach_weights``).
        self.weights: dict[str, np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = [
            helper.make_tensor_value_info(SIGNAL, onnx.TensorProto.FLOAT, ["K", *signal_shape])
        ]
        self.forward_inputs: list[str] = []
        self._info = info
        # Every forward tensor name is reserved: any of them may later enter as a forward input,
        # and a generated tensor of the same name would break single assignment.
        self._names: set[str] = {SIGNAL, BATCH_INDEX, PROJECTION, WINDOW_ORIGIN, *info}
        # The next suffix to try per base name: names are never freed, so the probing of one
        # base starts where its last one stopped (linear in the graph, not quadratic).
        self._next_suffix: dict[str, int] = {}
        self._consts: dict[str, list[tuple[str, np.ndarray]]] = {}
        self._gathered: dict[str, str] = {}
        self._batch_size: str | None = None

    def fresh(self, hint: str) -> str:
        """Return a tensor name based on ``hint`` that is not used yet."""
        base = hint.replace(":", "_") or "t"
        index = self._next_suffix.get(base, 0)
        name = base if index == 0 else f"{base}_{index}"
        while name in self._names:
            index += 1
            name = f"{base}_{index}"
        self._next_suffix[base] = index + 1
        self._names.add(name)
        return name

    def const(self, value: np.ndarray | float | Sequence[int], hint: str = "const") -> str:
        """Add a constant initializer; float data is stored as float32, integers as int64."""
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float32, copy=False)
        elif array.dtype.kind in "iub":
            array = array.astype(np.int64, copy=False)
        for existing_name, existing in self._consts.get(hint, []):
            if existing is array or (
                existing.dtype == array.dtype
                and existing.shape == array.shape
                and np.array_equal(existing, array)
            ):
                return existing_name
        name = self.fresh(hint)
        self._consts.setdefault(hint, []).append((name, array))
        if array.nbytes >= SHARED_WEIGHT_BYTES:
            self.weights[name] = array
            self.initializers[name] = detached_tensor(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape
            )
        else:
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", **attrs: Any) -> str:
        """Append one single-output node and return its output name."""
        return self.op_multi(op_type, inputs, 1, hint, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: Sequence[str], n_outputs: int, hint: str = "", **attrs: Any
    ) -> list[str]:
        """Append one node with ``n_outputs`` outputs and return their names."""
        stem = hint or op_type.lower()
        outputs = [self.fresh(f"{stem}_{i}" if n_outputs > 1 else stem) for i in range(n_outputs)]
        node = helper.make_node(op_type, list(inputs), outputs, name=self.fresh(f"{stem}_node"))
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        self.nodes.append(node)
        return outputs

    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        """Declare an extra graph input (such as the window origins) and return its name."""
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._names.add(name)
        return name

    def add_forward_input(self, name: str, batched: bool = True) -> None:
        """Declare forward tensor ``name`` an input (with the forward batch ``N`` if batched)."""
        if name in self.forward_inputs:
            return
        if name in (SIGNAL, BATCH_INDEX, PROJECTION, WINDOW_ORIGIN):
            raise OnnxDeconvError(
                f"the deconv graph needs forward tensor '{name}', whose name it reserves for "
                "its own inputs and output: rename that tensor in the model"
            )
        if not self.forward_inputs:
            self.inputs.append(
                helper.make_tensor_value_info(BATCH_INDEX, onnx.TensorProto.INT64, ["K"])
            )
        info = self._info[name]
        shape: list[int | str] = ["N", *info.per_sample] if batched else list(info.shape)
        self.inputs.append(helper.make_tensor_value_info(name, info.elem_type, shape))
        self.forward_inputs.append(name)
        self._names.add(name)

    def held(self, name: str) -> str:
        """Forward tensor ``name`` without a batch axis, as float32, the same for every row.

        Such a tensor is a statistic of the whole forward batch, or computed from one and
        constants: a dynamic quantizer's scale, the scale of an integer product.
        """
        key = f"{name}|held"
        if key in self._gathered:
            return self._gathered[key]
        self.add_forward_input(name, batched=False)
        held = name
        if self._info[name].elem_type != onnx.TensorProto.FLOAT:
            held = self.op("Cast", [name], hint=f"{name}_f32", to=onnx.TensorProto.FLOAT)
        self._gathered[key] = held
        return held

    def forward(self, name: str, as_float: bool = True, modulo: int | None = None) -> str:
        """Return forward tensor ``name`` gathered to one row per projection.

        Args:
            name: A tensor of the instrumented forward graph.
            as_float: Cast floating point tensors to float32 (integer tensors are kept).
            modulo: Take integer values modulo this first (on the N forward rows, which are
                fewer than the K projection rows).
        """
        key = f"{name}|{as_float}|{modulo}"
        if key in self._gathered:
            return self._gathered[key]
        self.add_forward_input(name)
        source = name
        if modulo is not None:
            source = self.op("Mod", [name, self.const(np.array(modulo), "modulus")], hint="local")
        gathered = self.op("Gather", [source, BATCH_INDEX], hint=f"{name}_rows", axis=0)
        if as_float and self._info[name].is_float and self._info[name].elem_type != 1:
            gathered = self.op("Cast", [gathered], hint=f"{name}_f32", to=onnx.TensorProto.FLOAT)
        self._gathered[key] = gathered
        return gathered

    def batch_shape(self, per_sample: Sequence[int]) -> str:
        """Return a 1-D int64 tensor ``[K, *per_sample]``, K read from the signal at run time."""
        if self._batch_size is None:
            shape = self.op("Shape", [SIGNAL], hint="signal_shape")
            self._batch_size = self.op(
                "Slice",
                [shape, self.const([0], "zero_i"), self.const([1], "one_i")],
                hint="batch_size",
            )
        dims = self.const(list(per_sample), "per_sample_shape")
        return self.op("Concat", [self._batch_size, dims], hint="batch_shape", axis=0)

    def zeros(self, per_sample: Sequence[int]) -> str:
        """Return a float32 zero tensor of shape ``[K, *per_sample]``."""
        value = numpy_helper.from_array(np.zeros(1, np.float32), "value")
        return self.op("ConstantOfShape", [self.batch_shape(per_sample)], hint="zeros", value=value)

    def sum(self, signals: Sequence[str], hint: str) -> str:
        """Add signals that arrive at one tensor from several consumers."""
        if len(signals) == 1:
            return signals[0]
        return self.op("Sum", list(signals), hint=f"{hint}_sum")

    def to_model(
        self, projection: str, input_shape: Sequence[int], opset: int = DECONV_OPSET
    ) -> onnx.ModelProto:
        """Finish the graph with ``projection`` as its single output and return the model."""
        self.nodes.append(helper.make_node("Identity", [projection], [PROJECTION]))
        graph = helper.make_graph(
            self.nodes,
            "onnxdeconv_deconv",
            self.inputs,
            [
                helper.make_tensor_value_info(
                    PROJECTION, onnx.TensorProto.FLOAT, ["K", *input_shape]
                )
            ],
            initializer=list(self.initializers.values()),
        )
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxdeconv")
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model
