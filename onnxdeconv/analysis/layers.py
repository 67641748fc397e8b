"""Which layers each analysis looks at when the user names none.

Each analysis has its own default: the paper's figures show different layers for different
questions. They live here together, under distinct names, so that a reader can compare them.
"""

from __future__ import annotations

import math

import numpy as np

from onnxdeconv.errors import OnnxDeconvError, SelectionError
from onnxdeconv.prepared import PreparedModel

#: Ops that only rescale or rectify their input: a layer followed by one of them is not a feature
#: map of its own for the default layer choice (conv10 and its Relu are one layer).
ELEMENTWISE_OPS = frozenset(
    {
        "BatchNormalization",
        "Clip",
        "Dropout",
        "Elu",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "LeakyRelu",
        "PRelu",
        "Relu",
        "Selu",
        "Sigmoid",
        "Softplus",
        "Tanh",
    }
)
#: At most this many layers are chosen by default, spread evenly over the depth.
MAX_DEFAULT_LAYERS = 5
#: ``check`` runs its adjoint test on at most this many layers by default: each layer costs a
#: deconv graph and a session (every layer of a real 279-layer detector took 529 s).
MAX_CHECK_LAYERS = 16
#: Ops whose outputs count as rectified layers for the default choice.
RECTIFIERS = {"Relu"}
#: Ops that only reshape, copy or normalise a tensor on the way to the class output.
PASSIVE_OPS = {
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Cast",
    "Softmax",
    "LogSoftmax",
}
#: Ops whose initializer inputs (weights and biases) the cascade re-initialises.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def feature_layers(prepared: PreparedModel) -> list[str]:
    """The deepest rectified layer at each spatial resolution, in graph order.

    These are the layers whose outputs a pooling or strided stage reads, like the paper's layers
    1 to 5. A model without Relu spatial layers gets the deepest spatial tensor per resolution.
    """

    def spatial(name: str) -> tuple[int, ...] | None:
        shape = prepared.info[name].per_sample
        if len(shape) < 2 or int(np.prod(shape[1:])) <= 1:
            return None
        return shape[1:]

    candidates = [name for name in prepared.candidates if spatial(name) is not None]
    rectified = [n for n in candidates if prepared.producers[n].op_type == "Relu"]
    deepest: dict[tuple[int, ...], str] = {}
    for name in rectified or candidates:
        size = spatial(name)
        assert size is not None
        deepest[size] = name
    order = {name: i for i, name in enumerate(prepared.candidates)}
    return sorted(deepest.values(), key=order.__getitem__)


def evolution_layers(prepared: PreparedModel, limit: int = MAX_DEFAULT_LAYERS) -> list[str]:
    """The projectable rectified layers with spatial maps, at most ``limit`` spread over depth."""
    found = []
    for name in prepared.candidates:
        if prepared.producers[name].op_type not in RECTIFIERS:
            continue
        if len(prepared.info[name].per_sample) < 2:
            continue
        try:
            prepared.plan(name)
        except OnnxDeconvError:
            continue
        found.append(name)
    if not found:
        raise SelectionError(
            "the model has no projectable Relu layer with spatial feature maps: choose the layers "
            "yourself"
        )
    if len(found) <= limit:
        return found
    # Keep the first and the last, as the paper's rows span the whole depth.
    picks = sorted({round(i * (len(found) - 1) / (limit - 1)) for i in range(limit)})
    return [found[i] for i in picks]


def check_layers(prepared: PreparedModel, limit: int = MAX_CHECK_LAYERS) -> list[str]:
    """The projectable layers that ``check`` runs its adjoint test on, in depth order.

    At most ``limit`` (0: every one), spread evenly over the depth from the first to the last,
    and always the deepest layer with spatial maps (the last conv stage, where a wrong transpose
    rule has touched every stage below).
    """
    layers = prepared.layers()
    names = [layer.name for layer in layers if layer.projectable]
    if not limit or len(names) <= limit:
        return names
    # A map has more than one position: a pooled [C, 1, 1] tensor is not one.
    spatial = [
        i
        for i, layer in enumerate(layers)
        if layer.projectable and len(layer.shape) >= 3 and sum(d > 1 for d in layer.shape) >= 2
    ]
    deepest_map = names.index(layers[spatial[-1]].name) if spatial else len(names) - 1
    if limit == 1:
        return [names[deepest_map]]
    picks = {round(i * (len(names) - 1) / (limit - 1)) for i in range(limit)}
    if deepest_map not in picks:
        # Replace the nearest inner pick, so that the sample still spans the whole depth.
        inner = sorted(picks - {0, len(names) - 1}, key=lambda i: abs(i - deepest_map)) or [0]
        picks.discard(inner[0])
        picks.add(deepest_map)
    return [names[i] for i in sorted(picks)]


