"""Windowed deconv graphs: each row carries only its unit's receptive field, not whole maps.

A projection of one activation is zero outside that unit's receptive field at every layer. When
the path from the input to the target is a plain chain of convolutions, rectifiers, max pools
and per-channel affine ops, the receptive field at each tensor is a window of a size fixed by the
chain, whose origin moves with the unit's position: ``origin * scale + shift`` per spatial axis.
A windowed graph carries the signal as ``[K, C, *window]`` with per-row origins, so early layers
transpose a few thousand positions per row instead of whole maps. It computes the same numbers
as the dense graph of :mod:`onnxdeconv.deconv.builder` for signals that are one-hot in space,
and returns them as each row's window at the input: a crop, which the host pastes only where a
whole input is wanted. Each row's window of a forward tensor (switches, rectifier inputs) is one
gather of single values from the flattened tensor; nothing per row touches a whole map.

Window arithmetic, per spatial axis, for a Conv or MaxPool of stride ``s``, dilated kernel extent
``e`` and leading pad ``p``: a window of size ``r`` at origin ``o`` in the output comes from the
input window of size ``(r - 1) * s + e`` at origin ``o * s - p``. ConvTranspose without pads maps
the first onto the second exactly; positions of a window that fall outside the map (the forward
padding) are zeroed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from onnxdeconv.deconv.builder import DeconvPlan, finish_plan, with_switches
from onnxdeconv.deconv.emitter import (
    BATCH_INDEX,
    DECONV_OPSET,
    SIGNAL,
    WINDOW_ORIGIN,
    DeconvGraph,
)
from onnxdeconv.deconv.placement import Placement
from onnxdeconv.deconv.rules import TRANSPOSE_RULES, Rule, TransposeContext
from onnxdeconv.deconv.rules.spatial import read_window
from onnxdeconv.graph.passes import TensorInfo
from onnxdeconv.graph.paths import path_nodes, path_tensors

#: Ops a windowed chain may contain. The per-channel ones reuse their dense rule unchanged.
CHAIN_OPS = {"Conv", "MaxPool", "Relu", "BatchNormalization", "Identity", "Dropout"}
_PER_CHANNEL = {"BatchNormalization", "Identity", "Dropout"}
#: Windows stop (the signal is pasted into whole maps) where they would exceed this fraction of
#: a map: the index arithmetic of windows then costs more than it saves.
MAX_WINDOW_FRACTION = 0.5


def chain_to(
    graph: onnx.GraphProto,
    input_name: str,
    target: str,
    info: Mapping[str, TensorInfo],
    reached: set[str] | None = None,
) -> list[onnx.NodeProto] | None:
    """The nodes from ``target`` back to ``input_name`` if they form a windowable chain."""
    if reached is None:
        reached = path_tensors(graph, input_name, info)
    if target not in reached:
        return None
    nodes = path_nodes(graph, target, reached)
    current = target
    for node in nodes:
        on_path = [name for name in node.input if name in reached]
        if node.op_type not in CHAIN_OPS or node.output[0] != current or on_path != [node.input[0]]:
            return None
        current = node.input[0]
    return nodes if current == input_name and nodes else None


class _Windows:
    """Emits the per-row index arithmetic of windowed tensors into a deconv graph."""

    def __init__(self, graph: DeconvGraph, rank: int) -> None:
        self.graph = graph
        self.rank = rank
        self._cache: dict[tuple[str, object], str] = {}

    def _cached(self, key: tuple[str, object], build: Callable[[], str]) -> str:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def coordinates(self, place: Placement, axis: int) -> str:
        """``[K, size]`` int64: the map coordinates a window covers along spatial ``axis``."""

        def build() -> str:
            g = self.graph
            origin = g.op(
                "Slice",
                [
                    WINDOW_ORIGIN,
                    g.const([axis], "axis_start"),
                    g.const([axis + 1], "axis_end"),
                    g.const([1], "one_i"),
                ],
                hint="origin_axis",
            )
            scaled = g.op("Mul", [origin, g.const(np.array(place.scale[axis]), "win_scale")])
            start = g.op("Add", [scaled, g.const(np.array(place.shift[axis]), "win_shift")])
            span = g.const(np.arange(place.size[axis]).reshape(1, -1), "win_span")
            return g.op("Add", [start, span], hint="win_coords")

        return self._cached(("coords", (place, axis)), build)

    def _spread(self, name: str, axis: int, leading: int) -> str:
        # Put a [K, size] tensor on spatial axis ``axis`` of [K, <leading 1s>, s1, s2, ...].
        axes = [1 + i for i in range(leading)] + [
            1 + leading + other for other in range(self.rank) if other != axis
        ]
        if not axes:
            return name
        return self.graph.op("Unsqueeze", [name, self.graph.const(axes, "win_axes")])

    def valid(self, place: Placement, spatial: Sequence[int]) -> tuple[str, str]:
        """``[K, 1, *size]`` masks of the window positions inside the map: (bool, float)."""

        def build() -> str:
            g = self.graph
            mask = ""
            for axis in range(self.rank):
                coords = self.coordinates(place, axis)
                inside = g.op(
                    "And",
                    [
                        g.op("GreaterOrEqual", [coords, g.const(np.array(0), "zero_i64")]),
                        g.op("Less", [coords, g.const(np.array(spatial[axis]), "win_limit")]),
                    ],
                    hint="inside",
                )
                spread = self._spread(inside, axis, 1)
                mask = spread if not mask else g.op("And", [mask, spread], hint="inside")
            return mask

        mask = self._cached(("valid", (place, tuple(spatial))), build)
        as_float = self._cached(
            ("valid_f", (place, tuple(spatial))),
            lambda: self.graph.op("Cast", [mask], hint="inside_f", to=onnx.TensorProto.FLOAT),
        )
        return mask, as_float

    def flat_index(self, place: Placement, spatial: Sequence[int]) -> str:
        """``[K, *size]`` int64: each window position's row-major index in the map (clamped)."""

        def build() -> str:
            g = self.graph
            flat = ""
            for axis in range(self.rank):
                coords = g.op(
                    "Min",
                    [
                        g.op(
                            "Max", [self.coordinates(place, axis), g.const(np.array(0), "zero_i64")]
                        ),
                        g.const(np.array(spatial[axis] - 1), "win_last"),
                    ],
                    hint="clamped",
                )
                stride = math.prod(spatial[axis + 1 :])
                if stride != 1:
                    coords = g.op("Mul", [coords, g.const(np.array(stride), "map_stride")])
                spread = self._spread(coords, axis, 0)
                flat = spread if not flat else g.op("Add", [flat, spread], hint="flat")
            return flat

        return self._cached(("flat", (place, tuple(spatial))), build)

    def planes(self, channels: int) -> str:
        """``[K, C, 1, ...]`` int64: each row's channel planes in its image, ``n * C + c``."""

        def build() -> str:
            g = self.graph
            first = g.op("Mul", [BATCH_INDEX, g.const(np.array(channels), "channels")])
            first = g.op("Unsqueeze", [first, g.const([1], "channel_axis")])
            planes = g.op("Add", [first, g.const(np.arange(channels)[None], "channel_ids")])
            return g.op(
                "Unsqueeze",
                [planes, g.const(list(range(2, 2 + self.rank)), "win_axes")],
                hint="planes",
            )

        return self._cached(("planes", channels), build)

    def gather(
        self, forward_name: str, place: Placement, shape: Sequence[int], as_float: bool
    ) -> str:
        """Forward tensor ``forward_name`` ``[N, C, *map]`` cut to each row's window.

        One gather of single values from the flattened tensor: no copy of whole maps, and the
        window comes out channels first.
        """

        def build() -> str:
            g = self.graph
            g.add_forward_input(forward_name)
            channels, spatial = shape[0], shape[1:]
            flat = g.op("Reshape", [forward_name, g.const([-1], "flat_shape")])
            starts = g.op(
                "Mul",
                [self.planes(channels), g.const(np.array(math.prod(spatial)), "map_positions")],
            )
            where = g.op(
                "Unsqueeze", [self.flat_index(place, spatial), g.const([1], "channel_axis")]
            )
            index = g.op("Add", [where, starts], hint="win_index")
            return g.op("Gather", [flat, index], hint=f"{forward_name}_win", axis=0)

        window = self._cached(("gather", (forward_name, place)), build)
        if not as_float:
            return window
        return self._cached(
            ("gather_f", (forward_name, place)),
            lambda: self.graph.op("Cast", [window], hint="win_f32", to=onnx.TensorProto.FLOAT),
        )


