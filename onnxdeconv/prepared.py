"""The model prepared for one input size: tensor shapes, layers, aliases and deconv plans."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from onnxdeconv.deconv.builder import DeconvPlan, PathBlock, build_deconv, path_blocks
from onnxdeconv.deconv.emitter import DECONV_OPSET
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.deconv.window import build_windowed
from onnxdeconv.errors import (
    InputError,
    OnnxDeconvError,
    UnknownLayerError,
    UnsupportedOpError,
    first_line,
)
from onnxdeconv.graph.fold import fold_constants
from onnxdeconv.graph.fuse_lrn import fuse_local_response_norm
from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.graph.passes import (
    TensorInfo,
    constant_tensors,
    infer_tensor_info,
    measure_shapes,
    skeleton,
    with_input_shape,
)
from onnxdeconv.graph.paths import path_nodes, path_tensors
from onnxdeconv.graph.quantized import REFUSED_QUANTIZED_OPS, dequantize_constants
from onnxdeconv.graph.receptive_field import ReceptiveField, receptive_fields

logger = logging.getLogger(__name__)

#: What :meth:`PreparedModel.blocked` makes of a tensor the walk does not know: build it.
_UNSURE = PathBlock("unsure", "", 0)
#: A cached deconv plan: dense (always built) or windowed (None where the path is no chain).
_Plan = TypeVar("_Plan", bound="DeconvPlan | None")


@dataclass(frozen=True)
class Layer:
    """A tensor that a projection can start from, as ``onnxdeconv layers`` lists it."""

    name: str
    alias: str
    op: str
    shape: tuple[int, ...]
    receptive_field: ReceptiveField
    projectable: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The row ``onnxdeconv layers --json`` prints for this tensor."""
        receptive = self.receptive_field
        return {
            "name": self.name,
            "alias": self.alias,
            "op": self.op,
            "shape": list(self.shape),
            "receptive_field": {
                "size": None if receptive.size is None else list(receptive.size),
                "stride": list(receptive.stride),
                "offset": list(receptive.offset),
            },
            "projectable": self.projectable,
            "reason": self.reason,
        }


