"""Graph passes: small functions from a model to a model.

Each pass documents whether it mutates its argument. Passes that return a new model never touch the
one they were given, so a caller can keep the user's model pristine.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper, version_converter

from onnxdeconv.errors import ModelLoadError, first_line
from onnxdeconv.graph import experimental

logger = logging.getLogger(__name__)

#: MaxPool gained its ``Indices`` output in opset 8; older models are upgraded to this opset.
UPGRADE_OPSET = 13
SWITCHES_SUFFIX = "__switches"
#: The ONNX reductions. ReduceSum's ``axes`` became an input (with ``noop_with_empty_axes``) at
#: opset 13, the others' at 18.
REDUCE_OPS = (
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)


@dataclass(frozen=True)
class TensorInfo:
    """Static facts about one tensor: full shape (batch first) and ONNX element type."""

    shape: tuple[int | str, ...]
    elem_type: int

    @property
    def per_sample(self) -> tuple[int, ...]:
        """The shape without its batch dimension; every entry must be static."""
        dims = self.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"shape {self.shape} is not static past the batch dimension")
        return tuple(int(d) for d in dims)

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds floating point numbers."""
        return self.elem_type in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.BFLOAT16,
        )


def default_opset(model: onnx.ModelProto) -> int:
    """Return the opset of the default (``ai.onnx``) domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a deep copy of ``model``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def node_attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Attribute ``name`` of ``node`` as a Python value (strings decoded), or ``default``."""
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def names_read(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    """Every name the nodes read, including any name read or returned inside their subgraphs.

    A superset of what they read from outside (inner names count too), which is what pruning
    needs: a tensor in it is never dropped.
    """
    names: set[str] = set()
    for node in nodes:
        names.update(name for name in node.input if name)
        for attribute in node.attribute:
            graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
            if attribute.type == onnx.AttributeProto.GRAPHS:
                graphs += list(attribute.graphs)
            for graph in graphs:
                names |= names_read(graph.node)
                names.update(o.name for o in graph.output)
    return names


class ConstantValues(Mapping[str, np.ndarray]):
    """Initializers and ``Constant`` node values of a graph by name, converted when first read.

    Converting every weight of a large model up front costs time and memory that a projection
    from an early layer never needs.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._protos: dict[str, onnx.TensorProto | onnx.AttributeProto] = {
            t.name: t for t in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name in (
                        "value",
                        "value_float",
                        "value_int",
                        "value_floats",
                        "value_ints",
                    ):
                        self._protos[node.output[0]] = attr
        self._values: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            proto = self._protos[name]
            if isinstance(proto, onnx.TensorProto):
                self._values[name] = tensor_values(proto)
            elif proto.name == "value":
                self._values[name] = numpy_helper.to_array(proto.t)
            else:
                self._values[name] = np.array(helper.get_attribute_value(proto))
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __getstate__(self) -> dict[str, Any]:
        # Weights left in the model's data file travel read in: the unpickling process (a Ray
        # worker on another node) may not see that file.
        values = dict(self._values)
        for name, proto in self._protos.items():
            if isinstance(proto, onnx.TensorProto) and is_detached(proto):
                values[name] = np.array(self[name])
        return {**self.__dict__, "_values": values}


def constant_tensors(graph: onnx.GraphProto) -> ConstantValues:
    """Initializers and ``Constant`` node values of ``graph`` by name (does not mutate)."""
    return ConstantValues(graph)


def strip_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop graph inputs that only restate initializers (IR-3 style); mutates and returns ``model``.

    Also gives every unnamed node a unique name so that errors can point at it, and every
    experimental node one (their stand-ins are matched to them by name).
    """
    out = model
    initializers = {t.name for t in out.graph.initializer}
    kept = [i for i in out.graph.input if i.name not in initializers]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    out.ir_version = max(out.ir_version, 4)
    counts = Counter(n.name for n in out.graph.node if n.name)
    used = set(counts)
    for index, node in enumerate(out.graph.node):
        if not node.name or (counts[node.name] > 1 and experimental.is_experimental(node)):
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return out


def upgrade_opset(model: onnx.ModelProto, minimum: int = 8) -> onnx.ModelProto:
    """Convert models older than ``minimum`` to :data:`UPGRADE_OPSET`; returns a new model.

    Models already at ``minimum`` or newer are returned as they are (not copied). A model with
    experimental ops (:mod:`~onnxdeconv.graph.experimental`) goes to their last opset instead,
    the newest at which ONNX Runtime still runs them; they are converted as their stand-ins and
    put back.
    """
    opset = default_opset(model)
    if opset >= minimum:
        return model
    originals = {node.name: node for node in experimental.experimental_nodes(model)}
    target = experimental.LAST_OPSET if originals else UPGRADE_OPSET
    try:
        upgraded = version_converter.convert_version(experimental.with_stand_ins(model), target)
    except Exception as exc:  # the converter raises bare RuntimeErrors with C++ messages
        first = first_line(exc)
        raise ModelLoadError(
            f"cannot upgrade the model from opset {opset} to {target} ({first}); "
            "re-export it at opset 8 or newer"
        ) from exc
    experimental.restore(upgraded, originals)
    upgraded.ir_version = max(
        upgraded.ir_version, helper.find_min_ir_version_for(list(upgraded.opset_import))
    )
    logger.info("upgraded the model from opset %d to %d", opset, target)
    return upgraded


def tensor_values(proto: onnx.TensorProto) -> np.ndarray:
    """An initializer's values, also where they stay in the model's data file.

    A damaged initializer (data that does not fill its dims) is refused.
    """
    if is_detached(proto):
        stored = stored_data(proto)
        if stored is None:
            raise ValueError(f"initializer '{proto.name}' is detached: its data comes at run time")
        return stored
    try:
        return numpy_helper.to_array(proto)
    except ValueError as exc:
        raise ModelLoadError(
            f"initializer '{proto.name}' of shape {list(proto.dims)} cannot be read ({exc}): the "
            "model file or its external data is damaged; export the model again"
        ) from exc


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """Run the ONNX checker, on stand-ins for the experimental ops (see ``experimental``).

    The checker passes an experimental op only with a warning printed on stdout, and its full
    check (strict shape inference) cannot see through one; the stand-ins have the same types
    and shapes. Does not mutate ``model``.
    """
    onnx.checker.check_model(experimental.with_stand_ins(model), full_check=full_check)


#: Float initializers with more elements than this are left out of a skeleton.
SKELETON_LIMIT = 64


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has every part but its initializers (the caller's)."""
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    graph, source = out.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    return out


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the large float weights, which become graph inputs of the same type and shape.

    Shape inference, the checker and graph surgery cost time in proportion to the bytes of a
    model; on its skeleton they cost what the graph's structure costs. Small and integer
    initializers (shapes, axes) keep their values. Does not mutate ``model``.
    """
    out = _without_initializers(model)
    graph, source = out.graph, model.graph
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    for tensor in source.initializer:
        size = int(np.prod(tensor.dims)) if tensor.dims else 1
        if tensor.data_type in floats and size > SKELETON_LIMIT:
            graph.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
        else:
            graph.initializer.append(tensor)
    return out


#: Initializers of at least this many bytes reach ONNX Runtime as buffers the process already
#: holds (see :func:`detach_weights`) instead of serialized copies.
SHARED_WEIGHT_BYTES = 1 << 20
#: The external-data location of a detached initializer: no file, the buffer comes at run time.
SHARED_LOCATION = "onnxdeconv-shared-weight"
#: The ``external_data`` key of a detached initializer whose data stays in the model's external
#: data file: the file's absolute path (with ``offset``). The data is mapped, not read, so that
#: only the weights a projection uses are read from disk.
STORED_FILE = "onnxdeconv-file"


def large_weights(
    model: onnx.ModelProto, values: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The initializers of ``model`` of at least :data:`SHARED_WEIGHT_BYTES`, from ``values``.

    Initializers whose data stays in the model's file (:data:`STORED_FILE`) are taken whatever
    their size: a session cannot read them from its serialized graph.

    ``values`` must hold the same tensors as arrays (such as the constants of the prepared model
    whose graph ``model`` is, converted once): a session given these shares them instead of a
    copy of its own. An array of another type or shape is not taken.
    """
    large = {}
    for tensor in model.graph.initializer:
        size = int(np.prod(tensor.dims)) if tensor.dims else 1
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        small = size * dtype.itemsize < SHARED_WEIGHT_BYTES and not is_detached(tensor)
        if small or tensor.name not in values:
            continue
        array = values[tensor.name]
        if array.dtype == dtype and array.shape == tuple(tensor.dims):
            large[tensor.name] = array
    return large


def is_detached(tensor: onnx.TensorProto) -> bool:
    """Whether ``tensor`` is a placeholder left by :func:`detach_weights`."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        entry.key == "location" and entry.value == SHARED_LOCATION for entry in tensor.external_data
    )


def detach_weights(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy whose initializers ``names`` hold no data: placeholders of the same type and shape.

    Copies of the graph (pruning, instrumenting) then cost what its structure costs, and a
    session gets the data from the buffers the process holds (``create_session(weights=...)``).
    Does not mutate ``model``.
    """
    detached = set(names)
    out = _without_initializers(model)
    graph, source = out.graph, model.graph
    for tensor in source.initializer:
        if tensor.name in detached and not is_detached(tensor):
            tensor = detached_tensor(tensor.name, tensor.data_type, tensor.dims)
        graph.initializer.append(tensor)
    return out


def detached_tensor(
    name: str, data_type: int, dims: Iterable[int], stored: tuple[str, int] | None = None
) -> onnx.TensorProto:
    """An initializer without data, which a session gets from a buffer (see ``detach_weights``).

    ``stored`` is the absolute path and offset of a file that holds the data (the model's own
    external data), which :func:`stored_data` maps.
    """
    tensor = onnx.TensorProto(name=name, data_type=data_type, dims=list(dims))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entries = [("location", SHARED_LOCATION)]
    if stored is not None:
        entries += [(STORED_FILE, stored[0]), ("offset", str(stored[1]))]
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def stored_data(tensor: onnx.TensorProto) -> np.ndarray | None:
    """The data of a detached initializer mapped from its file (read-only), or None without one.

    Raises:
        ModelLoadError: The file is gone or shorter than it was when the model was loaded.
    """
    entries = {entry.key: entry.value for entry in tensor.external_data}
    path = entries.get(STORED_FILE)
    if path is None:
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    offset, dims = int(entries["offset"]), tuple(tensor.dims)
    length = math.prod(dims) * dtype.itemsize
    try:
        status = os.stat(path)
        whole = _mapped_file(path, status.st_size, status.st_mtime_ns)
        if offset + length > len(whole):
            raise ValueError(f"{length} bytes at offset {offset} run past its {len(whole)}")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the external data of initializer '{tensor.name}' in '{path}' cannot be read "
            f"({first_line(exc)}): the file changed after the model was loaded; load it again"
        ) from exc
    data = whole[offset : offset + length].view(dtype).reshape(dims)
    # An element that does not start on a multiple of its size is copied once, aligned.
    return data if offset % dtype.itemsize == 0 else np.array(data)


@functools.lru_cache(maxsize=64)
def _mapped_file(path: str, size: int, modified_ns: int) -> np.memmap:
    """One read-only mapping per data file (and version), whatever the number of its tensors.

    A mapping per tensor would hold a file descriptor each: a model of a thousand weights would
    run out of them.
    """
    del size, modified_ns  # the cache key: a rewritten file is mapped again
    return np.memmap(path, dtype=np.uint8, mode="r")


def attach_weights(
    model: onnx.ModelProto, weights: Mapping[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    """A self-contained copy of ``model``: its detached initializers hold their data.

    The data comes from ``weights``, else from the file a stored initializer names.
    """
    out = copy_model(model)
    weights = weights or {}
    for index, tensor in enumerate(out.graph.initializer):
        if is_detached(tensor):
            data = weights[tensor.name] if tensor.name in weights else tensor_values(tensor)
            out.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(np.asarray(data), tensor.name)
            )
    return out


def prune_to(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy that computes only ``outputs`` (its graph outputs), without unused nodes or weights.

    Does not mutate ``model``.
    """
    needed = set(outputs)
    kept = []
    for node in reversed(model.graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    graph = out.graph
    graph.name = model.graph.name
    graph.node.extend(reversed(kept))
    graph.input.extend(i for i in model.graph.input if i.name in needed)
    graph.initializer.extend(t for t in model.graph.initializer if t.name in needed)
    known = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    graph.value_info.extend(v for v in model.graph.value_info if v.name in needed)
    for name in outputs:
        graph.output.append(
            known[name] if name in known else helper.make_empty_tensor_value_info(name)
        )
    return out


def with_input_shape(
    model: onnx.ModelProto, input_name: str, shape: Sequence[int | str]
) -> onnx.ModelProto:
    """Return a copy whose input ``input_name`` has the given dims (str means symbolic)."""
    out = copy_model(model)
    for value in out.graph.input:
        if value.name != input_name:
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)
    return out


def infer_tensor_info(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Run ONNX shape inference with data propagation; does not mutate ``model``.

    Returns:
        Every tensor whose type is known, including those with partially known shapes.
    """
    try:
        # Experimental ops have no schema: their stand-ins carry the shapes through.
        inferred = onnx.shape_inference.infer_shapes(
            experimental.with_stand_ins(model), data_prop=True
        )
    except onnx.shape_inference.InferenceError as exc:
        raise ModelLoadError(f"shape inference failed on the model: {exc}") from exc
    info: dict[str, TensorInfo] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.elem_type:
            continue
        dims: tuple[int | str, ...] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tensor_type.shape.dim
        )
        if not tensor_type.HasField("shape"):
            dims = ("?",)
        info[value.name] = TensorInfo(dims, tensor_type.elem_type)
    for init in graph.initializer:
        info[init.name] = TensorInfo(tuple(init.dims), init.data_type)
    return info


def measure_shapes(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], info: Mapping[str, TensorInfo]
) -> dict[str, TensorInfo]:
    """Run the model once on ``feeds`` and record the actual shape of every node output.

    ONNX shape inference can disagree with ONNX Runtime (ceil-mode pools whose last window starts
    in the padding, below opset 22), and at batch 1 it cannot tell which reshapes move the batch;
    a real run at the probe batch settles both. Does not mutate ``model``.
    """
    import onnxruntime as ort

    probe = attach_weights(model)
    present = {o.name for o in probe.graph.output}
    names = [out for node in probe.graph.node for out in node.output if out and out in info]
    for name in names:
        if name not in present:
            probe.graph.output.append(
                helper.make_tensor_value_info(name, info[name].elem_type, None)
            )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = session.run(names, dict(feeds))
    measured = dict(info)
    for name, value in zip(names, values, strict=True):
        measured[name] = TensorInfo(tuple(np.shape(value)), info[name].elem_type)
    return measured


def _declared_shape(shape: tuple[int | str, ...], batch: int | str) -> list[int | str | None]:
    """The shape an exposed output declares: the batch, then only the rank.

    A tensor without a batch axis (a dynamic quantizer's scale, a scalar of the whole batch, and
    what is computed from it and constants) declares only its rank.
    """
    if shape and (isinstance(shape[0], str) or shape[0] == batch):
        return [batch] + [None] * (len(shape) - 1)
    return [None] * len(shape)


def instrument(
    model: onnx.ModelProto,
    expose: Iterable[str],
    switches_of: Iterable[str],
    info: Mapping[str, TensorInfo],
    batch: int | str = "N",
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Make a forward graph emit what the deconv graph needs; returns a new model.

    Every MaxPool whose output is in ``switches_of`` gets its ``Indices`` output (the switches), and
    every tensor in ``expose`` and every switches tensor becomes a graph output. The original
    outputs stay first and unchanged.

    Args:
        model: The forward model (not mutated).
        expose: Names of tensors to append to the graph outputs.
        switches_of: Output names of the MaxPool nodes whose switches are needed.
        info: Tensor types and shapes, used to type the new outputs.
        batch: The batch dimension the new outputs declare.

    Returns:
        The instrumented model, and a map from each MaxPool output to its switches tensor name.
    """
    graph = gs.import_onnx(model)
    producers = {out.name: node for node in graph.nodes for out in node.outputs}
    output_names = {t.name for t in graph.outputs}
    switch_names: dict[str, str] = {}

    def add_output(tensor: gs.Variable) -> None:
        if tensor.name not in output_names:
            graph.outputs.append(tensor)
            output_names.add(tensor.name)

    for pooled in switches_of:
        node = producers[pooled]
        if len(node.outputs) > 1 and node.outputs[1].name:
            switches = node.outputs[1]
        else:
            switches = gs.Variable(pooled + SWITCHES_SUFFIX, dtype=np.int64)
            node.outputs = [node.outputs[0], switches]
        switches.dtype = np.int64
        # Only the rank is declared: below opset 22 ONNX infers some ceil-mode pool sizes
        # differently from ONNX Runtime, and full_check must not see a conflict.
        switches.shape = [batch] + [None] * len(info[pooled].per_sample)
        switch_names[pooled] = switches.name
        add_output(switches)
    tensors = graph.tensors()
    for name in expose:
        tensor = tensors[name]
        if name in output_names:
            # An output that a pruning pass left untyped gets its type; others stay as they are.
            if tensor.dtype is None and name in info:
                tensor.dtype = helper.tensor_dtype_to_np_dtype(info[name].elem_type)
                tensor.shape = _declared_shape(info[name].shape, batch)
            continue
        tensor.dtype = helper.tensor_dtype_to_np_dtype(info[name].elem_type)
        tensor.shape = _declared_shape(info[name].shape, batch)
        add_output(tensor)
    out = gs.export_onnx(graph, do_type_check=True)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    out.producer_name = model.producer_name
    return out, switch_names


def promote_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a float32 copy of a float16 model (weights, inputs, outputs, casts and constants).

    Checks that compare finite differences need float32 precision; the user's model is untouched.
    """
    out = copy_model(model)
    graph = out.graph
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == half:
            wide = tensor_values(tensor).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(wide, tensor.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = single
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == half:
                attribute.i = single
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == half:
                wide = numpy_helper.to_array(attribute.t).astype(np.float32)
                attribute.t.CopyFrom(numpy_helper.from_array(wide, attribute.t.name))
    return out