def build_windowed(
    model: onnx.ModelProto,
    input_name: str,
    target: str,
    info: Mapping[str, TensorInfo],
    rule: Rule,
    constants: Mapping[str, np.ndarray],
    opset: int = DECONV_OPSET,
    reached: set[str] | None = None,
) -> DeconvPlan | None:
    """Build the windowed deconv graph of ``target``, or None where the path is no plain chain.

    The graph has the dense graph's inputs plus ``window_origin`` ``[K, rank]`` int64, the
    position of each row's activation, except that ``signal`` is ``[K, C, 1, ...]``: each row's
    values at that position. It returns each row's window at the input, ``[K, C, *size]``, where
    ``plan.crop`` places it (zero past the input's borders), or whole inputs (``plan.crop``
    None) where windows grew past half a map on the way.
    Call it only after :func:`~onnxdeconv.deconv.builder.build_deconv` succeeded for the same
    target: that one validates the nodes' attributes.
    """
    graph = model.graph
    nodes = chain_to(graph, input_name, target, info, reached)
    target_shape = info[target].per_sample
    rank = len(target_shape) - 1
    if nodes is None or rank < 1:
        return None
    all_info, switches = with_switches(graph, info)
    # Each row's signal is its unit's values over the channels, ``[K, C, 1, ...]``: the window
    # at the target is the unit's one position (given by ``window_origin``).
    deconv = DeconvGraph((target_shape[0], *[1] * rank), all_info)
    deconv.add_input(WINDOW_ORIGIN, onnx.TensorProto.INT64, ["K", rank])
    windows = _Windows(deconv, rank)
    place = Placement((1,) * rank, (0,) * rank, (1,) * rank)
    signal = SIGNAL
    used_switches: dict[str, str] = {}
    dense = False
    for node in nodes:
        context = TransposeContext(
            node=node,
            rule=rule,
            info=all_info,
            constants=constants,
            on_path=[i == 0 for i in range(len(node.input))],
            graph=deconv,
            switches=switches,
            output_signals=[signal],
        )
        if node.op_type == "MaxPool":
            used_switches[node.output[0]] = switches[node.output[0]]
        if not dense and node.op_type in ("Conv", "MaxPool") and _window_too_large(context, place):
            # Past here windows would cover most of each map: whole maps cost less.
            if place.size == (1,) * rank:
                return None
            signal = _paste(windows, signal, place, context.output_shape())
            dense = True
        if dense or node.op_type in _PER_CHANNEL:
            signal = TRANSPOSE_RULES[node.op_type](context, signal)[0]
        elif node.op_type == "Relu":
            signal = _relu(windows, context, signal, place)
        elif node.op_type == "Conv":
            signal, place = _conv(windows, context, signal, place)
        else:
            signal, place = _max_pool(windows, context, signal, place)
    # Each row's window at the input is its crop (zero past the borders: the last transpose
    # masks them); the host pastes crops where whole inputs are wanted.
    return finish_plan(
        deconv,
        signal,
        all_info,
        input_name,
        target,
        rule,
        used_switches,
        opset,
        windowed=True,
        crop=None if dense else place,
    )