@dataclass
class PreparedModel:
    """A loaded model with static shapes for one per-sample input shape."""

    loaded: LoadedModel
    input_shape: tuple[int, ...]
    info: dict[str, TensorInfo]
    constants: Mapping[str, np.ndarray]
    _plans: dict[tuple[str, str, int], DeconvPlan] = field(default_factory=dict, repr=False)
    _windowed: dict[tuple[str, str, int], DeconvPlan | None] = field(
        default_factory=dict, repr=False
    )
    _blocks: dict[str, dict[str, PathBlock | None]] = field(default_factory=dict, repr=False)
    _block_reasons: dict[tuple[str, PathBlock], str] = field(default_factory=dict, repr=False)

    @property
    def graph(self) -> onnx.GraphProto:
        """The forward graph."""
        return self.loaded.model.graph

    @cached_property
    def producers(self) -> dict[str, onnx.NodeProto]:
        """The node that computes each tensor."""
        return {out: node for node in self.graph.node for out in node.output if out}

    @cached_property
    def candidates(self) -> list[str]:
        """Batched float tensors computed from the input, in topological order.

        A quantizer's integer outputs carry the signal but are no layers: their dequantized
        float views are. The integer maps of QOperator ops (QLinearConv, ...) are listed, so
        that choosing one says why it cannot be projected.
        """
        reached = path_tensors(self.graph, self.loaded.input_name, self.info)
        names = []
        for node in self.graph.node:
            is_map = node.op_type in REFUSED_QUANTIZED_OPS
            for out in node.output:
                info = self.info.get(out)
                if info is None or not (info.is_float or is_map):
                    continue
                if out in reached and len(info.shape) >= 2:
                    names.append(out)
        return names

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Short alias -> tensor name, e.g. ``conv3`` for the third Conv output."""
        counts: Counter[str] = Counter()
        aliases = {}
        for name in self.candidates:
            op = self.producers[name].op_type.lower()
            counts[op] += 1
            aliases[f"{op}{counts[op]}"] = name
        return aliases

    @cached_property
    def alias_of(self) -> dict[str, str]:
        """Tensor name -> its short alias (the inverse of :attr:`aliases`)."""
        return {name: alias for alias, name in self.aliases.items()}

    @cached_property
    def channels_first_orders(self) -> dict[str, tuple[int, ...]]:
        """Layers whose channel axis is not axis 1, and the axis order that puts it there.

        A TensorFlow model's NHWC maps (``[N, H, W, C]``) come back as ``(0, 3, 1, 2)``: the
        library shows every map channels first, so channels and positions mean the same on every
        layer. Found from where the receptive field places the input's spatial axes, in models
        that turn them channels first somewhere.
        """
        orders: dict[str, tuple[int, ...]] = {}
        # Only where the model itself turns the input channels first (as ONNX Conv needs): a
        # channels-last guess on an input the graph never transposes is not a layout.
        fields = self.tensor_fields
        if not any(
            f.axes is not None and f.axes == tuple(range(2, 2 + len(f.axes)))
            for f in fields.values()
        ):
            return orders
        for name, tensor_field in fields.items():
            axes = tensor_field.axes
            shape = self.info[name].per_sample if name in self.info else ()
            if axes is None or None in axes or len(shape) != len(axes) + 1:
                continue
            spatial = [int(a) for a in axes if a is not None]
            channel = [a for a in range(1, len(shape) + 1) if a not in spatial]
            order = (0, *channel, *spatial)
            if order != tuple(range(len(order))):
                orders[name] = order
        return orders

    @cached_property
    def receptive_fields(self) -> dict[str, ReceptiveField]:
        """Receptive field of every tensor computed from the input, for its channels-first view.

        Positions index the map's spatial axes in the input's order (see
        :attr:`channels_first_orders`).
        """
        fields = dict(self.tensor_fields)
        for name in self.channels_first_orders:
            view = fields[name]
            assert view.axes is not None
            fields[name] = replace(view, axes=tuple(range(2, 2 + len(view.axes))))
        return fields

    @cached_property
    def tensor_fields(self) -> dict[str, ReceptiveField]:
        """Receptive fields with their axes as they lie in each tensor (NHWC maps included)."""
        return receptive_fields(self.graph, self.loaded.input_name, self.info, self.constants)

    def resolve(self, layer: str) -> str:
        """Return the tensor name for a tensor name or alias."""
        if layer in self.candidates:
            return layer
        if layer in self.aliases:
            return self.aliases[layer]
        raise UnknownLayerError(layer, [*self.candidates, *self.aliases])

    def plan(self, target: str, rule: Rule = "deconvnet", opset: int = DECONV_OPSET) -> DeconvPlan:
        """The deconv graph for ``target`` under ``rule`` (built once, then cached).

        Raises:
            UnsupportedOpError: A node on the path has no transpose under ``rule``; the message
                names the nearest projectable layer before that node.
        """
        try:
            return self._built(self._plans, build_deconv, target, rule, opset)
        except UnsupportedOpError as exc:
            raise exc.before(self._nearest_projectable(target, exc, rule)) from None

    def _nearest_projectable(self, target: str, exc: UnsupportedOpError, rule: Rule) -> str | None:
        """The deepest projectable layer that the node ``exc`` names depends on: "alias ('name')".

        The node is the deepest one on the path to ``target`` with the name and op of ``exc``
        (the one the builder, which walks back from ``target``, met first); when the graph
        holds no such node (a rewritten one), the layers ``target`` depends on are searched.
        """
        blocking = next(
            (
                node
                for node in path_nodes(self.graph, target, self.reached)
                if node.name == exc.node_name and node.op_type == exc.op_type
            ),
            None,
        )
        before = {target} if blocking is None else set(blocking.input) & self.reached
        for node in reversed(self.graph.node):
            if any(out in before for out in node.output):
                before.update(name for name in node.input if name in self.reached)
        before.discard(target)
        for name in reversed(self.candidates):
            if name not in before:
                continue
            try:
                self._built(self._plans, build_deconv, name, rule, DECONV_OPSET)
            except OnnxDeconvError:
                continue
            return f"{self.alias_of[name]} ('{name}')"
        return None

    @cached_property
    def reached(self) -> set[str]:
        """The float tensors computed from the image input (where a signal can go)."""
        return path_tensors(self.graph, self.loaded.input_name, self.info)

    def windowed_plan(self, target: str, rule: Rule = "deconvnet") -> DeconvPlan | None:
        """The windowed deconv graph for ``target``, or None where its path is no plain chain.

        See :mod:`onnxdeconv.deconv.window`; it serves signals that are one-hot in space.
        """
        self.plan(target, rule)  # validates every node on the path
        return self._built(self._windowed, build_windowed, target, rule, DECONV_OPSET)

    def _built(
        self,
        cache: dict[tuple[str, str, int], _Plan],
        build: Callable[..., _Plan],
        target: str,
        rule: Rule,
        opset: int,
    ) -> _Plan:
        """``build``'s graph for ``target`` from ``cache``, built and kept there the first time."""
        key = (target, rule, opset)
        if key not in cache:
            cache[key] = build(
                self.loaded.model,
                self.loaded.input_name,
                target,
                self.info,
                rule,
                self.constants,
                opset,
                self.reached,
            )
        return cache[key]

    def upper_bound(self, layer: str) -> float | None:
        """The constant upper bound of ``layer``'s values (6 for a ReLU6), or None.

        ``layer`` is a tensor name or alias. Its producer is a Clip with a constant maximum (an
        attribute before opset 11, an input after) or a Min with a scalar constant (ReLU6
        written as ``Min(Relu(x), 6)``).
        """
        node = self.producers.get(self.resolve(layer))
        if node is None:
            return None
        if node.op_type == "Clip":
            if len(node.input) == 1:
                high = next((a.f for a in node.attribute if a.name == "max"), None)
                return None if high is None else float(high)
            if len(node.input) < 3 or not node.input[2]:
                return None
            return self._scalar(node.input[2])
        if node.op_type == "Min":
            bounds = [self._scalar(name) for name in node.input if name in self.constants]
            return min((b for b in bounds if b is not None), default=None)
        return None

    def _scalar(self, name: str) -> float | None:
        """The value of constant ``name`` where it is a scalar, else None."""
        value = self.constants.get(name)
        return None if value is None or value.size != 1 else float(value.ravel()[0])

    def layers(self) -> list[Layer]:
        """Every candidate tensor with its alias, shape, receptive field and projectability."""
        by_name = self.alias_of
        rows = []
        for name in self.candidates:
            reason = self.blocked(name)
            rows.append(
                Layer(
                    name=name,
                    alias=by_name[name],
                    op=self.producers[name].op_type,
                    shape=self.info[name].per_sample,
                    receptive_field=self.receptive_fields[name],
                    projectable=not reason,
                    reason=reason,
                )
            )
        return rows

    def blocked(self, layer: str, rule: Rule = "deconvnet") -> str:
        """Why ``layer`` (a tensor name) cannot be projected under ``rule``; "" where it can.

        Says what :meth:`plan` would raise without building a graph per layer (which would cost
        the square of the depth to list a model's layers): one walk finds what blocks each
        tensor (:func:`~onnxdeconv.deconv.builder.path_blocks`), and the message is built once
        per block. Only tensors the walk cannot judge are built.
        """
        if rule not in self._blocks:
            self._blocks[rule] = path_blocks(
                self.loaded.model,
                self.loaded.input_name,
                self.info,
                rule,
                self.constants,
                self.reached,
            )
        block = self._blocks[rule].get(layer, _UNSURE)
        if block is None:
            return ""
        known = block.kind != "unsure"
        if known and (rule, block) in self._block_reasons:
            return self._block_reasons[rule, block]
        try:
            self.plan(layer, rule)
            return ""
        except OnnxDeconvError as exc:
            reason = str(exc)
        if known:
            self._block_reasons[rule, block] = reason
        return reason

    def default_layer(self) -> str:
        """The deepest projectable tensor."""
        reason = ""
        for name in reversed(self.candidates):
            # What blocks the deepest layers is found once, not by a build per layer.
            reason = self.blocked(name)
            if not reason:
                return name
        raise OnnxDeconvError(f"no tensor of the model is projectable: {reason or None}")


