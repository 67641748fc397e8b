"""The checks themselves: analyzable, faithful, healthy filters, architecture, no regression."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from onnxdeconv.analysis.filters import BAND_NAMES, analyse_filters
from onnxdeconv.analysis.layers import check_layers
from onnxdeconv.check.config import CheckConfig
from onnxdeconv.check.linearise import linearise, recorded_tensors
from onnxdeconv.errors import OnnxDeconvError
from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.graph.passes import promote_float16, with_input_shape
from onnxdeconv.prepared import PreparedModel, prepare
from onnxdeconv.projector import Projector
from onnxdeconv.runtime import Device, ForwardRunner

logger = logging.getLogger(__name__)

Status = Literal["pass", "fail", "warn", "skip"]
BASELINE_SCHEMA = "onnxdeconv.baseline/1"
RECTIFIERS = {"Relu", "Clip", "LeakyRelu"}
FINGERPRINT = 16
#: The stages :func:`run_checks` reports to its ``progress`` callback, in order.
CHECK_STAGES = (
    "analyzable",
    "outputs",
    "adjoint",
    "activity",
    "filters",
    "architecture",
    "baseline",
)


@dataclass
class Finding:
    """One result: which check, about what, and whether it passed."""

    check: str
    subject: str
    status: Status
    message: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class CheckReport:
    """All findings for one model, and the statistics a baseline stores."""

    model: str
    findings: list[Finding]
    baseline: dict[str, Any] = field(default_factory=dict)
    #: The ONNX Runtime execution provider the checks ran on.
    provider: str = "CPUExecutionProvider"
    #: The layers the adjoint test ran on, in depth order.
    tested_layers: list[str] = field(default_factory=list)
    #: How many projectable layers the model has: ``tested_layers`` is a sample when fewer.
    projectable_layers: int = 0
    #: ``(image, reason)`` for each image that could not be read and was left out.
    skipped_images: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        """Whether the adjoint test ran on a sample of the projectable layers, not all."""
        return len(self.tested_layers) < self.projectable_layers

    @property
    def passed(self) -> bool:
        """True when no finding failed."""
        return not any(f.status == "fail" for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Number of findings per status."""
        return {
            s: sum(f.status == s for f in self.findings) for s in ("pass", "fail", "warn", "skip")
        }

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (schema ``onnxdeconv.check/1``)."""
        return {
            "schema": "onnxdeconv.check/1",
            "model": self.model,
            "passed": self.passed,
            "summary": self.counts(),
            "layers": {
                "tested": list(self.tested_layers),
                "projectable": self.projectable_layers,
                "sample": self.sampled,
            },
            "skipped_images": [
                {"image": image, "reason": reason} for image, reason in self.skipped_images
            ],
            "findings": [_finding_json(f) for f in self.findings],
        }


def _finding_json(finding: Finding) -> dict[str, Any]:
    """A finding as JSON: a NaN or infinite number is null, and ``non_finite`` says which."""
    row = asdict(finding)
    row["non_finite"] = {}
    for key in ("value", "threshold"):
        number = row[key]
        if number is not None and not math.isfinite(number):
            row[key] = None
            row["non_finite"][key] = str(float(number))  # "nan", "inf" or "-inf"
    return row


class _Checker:
    def __init__(self, config: CheckConfig, device: Device = "cpu") -> None:
        self.config = config
        self.device = device
        self.findings: list[Finding] = []

    def add(
        self,
        group: str,
        check: str,
        subject: str,
        ok: bool,
        message: str,
        value: float | None = None,
        threshold: float | None = None,
    ) -> None:
        severity = self.config.severity.get(group, "error")
        if severity == "off":
            return
        status: Status = "pass" if ok else ("fail" if severity == "error" else "warn")
        self.findings.append(
            Finding(f"{group}.{check}", subject, status, message, value, threshold)
        )

    def skip(self, group: str, check: str, subject: str, message: str) -> None:
        if self.config.severity.get(group, "error") != "off":
            self.findings.append(Finding(f"{group}.{check}", subject, "skip", message))


def _float32(loaded: LoadedModel, input_shape: tuple[int, ...]) -> PreparedModel:
    if loaded.input_dtype == np.float32:
        return prepare(loaded, input_shape)
    promoted = promote_float16(loaded.model)
    return prepare(
        LoadedModel(
            promoted,
            loaded.input_name,
            loaded.input_shape,
            np.dtype(np.float32),
            loaded.path,
            loaded.metadata,
        ),
        input_shape,
    )


def check_analyzable(prepared: PreparedModel, checker: _Checker) -> None:
    """Every layer is projectable, or reported with the node and op that stop it."""
    for layer in prepared.layers():
        if layer.projectable:
            checker.add("analyzable", "projectable", layer.name, True, "projectable")
            continue
        blocked_by_head = any(
            f"({op})" in layer.reason for op in checker.config.allowed_unprojectable_ops
        )
        status_ok = blocked_by_head
        checker.add(
            "analyzable",
            "projectable",
            layer.name,
            status_ok,
            layer.reason + (" (allowed: classifier head)" if blocked_by_head else ""),
        )


def check_outputs(prepared: PreparedModel, x: np.ndarray, checker: _Checker) -> str:
    """The instrumented forward graph reproduces the original outputs.

    Returns:
        The execution provider that ran the graphs.
    """
    loaded = prepared.loaded
    original = ForwardRunner(prepared, model=loaded.model, device=checker.device)
    projectable = [layer.name for layer in prepared.layers() if layer.projectable]
    pools = [n.output[0] for n in loaded.model.graph.node if n.op_type == "MaxPool"]
    instrumented = ForwardRunner(
        prepared, projectable, switches_of=pools, keep_outputs=True, device=checker.device
    )
    # One sample; a model with a fixed batch runs it in every row of its batch.
    sample = x[:1]
    before = original.run(sample)
    after = instrumented.run(sample, original.outputs)
    for name in original.outputs:
        old, new = before[name], after[name]
        old32, new32 = np.asarray(old, np.float64), np.asarray(new, np.float64)
        scale = max(float(np.abs(old32).max()), 1e-12)
        error = float(np.abs(old32 - new32).max()) / scale
        # Exposing tensors of a float16 model moves where ONNX Runtime's CPU casts to float32,
        # which changes results by float16 rounding.
        rounding = float(np.finfo(old.dtype).eps) if old.dtype.kind == "f" else 0.0
        tolerance = max(checker.config.output_tolerance, 4 * rounding)
        checker.add(
            "faithful",
            "outputs",
            name,
            error <= tolerance,
            f"instrumented graph changes the output by {error:.2e} (relative)"
            if error > tolerance
            else f"identical outputs (max relative difference {error:.1e})",
            error,
            tolerance,
        )
    return instrumented.provider


def check_adjoint(
    loaded: LoadedModel, input_shape: tuple[int, ...], x: np.ndarray, checker: _Checker
) -> tuple[list[str], int]:
    """The deconv graph of each layer is the exact adjoint of the forward graph's linear path.

    The forward pass at ``x`` is frozen into an affine model (rectifier masks and max-pool
    switches fixed, see :func:`~onnxdeconv.check.linearise.linearise`), whose difference
    ``J d = f(x + d) - f(x)`` is the layer's Jacobian times a random direction ``d``. The
    generated graph under the gradient rule must then satisfy ``<J d, J d> == <d, J^T (J d)>``.
    Float16 models are checked on a float32 copy. Deep models are checked on a sample of their
    layers (``CheckConfig.adjoint_layers``, see :func:`~onnxdeconv.analysis.layers.check_layers`).

    Returns:
        The layers tested, and how many layers are projectable.
    """
    config = checker.config
    prepared = _float32(loaded, input_shape)
    layers = check_layers(prepared, config.adjoint_layers)
    # Every plan is cached by now: counting the projectable layers costs nothing more.
    projectable = sum(layer.projectable for layer in prepared.layers())
    if not layers:
        return layers, projectable
    point = x[:1].astype(np.float32)
    # A model exported with a fixed batch runs only at that batch (its reshapes may even name
    # it): every row holds the point, and row 0 is the one compared.
    rows = prepared.loaded.fixed_batch or 1
    filled = np.repeat(point, rows, axis=0)
    recorded, pools = recorded_tensors(prepared.graph)
    frozen = ForwardRunner(prepared, recorded, switches_of=pools, device=checker.device).run(filled)
    linear = PreparedModel(
        LoadedModel(
            linearise(
                with_input_shape(
                    prepared.loaded.model,
                    prepared.loaded.input_name,
                    (rows, *prepared.input_shape),
                ),
                frozen,
            ),
            prepared.loaded.input_name,
            [rows, *prepared.input_shape],
            np.dtype(np.float32),
        ),
        prepared.input_shape,
        prepared.info,
        prepared.constants,
    )
    direction = np.random.default_rng(0).normal(size=point.shape).astype(np.float32)
    linear_runner = ForwardRunner(linear, layers, device=checker.device)
    moved = linear_runner.run(filled + direction, layers)
    still = linear_runner.run(filled, layers)
    for name in layers:
        jvp = moved[name][:1].astype(np.float64) - still[name][:1].astype(np.float64)
        projector = Projector(prepared, layer=name, rule="gradient", device=checker.device)
        signal = projector.channels_first(jvp.astype(np.float32))
        back = projector.project_signal(projector.forward(filled), signal, [0])
        lhs = float((jvp * jvp).sum())
        rhs = float((direction.astype(np.float64) * back.astype(np.float64)).sum())
        if lhs <= 1e-20:
            checker.skip(
                "faithful", "adjoint", name, "the layer does not respond to the input here"
            )
            continue
        error = abs(lhs - rhs) / lhs
        checker.add(
            "faithful",
            "adjoint",
            name,
            error <= config.adjoint_tolerance,
            f"dot-product test: relative error {error:.2e}",
            error,
            config.adjoint_tolerance,
        )
    return layers, projectable


def _rectified_layers(prepared: PreparedModel) -> list[str]:
    return [
        n
        for n in prepared.candidates
        if prepared.producers[n].op_type in RECTIFIERS and len(prepared.info[n].per_sample) >= 2
    ]


def check_filters(
    prepared: PreparedModel, values: dict[str, np.ndarray] | None, checker: _Checker
) -> None:
    """NaN or infinite weights and dead filters in every Conv; inactive channels on the images.

    A channel is inactive when it is never active, or active almost everywhere (saturated).
    """
    config = checker.config
    for node in prepared.graph.node:
        if node.op_type != "Conv" or node.input[1] not in prepared.constants:
            continue
        weights = np.asarray(prepared.constants[node.input[1]], np.float64)
        bad = int(np.size(weights) - np.isfinite(weights).sum())
        checker.add(
            "filters",
            "finite",
            node.output[0],
            bad == 0,
            f"{bad} of {weights.size} weights are NaN or infinite" if bad else "finite weights",
            float(bad),
            0.0,
        )
        if bad:
            continue
        norms = np.sqrt((weights.reshape(len(weights), -1) ** 2).sum(axis=1))
        dead = np.flatnonzero(norms < config.dead_ratio * float(np.median(norms)))
        checker.add(
            "filters",
            "dead",
            node.output[0],
            dead.size == 0,
            f"{dead.size} dead filters: {_list(dead)}"
            if dead.size
            else f"no dead filters among {len(norms)}",
            float(dead.size),
            0.0,
        )
    if values is None:
        return
    for name in _rectified_layers(prepared):
        acts = values[name]
        per_channel = np.moveaxis(acts, 1, 0).reshape(acts.shape[1], -1)
        active = (per_channel > 0).mean(axis=1)
        never = np.flatnonzero(active == 0)
        saturated = np.flatnonzero(active >= config.saturated_fraction)
        limit = config.max_inactive_fraction
        for check, channels, what in (
            ("never_active", never, "never active"),
            ("saturated", saturated, "always active"),
        ):
            fraction = channels.size / len(active)
            checker.add(
                "filters",
                check,
                name,
                fraction <= limit,
                f"{channels.size}/{len(active)} channels {what} on the images"
                + (f": {_list(channels)}" if channels.size else ""),
                fraction,
                limit,
            )


def check_architecture(
    prepared: PreparedModel, images: np.ndarray | None, checker: _Checker
) -> None:
    """Aliasing and frequency coverage of the first layer (see ``onnxdeconv filters``)."""
    config = checker.config
    try:
        report = analyse_filters(
            prepared,
            images,
            dead_ratio=config.dead_ratio,
            aliasing_threshold=config.aliasing_threshold,
        )
    except OnnxDeconvError as exc:
        checker.skip("architecture", "aliasing", "-", str(exc))
        return
    checker.add(
        "architecture",
        "aliasing",
        report.layer,
        report.aliasing <= config.aliasing_threshold,
        f"aliasing score {report.aliasing:.3f} ({report.aliasing_source}): {report.verdict}",
        report.aliasing,
        config.aliasing_threshold,
    )
    low = min(range(len(BAND_NAMES)), key=lambda i: report.coverage[i])
    share = float(report.coverage[low])
    checker.add(
        "architecture",
        "coverage",
        report.layer,
        share >= config.min_band_coverage,
        "frequency coverage "
        + ", ".join(
            f"{name} {value:.2f}" for name, value in zip(BAND_NAMES, report.coverage, strict=True)
        )
        + (
            f"; too little {BAND_NAMES[low]}-frequency energy"
            if share < config.min_band_coverage
            else ""
        ),
        share,
        config.min_band_coverage,
    )


def _fingerprint(projection: np.ndarray, layout_channels_first: bool) -> list[float]:
    magnitude = np.abs(projection)
    magnitude = magnitude.sum(axis=0) if layout_channels_first else magnitude.sum(axis=-1)
    small = cv2.resize(
        magnitude.astype(np.float32), (FINGERPRINT, FINGERPRINT), interpolation=cv2.INTER_AREA
    ).ravel()
    norm = float(np.linalg.norm(small))
    return [round(float(v), 6) for v in (small / norm if norm else small)]


def make_baseline(
    prepared: PreparedModel,
    x: np.ndarray,
    names: Sequence[str],
    values: dict[str, np.ndarray],
    config: CheckConfig,
    device: Device = "cpu",
) -> dict[str, Any]:
    """Per-layer statistics and top-k projections that a later run is compared with."""
    layers = {
        name: {
            "mean": float(values[name].astype(np.float64).mean()),
            "active": float((values[name] > 0).mean()),
        }
        for name in _rectified_layers(prepared)
    }
    spatial = [layer for layer in prepared.layers() if layer.projectable and len(layer.shape) >= 3]
    topk: dict[str, Any] = {}
    if spatial:
        target = spatial[-1].name
        projector = Projector(prepared, layer=target, device=device)
        channels_first = prepared.input_shape[0] in (1, 3)
        forward = projector.forward(x)
        for index, name in enumerate(names):
            picks = projector.strongest(forward, top=config.topk, image=index)
            # Non-finite weights are a finding of their own (filters.finite), not an error here.
            projections = projector.project(forward, picks, allow_non_finite=True)
            topk[name] = {
                "layer": target,
                "channels": [p.channel for p in picks],
                "fingerprints": [_fingerprint(p, channels_first) for p in projections],
            }
    return {"schema": BASELINE_SCHEMA, "images": list(names), "layers": layers, "topk": topk}


def compare_baseline(old: dict[str, Any], new: dict[str, Any], checker: _Checker) -> None:
    """Report drift of per-layer statistics and top-k projections beyond the thresholds.

    Raises:
        OnnxDeconvError: ``old`` is not a baseline of these images, or it is malformed.
    """
    try:
        _compare_baseline(old, new, checker)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise OnnxDeconvError(
            f"the baseline is malformed ({type(exc).__name__}: {exc}): write a new one",
            parameter="baseline",
        ) from exc


def _number(value: object) -> float:
    """A statistic of a baseline, where a NaN or infinity was written as null."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _compare_baseline(old: dict[str, Any], new: dict[str, Any], checker: _Checker) -> None:
    config = checker.config
    if old.get("schema") != BASELINE_SCHEMA:
        raise OnnxDeconvError(
            f"the baseline is not an onnxdeconv baseline ({BASELINE_SCHEMA}): write a new one",
            parameter="baseline",
        )
    if old.get("images") != new.get("images"):
        raise OnnxDeconvError(
            "the baseline was written for other images: check the same images, or write a new "
            "baseline",
            parameter="baseline",
        )
    for name, stats in old["layers"].items():
        if name not in new["layers"]:
            checker.add("regression", "layers", name, False, "layer missing from the model")
            continue
        for key in ("mean", "active"):
            before, after = _number(stats[key]), _number(new["layers"][name][key])
            # NaN when either is not finite, which fails the check.
            drift = abs(after - before) / max(abs(before), 1e-6)
            checker.add(
                "regression",
                f"stat_{key}",
                name,
                drift <= config.stat_drift,
                f"{key} {before:.4g} -> {after:.4g} (drift {drift:.1%})",
                drift,
                config.stat_drift,
            )
    for image, entry in old["topk"].items():
        current = new["topk"].get(image)
        if current is None or current["layer"] != entry["layer"]:
            checker.add(
                "regression",
                "topk",
                image,
                False,
                f"top-k layer {entry['layer']} is gone from the model",
            )
            continue
        shared = set(entry["channels"]) & set(current["channels"])
        overlap = len(shared) / max(len(entry["channels"]), 1)
        checker.add(
            "regression",
            "topk_overlap",
            image,
            overlap >= config.min_topk_overlap,
            f"top-{len(entry['channels'])} channels {entry['channels']} -> "
            f"{current['channels']} (overlap {overlap:.0%})",
            overlap,
            config.min_topk_overlap,
        )
        for channel in sorted(shared):
            a = np.asarray(entry["fingerprints"][entry["channels"].index(channel)], np.float64)
            b = np.asarray(current["fingerprints"][current["channels"].index(channel)], np.float64)
            similarity = float(a @ b)
            checker.add(
                "regression",
                "projection",
                f"{image} channel {channel}",
                similarity >= config.min_projection_similarity,
                f"projection similarity {similarity:.3f}",
                similarity,
                config.min_projection_similarity,
            )


