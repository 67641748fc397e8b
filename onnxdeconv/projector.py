"""Project activations back to pixel space: the forward pass, selections and the batched deconv."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxdeconv.deconv.builder import DeconvPlan
from onnxdeconv.deconv.emitter import BATCH_INDEX, PROJECTION, SIGNAL, WINDOW_ORIGIN
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.errors import SelectionError
from onnxdeconv.graph.load import LoadedModel, load_model
from onnxdeconv.graph.passes import check_model, skeleton
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.runtime import Device, ForwardRunner, create_session, run_bound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """One activation to project: image ``image``, channel ``channel``, at ``position``.

    ``position`` is a spatial index into the feature map, or None for the whole map of the channel
    (every other channel zeroed).
    """

    image: int
    channel: int
    position: tuple[int, ...] | None
    value: float


@dataclass
class ForwardPass:
    """The instrumented forward pass over a batch of inputs."""

    inputs: np.ndarray
    #: The target layer's activations, on the host.
    activations: np.ndarray
    #: Forward tensors the deconv graph needs, kept on the session's device.
    forward_values: dict[str, ort.OrtValue | np.ndarray]


class Projector:
    """Projects activations of one layer of a model back to its input, on ONNX Runtime.

    Examples:
        >>> projector = Projector("models/digitnet.onnx", layer="conv2", rule="deconvnet")
        >>> result = projector.forward(images)             # images: [N, 1, 28, 28] float32
        >>> picks = projector.strongest(result, top=4)
        >>> projections = projector.project(result, picks)  # [4, 1, 28, 28] float32

    ``keep_outputs=True`` keeps the model's own outputs in its forward pass (for analyses that
    read the class scores too); by default the forward graph is pruned to the layer.
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto | LoadedModel | PreparedModel,
        layer: str | None = None,
        rule: Rule = "deconvnet",
        device: Device = "auto",
        input_shape: tuple[int, ...] | None = None,
        keep_outputs: bool = False,
    ) -> None:
        if isinstance(model, PreparedModel):
            self.prepared = model
        else:
            loaded = model if isinstance(model, LoadedModel) else load_model(model)
            self.prepared = prepare(loaded, input_shape)
        self.layer = self.prepared.resolve(layer) if layer else self.prepared.default_layer()
        self.rule = rule
        self.plan = self.prepared.plan(self.layer, rule)
        check_model(skeleton(self.plan.model), full_check=True)
        # Unless the model's outputs are wanted too, the forward graph keeps only what the layer
        # depends on: the rest of a classifier (often most of its weights) would only slow
        # loading. check's faithful.outputs verifies that instrumenting the whole graph leaves
        # the model's outputs unchanged.
        self.keeps_outputs = keep_outputs
        self.runner = ForwardRunner(
            self.prepared,
            expose=[self.layer, *self.plan.forward_inputs],
            switches_of=list(self.plan.switches),
            keep_outputs=keep_outputs,
            device=device,
        )
        self._device = device
        self.provider = self.runner.provider
        self._to_channels_first = self.prepared.channels_first_orders.get(self.layer)
        #: Units the last :meth:`strongest` call left out for sitting at the layer's bound.
        self.skipped_saturated = 0

    @cached_property
    def deconv_session(self) -> ort.InferenceSession:
        """The session of the dense deconv graph (created on first use)."""
        return create_session(self.plan.model, self._device, weights=self.plan.weights)

    @cached_property
    def windowed(self) -> tuple[DeconvPlan, ort.InferenceSession] | None:
        """The windowed deconv graph and its session, where the layer's path allows one."""
        plan = self.prepared.windowed_plan(self.layer, self.rule)
        if plan is None:
            return None
        check_model(skeleton(plan.model), full_check=True)
        return plan, create_session(plan.model, self._device, weights=plan.weights)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape, without the batch dimension."""
        return self.prepared.input_shape

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the target layer, channels first (``[C, *spatial]``)."""
        shape = self.plan.target_shape
        if self._to_channels_first is None:
            return shape
        return tuple(shape[axis - 1] for axis in self._to_channels_first[1:])

    def channels_first(self, activations: np.ndarray) -> np.ndarray:
        """The layer's batched values ``[N, ...]`` as ``[N, C, *spatial]``.

        A channels-last map (an NHWC tensor of a TensorFlow model, found through the receptive
        field's axes) is transposed, so that channels and positions mean the same on every layer.
        """
        if self._to_channels_first is None:
            return activations
        return np.ascontiguousarray(np.transpose(activations, self._to_channels_first))

    def forward(self, inputs: np.ndarray) -> ForwardPass:
        """Run the instrumented forward pass on a batch ``[N, *input_shape]``."""
        names = [self.layer, *self.plan.forward_inputs]
        values = self.runner.run_bound(inputs, names, to_host=(self.layer,))
        layer = values.pop(self.layer)
        host = layer if isinstance(layer, np.ndarray) else layer.numpy()
        return ForwardPass(inputs, self.channels_first(np.asarray(host)), values)

    @cached_property
    def saturation_bound(self) -> float | None:
        """The layer's constant upper bound (6 behind a ReLU6), where its producer has one."""
        return self.prepared.upper_bound(self.layer)

    def strongest(
        self,
        forward: ForwardPass,
        top: int = 1,
        channel: int | None = None,
        position: tuple[int, ...] | str | None = None,
        image: int = 0,
        skip_saturated: bool = True,
    ) -> list[Selection]:
        """Choose what to project from image ``image``.

        A unit at the layer's upper bound (a ReLU6 at 6, see :attr:`saturation_bound`) is
        saturated: its gradient and guided projections are all zero. Unless
        ``skip_saturated`` is False, the arg-max and the ranking of channels leave such units
        out (a channel with no other unit is not taken); :attr:`skipped_saturated` then counts
        the units the choice would have taken otherwise, and a message is logged.

        Args:
            forward: The forward pass.
            top: How many channels to take, strongest (highest maximum) first.
            channel: Project this channel instead of the strongest ones.
            position: A spatial position, ``"all"`` for the whole map, or None for the arg-max.
            image: Index of the image in the batch.
            skip_saturated: Leave units at the layer's upper bound out of the arg-max.
        """
        act = forward.activations[image].astype(np.float32)
        flat = act.reshape(act.shape[0], -1)
        bound = self.saturation_bound if skip_saturated and position is None else None
        ranked = flat if bound is None else np.where(flat >= bound, -np.inf, flat)
        order, unskipped = self._channel_order(flat, ranked, top, channel)
        self._count_saturated(flat, unskipped, bound)
        spatial = act.shape[1:]
        picks = []
        for c in order:
            if position == "all":
                picks.append(Selection(image, int(c), None, float(flat[c].max())))
                continue
            if position is None:
                # An explicitly chosen channel with every unit saturated keeps its arg-max.
                best = int((ranked if np.isfinite(ranked[c].max()) else flat)[c].argmax())
                where = tuple(int(i) for i in np.unravel_index(best, spatial))
            else:
                where = self._checked_position(position, spatial)
            index = (int(c), *where)
            picks.append(Selection(image, int(c), where, float(act[index])))
        return picks

    def _channel_order(
        self, flat: np.ndarray, ranked: np.ndarray, top: int, channel: int | None
    ) -> tuple[list[int], list[int]]:
        """The channels to take (by ``ranked``), and those the unmasked ``flat`` would take."""
        channels = len(flat)
        if channel is not None:
            if not 0 <= channel < channels:
                raise SelectionError(
                    f"channel {channel} is out of range: layer '{self.layer}' has {channels} "
                    f"channels (0..{channels - 1})"
                )
            return [channel], [channel]
        if top < 1:
            raise SelectionError(f"top must be at least 1, got {top}", parameter="top")
        count = min(top, channels)
        unskipped = [int(c) for c in np.argsort(-flat.max(axis=1), kind="stable")[:count]]
        order = [
            int(c)
            for c in np.argsort(-ranked.max(axis=1), kind="stable")[:count]
            if np.isfinite(ranked[c].max())
        ]
        return order, unskipped

    def _count_saturated(self, flat: np.ndarray, unskipped: list[int], bound: float | None) -> None:
        """Set :attr:`skipped_saturated`: how many of ``unskipped``'s arg-maxes sit at ``bound``."""
        self.skipped_saturated = 0
        if bound is None:
            return
        self.skipped_saturated = sum(int(flat[c].max() >= bound) for c in unskipped)
        if self.skipped_saturated:
            logger.info(
                "skipped %d saturated units of layer '%s' (at the upper bound %g)",
                self.skipped_saturated,
                self.layer,
                bound,
            )

    def _checked_position(
        self, position: tuple[int, ...] | str, spatial: tuple[int, ...]
    ) -> tuple[int, ...]:
        where = tuple(int(p) for p in position)
        if len(where) != len(spatial) or any(
            not 0 <= p < s for p, s in zip(where, spatial, strict=True)
        ):
            raise SelectionError(
                f"position {','.join(map(str, where))} is outside layer '{self.layer}', "
                f"whose feature maps are {'x'.join(map(str, spatial))}"
            )
        return where

    def signal(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """The starting signals: zero except at each selected activation.

        A selected unit carries its magnitude ``|a|``; :meth:`signs` holds the sign that
        :meth:`project` gives its projection, so that a negative unit (a logit, a detection
        head) projects as ``a · deconv(1)``, captum's Neuron* attribution times the activation.
        A whole map (``position`` None) carries its values as they are.
        """
        signal = np.zeros((len(selections), *self.layer_shape), np.float32)
        for row, pick in enumerate(selections):
            act = forward.activations[pick.image, pick.channel]
            if pick.position is None:
                signal[row, pick.channel] = act
            else:
                index = (row, pick.channel, *pick.position)
                signal[index] = abs(act[pick.position])
        return signal

    def signs(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """The sign :meth:`project` gives each selection's projection: ``[K]`` float32, ±1.

        -1 for a unit whose activation is negative, +1 otherwise (whole maps included). The
        rectifiers of ``deconvnet`` and ``guided`` are positively homogeneous (relu(c·s) =
        c·relu(s) for c >= 0), so ``sign(a) · deconv(|a|) = a · deconv(1)``; under ``gradient``,
        which is linear, it equals the projection of the signed value.
        """
        return np.array(
            [
                -1.0
                if pick.position is not None
                and forward.activations[pick.image, pick.channel][pick.position] < 0
                else 1.0
                for pick in selections
            ],
            np.float32,
        )

    def project(self, forward: ForwardPass, selections: Sequence[Selection]) -> np.ndarray:
        """Project all ``selections`` in one batched deconv run: ``[K, *input_shape]`` float32.

        Each unit's magnitude travels back and its projection takes the unit's sign (see
        :meth:`signal`): a negative activation gives minus the projection of its magnitude.
        """
        images = [s.image for s in selections]
        signal = self.signal(forward, selections)
        signs = self.signs(forward, selections).reshape(-1, *([1] * len(self.input_shape)))
        windowed = (
            self.windowed if self.layer_shape[1:] and self._to_channels_first is None else None
        )
        if windowed is None or any(s.position is None for s in selections):
            projections = self.project_signal(forward, signal, images)
        else:
            plan, session = windowed
            origins = np.array([s.position for s in selections], np.int64)
            feeds = self._feeds(forward, plan, signal, images)
            feeds[WINDOW_ORIGIN] = origins.reshape(len(selections), -1)
            out = run_bound(session, feeds, [PROJECTION], (PROJECTION,))
            projections = np.asarray(out[PROJECTION].numpy())
        return np.asarray(signs.astype(projections.dtype) * projections)

    def _feeds(
        self,
        forward: ForwardPass,
        plan: DeconvPlan,
        signal: np.ndarray,
        images: Sequence[int] | None,
    ) -> dict[str, np.ndarray | ort.OrtValue]:
        feeds: dict[str, np.ndarray | ort.OrtValue] = {SIGNAL: signal}
        if plan.forward_inputs:
            rows = range(len(signal)) if images is None else images
            feeds[BATCH_INDEX] = np.asarray(rows, np.int64)
            feeds.update({name: forward.forward_values[name] for name in plan.forward_inputs})
        return feeds

    def project_signal(
        self, forward: ForwardPass, signal: np.ndarray, images: Sequence[int] | None = None
    ) -> np.ndarray:
        """Project arbitrary signals ``[K, *layer_shape]`` at the target layer.

        The signals travel back as given, signs included: under ``deconvnet`` and ``guided`` a
        negative value is clipped by the first rectifier, unlike in :meth:`project`, which sends
        a unit's magnitude and gives the projection its sign.

        Args:
            forward: The forward pass whose switches and rectifier inputs the deconv follows.
            signal: One signal per row, in the layer's shape.
            images: For each row, the index of its image in ``forward`` (default: row ``k`` uses
                image ``k``).
        """
        signal = np.asarray(signal, np.float32)
        if signal.shape[1:] != self.layer_shape:
            raise SelectionError(
                f"signal has shape {list(signal.shape)}; layer '{self.layer}' needs "
                f"[K, {', '.join(map(str, self.layer_shape))}]"
            )
        if self._to_channels_first is not None:
            signal = np.ascontiguousarray(np.transpose(signal, np.argsort(self._to_channels_first)))
        feeds = self._feeds(forward, self.plan, signal, images)
        out = run_bound(self.deconv_session, feeds, [PROJECTION], (PROJECTION,))
        return np.asarray(out[PROJECTION].numpy())