def prepare(loaded: LoadedModel, input_shape: tuple[int, ...] | None = None) -> PreparedModel:
    """Fix the per-sample input shape and infer static shapes for every tensor.

    Args:
        loaded: The model from :func:`~onnxdeconv.graph.load.load_model`.
        input_shape: Per-sample input shape (without batch); needed when the model's is dynamic.
    """
    declared = loaded.input_shape[1:]
    if input_shape is None:
        if not all(isinstance(d, int) and d > 0 for d in declared):
            raise InputError(
                f"input '{loaded.input_name}' has dynamic dims {list(loaded.input_shape)}: give "
                "the input size (such as 224,224)",
                parameter="input_shape",
            )
        input_shape = tuple(int(d) for d in declared)
    input_shape = tuple(int(d) for d in input_shape)
    for want, have in zip(declared, input_shape, strict=False):
        if isinstance(want, int) and want > 0 and want != have:
            raise InputError(
                f"input '{loaded.input_name}' expects per-sample shape "
                f"{list(declared)}, got {list(input_shape)}"
            )
    if len(input_shape) != len(declared):
        raise InputError(
            f"input '{loaded.input_name}' has rank {len(declared) + 1}; got per-sample shape "
            f"{list(input_shape)}"
        )
    # Shapes are inferred at a probe batch: static everywhere, and a dynamic batch of 2 shows which
    # reshapes keep the batch axis. The batch stays free when the graphs run.
    fixed_batch = loaded.fixed_batch
    # Shape arithmetic that the input size settles becomes constants that rules can read; then
    # PyTorch's decomposed LocalResponseNorm (whose pads old exports compute) is one LRN again.
    # A quantized model's int8 weights become the float weights they stand for.
    folded = dequantize_constants(loaded.model)
    folded = fold_constants(folded, loaded.input_name, input_shape, fixed_batch)
    folded = fuse_local_response_norm(folded)
    if folded is not loaded.model:
        loaded = replace(loaded, model=folded)
    probe_batch = fixed_batch or 2
    shape = (probe_batch, *input_shape)
    info = infer_tensor_info(with_input_shape(skeleton(loaded.model), loaded.input_name, shape))
    if _needs_measuring(loaded.model.graph, loaded.input_name, info):
        sized = with_input_shape(loaded.model, loaded.input_name, shape)
        zeros = np.zeros(shape, loaded.input_dtype)
        try:
            info = measure_shapes(sized, {loaded.input_name: zeros}, info)
        except ort.capi.onnxruntime_pybind11_state.Fail as exc:
            raise InputError(
                f"the model does not run on an input of shape {list(shape)}: {first_line(exc)}"
            ) from exc
    _refuse_degenerate(loaded, info)
    return PreparedModel(loaded, input_shape, info, constant_tensors(loaded.model.graph))