def _window_too_large(ctx: TransposeContext, place: Placement) -> bool:
    in_shape = ctx.input_shape()
    if ctx.node.op_type == "Conv":
        kernel = tuple(ctx.constant(1, "weight").shape[2:])
    else:
        kernel = tuple(ctx.attr("kernel_shape"))
    window = read_window(ctx, kernel, in_shape[1:])
    before = place.through(window.strides, window.extent, window.pads_begin)
    return math.prod(before.size) > MAX_WINDOW_FRACTION * math.prod(in_shape[1:])


def _relu(windows: _Windows, ctx: TransposeContext, signal: str, place: Placement) -> str:
    g = windows.graph
    if ctx.rule == "deconvnet":
        return g.op("Relu", [signal], hint="rectified")
    forward_input = windows.gather(ctx.node.input[0], place, ctx.input_shape(), as_float=True)
    positive = g.op("Greater", [forward_input, g.const(0.0, "zero_f")], hint="active")
    gate = g.op("Cast", [positive], hint="active_f32", to=onnx.TensorProto.FLOAT)
    passed = g.op("Relu", [signal], hint="rectified") if ctx.rule == "guided" else signal
    return g.op("Mul", [passed, gate], hint="gated")


def _conv(
    windows: _Windows, ctx: TransposeContext, signal: str, place: Placement
) -> tuple[str, Placement]:
    weight = ctx.constant(1, "weight")
    in_shape = ctx.input_shape()
    window = read_window(ctx, weight.shape[2:], in_shape[1:])
    g = windows.graph
    tied = ctx.tied_weight(weight)
    spread = g.op(
        "ConvTranspose",
        [signal, tied],
        hint="convtranspose",
        strides=list(window.strides),
        dilations=list(window.dilations),
        group=int(ctx.attr("group", 1)),
        pads=[0] * 2 * len(window.kernel),
    )
    before = place.through(window.strides, window.extent, window.pads_begin)
    _, inside = windows.valid(before, in_shape[1:])
    return g.op("Mul", [spread, inside], hint="inside_only"), before