def _list(indices: np.ndarray, limit: int = 12) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


def run_checks(
    model: LoadedModel,
    images: np.ndarray | None = None,
    image_names: Sequence[str] = (),
    baseline: dict[str, Any] | None = None,
    config: CheckConfig | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    device: Device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Run every check on ``model``.

    Args:
        model: The loaded model.
        images: Preprocessed inputs ``[N, *input_shape]``; without them one seeded random input
            stands in, and the never-active and saturated checks are skipped.
        image_names: One name per image, used as keys of the baseline.
        baseline: A baseline written earlier (``CheckReport.baseline``) to compare with.
        config: Thresholds; defaults when None.
        input_shape: Per-sample input shape, for a model whose input size is dynamic.
        device: Where ONNX Runtime runs. The CPU by default: the faithfulness checks compare
            float32 results at tight tolerances, and CUDA may round convolutions to TF32.
        progress: Called with 1 after each of the :data:`CHECK_STAGES`.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # NaN or infinite values (a NaN weight) become findings, not numpy warnings.
        return _run_checks(
            model, images, image_names, baseline, config, input_shape, device, progress
        )


def _run_checks(
    model: LoadedModel,
    images: np.ndarray | None,
    image_names: Sequence[str],
    baseline: dict[str, Any] | None,
    config: CheckConfig | None,
    input_shape: tuple[int, ...] | None,
    device: Device,
    progress: Callable[[int], None] | None,
) -> CheckReport:
    def done() -> None:
        if progress is not None:
            progress(1)

    config = config or CheckConfig()
    checker = _Checker(config, device)
    prepared = prepare(model, input_shape)
    if images is None:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1, *prepared.input_shape)).astype(model.input_dtype)
        names: Sequence[str] = ["random"]
    else:
        x, names = images, list(image_names) or [f"image{i}" for i in range(len(images))]
    check_analyzable(prepared, checker)
    done()
    provider = check_outputs(prepared, x, checker)
    done()
    tested, projectable = check_adjoint(model, prepared.input_shape, x, checker)
    done()
    rectified = _rectified_layers(prepared)
    values = (
        ForwardRunner(prepared, rectified, keep_outputs=False, device=device).run(x, rectified)
        if rectified
        else {}
    )
    done()
    check_filters(prepared, values if images is not None else None, checker)
    if images is None:
        checker.skip("filters", "never_active", "-", "give images to check channel activity")
    done()
    check_architecture(prepared, images, checker)
    done()
    current = make_baseline(prepared, x, names, values, config, device)
    if baseline is not None:
        compare_baseline(baseline, current, checker)
    done()
    name = model.path.name if model.path else "model"
    return CheckReport(name, checker.findings, current, provider, tested, projectable)