#: Elements per sample above which a tensor is refused: 8 GiB of float32 for one image is a
#: mis-read attribute (pads of 2**31) or a mistaken input size, never a real feature map.
MAX_TENSOR_ELEMENTS = 2**31


def _refuse_degenerate(loaded: LoadedModel, info: Mapping[str, TensorInfo]) -> None:
    """Refuse tensors on the input's path that are empty or absurdly large, before any work."""
    for name in path_tensors(loaded.model.graph, loaded.input_name, info):
        shape = info[name].shape
        dims = [d for d in shape[1:] if isinstance(d, int)]
        # An empty feature map (rank >= 3) has no unit to project; empty vectors can be legal.
        if (0 in dims and len(shape) >= 3) or math.prod(dims) > MAX_TENSOR_ELEMENTS:
            raise InputError(
                f"tensor '{name}' would have shape {list(shape)} per batch: check the "
                "attributes (pads, strides, kernel_shape) of the node that makes it, or the "
                "input size"
            )


def _needs_measuring(
    graph: onnx.GraphProto, input_name: str, info: Mapping[str, TensorInfo]
) -> bool:
    """Whether inferred shapes may be wrong or missing, so that one real run must settle them.

    Below opset 22, ONNX shape inference keeps a ceil-mode pooling window that starts in the end
    padding, which ONNX Runtime drops; and some graphs leave shapes unknown.
    """
    for node in graph.node:
        if node.op_type in ("MaxPool", "AveragePool") and any(
            a.name == "ceil_mode" and a.i for a in node.attribute
        ):
            return True
    for name in path_tensors(graph, input_name, info):
        dims = info[name].shape
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return True
    return False