def invariance_layers(prepared: PreparedModel) -> list[str]:
    """The paper's bottom and top layers, in graph order, without repeats.

    * bottom: the first Relu output (the first Conv output, or the first layer, when there is none);
    * the deepest spatial layer: the last one with more than one position (the dims after the
      channel axis);
    * top: the last layer with one position before the class output (its softmax and reshapes
      aside), like the paper's layer 7: DigitNet's ``relu4``, SqueezeNet's pooled class scores.

    Among layers that hold the same values (a Flatten or Dropout of another), the one an op
    computes is taken.
    """
    candidates = prepared.candidates
    if not candidates:
        raise OnnxDeconvError("the model has no layer computed from its input: nothing to measure")
    ops = {name: prepared.producers[name].op_type for name in candidates}
    bottom = next(
        (n for n in candidates if ops[n] == "Relu"),
        next((n for n in candidates if ops[n] == "Conv"), candidates[0]),
    )
    head = _output_chain(prepared)
    inner = [n for n in candidates if n not in head]
    computed = [n for n in inner if ops[n] not in PASSIVE_OPS] or inner
    spatial = [n for n in computed if math.prod(prepared.info[n].per_sample[1:]) > 1]
    vectors = [n for n in computed if math.prod(prepared.info[n].per_sample[1:]) == 1]
    chosen = {bottom, *spatial[-1:], *vectors[-1:]}
    return [n for n in candidates if n in chosen]


def _output_chain(prepared: PreparedModel) -> set[str]:
    """The class output and the tensors it only reshapes or normalises (its softmax input...)."""
    tensor = prepared.graph.output[-1].name
    chain = {tensor}
    while tensor in prepared.producers:
        node = prepared.producers[tensor]
        if node.op_type not in PASSIVE_OPS or not node.input:
            break
        tensor = node.input[0]
        if tensor in prepared.producers and prepared.producers[tensor].op_type in PASSIVE_OPS:
            chain.add(tensor)
    return chain


def _is_channels_first_map(prepared: PreparedModel, name: str) -> bool:
    # A [C, H, W] map whose H and W are the input's (not an NHWC tensor of a TensorFlow model).
    field = prepared.receptive_fields[name]
    rank = len(prepared.info[name].per_sample)
    if field.size is None or rank < 3:
        return False
    return field.axes is None or tuple(field.axes) == tuple(range(2, 1 + rank))


def correspondence_layers(prepared: PreparedModel) -> list[str]:
    """The deepest spatial layer and the one before it.

    A tensor that an elementwise op turns into another of the same shape (a Conv before its Relu,
    a Concat before its Dropout) counts as that op's output, so the two layers are distinct
    feature maps.

    Raises:
        SelectionError: The model has no spatial layer.
    """
    info = prepared.info
    spatial = [name for name in prepared.candidates if _is_channels_first_map(prepared, name)]
    absorbed = set()
    for name in spatial:
        node = prepared.producers[name]
        if node.op_type in ELEMENTWISE_OPS and node.input and node.input[0] in prepared.info:
            source = node.input[0]
            if info[source].per_sample == info[name].per_sample:
                absorbed.add(source)
    kept = [name for name in spatial if name not in absorbed]
    if not kept:
        raise SelectionError("the model has no spatial feature map: choose the layers yourself")
    return kept[-2:]


def occlusion_layer(prepared: PreparedModel) -> str:
    """The last projectable tensor that still has a spatial map (more than one position)."""
    for name in reversed(prepared.candidates):
        shape = prepared.info[name].per_sample
        if len(shape) < 3 or int(np.prod(shape[1:])) <= 1:
            continue
        try:
            prepared.plan(name)
        except OnnxDeconvError:
            continue
        return name
    raise OnnxDeconvError(
        "the model has no projectable layer with a spatial feature map: choose the layer yourself"
    )


def sanity_layer(prepared: PreparedModel) -> str:
    """The deepest projectable output of a weighted layer that still has a feature map.

    The output of a Conv, before its rectifier, plays the part of the logit that Adebayo et al.
    explain: a rectified unit that stops firing under random weights passes no signal back under
    the guided and gradient rules. Falls back on the deepest projectable feature map of any op.
    """
    spatial = [
        name
        for name in reversed(prepared.candidates)
        if len(shape := prepared.info[name].per_sample) >= 3 and math.prod(shape[1:]) > 1
    ]
    weighted = [n for n in spatial if prepared.producers[n].op_type in WEIGHTED_OPS]
    for name in [*weighted, *spatial]:
        try:
            prepared.plan(name)
        except OnnxDeconvError:
            continue
        return name
    return prepared.default_layer()