def _max_pool(
    windows: _Windows, ctx: TransposeContext, signal: str, place: Placement
) -> tuple[str, Placement]:
    in_shape, out_shape = ctx.input_shape(), ctx.output_shape()
    kernel = tuple(ctx.attr("kernel_shape"))
    window = read_window(ctx, kernel, in_shape[1:])
    before = place.through(window.strides, window.extent, window.pads_begin)
    g = windows.graph
    spatial = in_shape[1:]
    switches = windows.gather(ctx.switches[ctx.node.output[0]], place, out_shape, as_float=False)
    # A switch is (n*C + c) * P + sum_a coord_a * M_a over the map's axes a (M_a the map's
    # strides; n need not be the row's image: a fixed-batch model's forward runs in chunks).
    # It must become sum_a (coord_a - origin_a) * B_a, with B_a the window's strides. With
    # q_a = (switch mod P) // M_a (so q_-1 = 0 and q_last = switch mod P), coord_a = q_a - S_a *
    # q_(a-1), and the window index is sum_a q_a * (B_a - B_(a+1) * S_(a+1)) - sum_a origin_a *
    # B_a: a Mod, then one Div, Mul and Add per axis but the last, on the rows' windows.
    rank = windows.rank
    map_strides = [math.prod(spatial[a + 1 :]) for a in range(rank)]
    window_strides = [math.prod(before.size[a + 1 :]) for a in range(rank)]
    plane = g.op("Mod", [switches, g.const(np.array(math.prod(spatial)), "map_positions")])
    local = plane
    for a in range(rank - 1):
        quotient = g.op("Div", [plane, g.const(np.array(map_strides[a]), "map_stride")])
        factor = window_strides[a] - window_strides[a + 1] * spatial[a + 1]
        term = g.op("Mul", [quotient, g.const(np.array(factor), "win_factor")])
        local = g.op("Add", [local, term], hint="win_local")
    offset = ""
    for a in range(rank):
        origin = g.op(
            "Slice",
            [
                windows.coordinates(before, a),
                g.const([0], "zero_i"),
                g.const([1], "one_i"),
                g.const([1], "one_i"),
            ],
            hint="win_origin",
        )
        origin = g.op("Mul", [origin, g.const(np.array(window_strides[a]), "win_stride")])
        offset = origin if not offset else g.op("Add", [offset, origin], hint="win_offset")
    # [K, 1] -> [K, 1, 1, ...] against the switches' [K, C, *window].
    offset = g.op("Unsqueeze", [offset, g.const(list(range(2, 2 + rank)), "win_axes")])
    local = g.op("Sub", [local, offset], hint="win_coord")
    inside, _ = windows.valid(place, out_shape[1:])
    local = g.op("Where", [inside, local, g.const(np.array(0), "zero_i64")], hint="win_switches")
    channels = in_shape[0]
    flat_shape = g.const([0, channels, -1], "win_flat_shape")
    unpooled = g.op(
        "ScatterElements",
        [
            g.zeros([channels, math.prod(before.size)]),
            g.op("Reshape", [local, flat_shape], hint="switches_flat"),
            g.op("Reshape", [signal, flat_shape], hint="signal_flat"),
        ],
        hint="unpooled",
        axis=2,
        reduction="add",
    )
    shaped = g.op("Reshape", [unpooled, g.const([0, channels, *before.size], "win_shape")])
    return shaped, before


def _paste(windows: _Windows, signal: str, place: Placement, input_shape: Sequence[int]) -> str:
    """Scatter each row's window into a zero map of the input's shape."""
    g = windows.graph
    channels, spatial = input_shape[0], input_shape[1:]
    positions = math.prod(spatial)
    inside, _ = windows.valid(place, spatial)
    # Positions outside the map go to one spare slot past the end, sliced off afterwards.
    flat = g.op(
        "Where",
        [
            g.op("Squeeze", [inside, g.const([1], "channel_axis")]),
            windows.flat_index(place, spatial),
            g.const(np.array(positions), "spare_slot"),
        ],
        hint="paste_index",
    )
    flat = g.op("Reshape", [flat, g.const([0, 1, -1], "paste_index_shape")])
    index = g.op(
        "Expand",
        [flat, g.const([1, channels, 1], "paste_expand")],
        hint="paste_index_c",
    )
    values = g.op("Reshape", [signal, g.const([0, channels, -1], "win_flat_shape")])
    canvas = g.op(
        "ScatterElements",
        [g.zeros([channels, positions + 1]), index, values],
        hint="pasted",
        axis=2,
        reduction="add",
    )
    cropped = g.op(
        "Slice",
        [canvas, g.const([0], "zero_i"), g.const([positions], "paste_end"), g.const([2], "two_i")],
        hint="pasted_map",
    )
    return g.op("Reshape", [cropped, g.const([0, *input_shape], "paste_shape")])
