"""Thresholds of ``onnxdeconv check``, read from a TOML file with documented defaults."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from onnxdeconv.errors import OnnxDeconvError, wrong_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Severity = Literal["error", "warning", "off"]
GROUPS = ("analyzable", "faithful", "filters", "architecture", "regression")


@dataclass
class CheckConfig:
    """Every threshold of ``onnxdeconv check``; docs/commands/check.md documents each one."""

    #: Ops after which unprojectable layers are expected (classifier heads): reported, not failed.
    allowed_unprojectable_ops: list[str] = field(default_factory=lambda: ["Softmax", "LogSoftmax"])
    #: Largest relative error of the dot-product (adjoint) test per layer.
    adjoint_tolerance: float = 1e-3
    #: Test this many layers, evenly spread (0 = every projectable layer).
    adjoint_layers: int = 0
    #: Largest relative difference between original and instrumented outputs.
    output_tolerance: float = 1e-5
    #: A filter is dead when its norm is below this fraction of its layer's median norm.
    dead_ratio: float = 0.05
    #: A channel is saturated when it is active at this fraction of all positions or more.
    saturated_fraction: float = 0.99
    #: Most channels of one layer that may be never active (or saturated) on the images.
    max_inactive_fraction: float = 0.25
    #: Highest aliasing score of the first layer.
    aliasing_threshold: float = 0.1
    #: Least share of the first layer's spectral energy in each of the low, mid and high bands.
    min_band_coverage: float = 0.05
    #: Largest relative drift of a layer's mean activation or active fraction from the baseline.
    stat_drift: float = 0.05
    #: Channels per image in the top-k projection baseline.
    topk: int = 5
    #: Least overlap of the top-k channels with the baseline's.
    min_topk_overlap: float = 0.6
    #: Least cosine similarity of a shared top-k projection with the baseline's.
    min_projection_similarity: float = 0.9
    #: Severity per group of checks: "error" fails the run, "warning" only reports, "off" skips.
    severity: dict[str, Severity] = field(default_factory=lambda: dict.fromkeys(GROUPS, "error"))


def load_config(path: str | Path | None) -> CheckConfig:
    """Read ``[check]`` thresholds and ``[check.severity]`` from a TOML file (defaults if None)."""
    config = CheckConfig()
    if path is None:
        return config
    path = Path(path)
    if wrong := wrong_kind(path, "file", "a TOML file"):
        raise OnnxDeconvError(wrong)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise OnnxDeconvError(f"cannot read config '{path}': {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise OnnxDeconvError(f"config '{path}' is not valid TOML: {exc}") from exc
    section: dict[str, Any] = dict(data.get("check", {}))
    severity = section.pop("severity", {})
    known = {f.name: f for f in fields(CheckConfig) if f.name != "severity"}
    for key, value in section.items():
        if key not in known:
            raise OnnxDeconvError(
                f"config '{path}': unknown key check.{key}; known keys: {', '.join(sorted(known))}"
            )
        default = getattr(config, key)
        if isinstance(default, list):
            if not isinstance(value, list):
                raise OnnxDeconvError(f"config '{path}': check.{key} must be a list")
            setattr(config, key, [str(v) for v in value])
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OnnxDeconvError(f"config '{path}': check.{key} must be a number")
        else:
            setattr(config, key, type(default)(value))
    for group, level in severity.items():
        if group not in GROUPS or level not in ("error", "warning", "off"):
            raise OnnxDeconvError(
                f"config '{path}': check.severity.{group} = {level!r}; groups are "
                f"{', '.join(GROUPS)} and levels error, warning, off"
            )
        config.severity[group] = level
    return config


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read a baseline that a run of the checks wrote (``CheckReport.baseline`` as JSON)."""
    path = Path(path)
    if wrong := wrong_kind(path, "file", "a baseline file (JSON)"):
        raise OnnxDeconvError(wrong)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise OnnxDeconvError(f"cannot read baseline '{path}': {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise OnnxDeconvError(f"baseline '{path}' is not JSON ({exc.msg}): write it again") from exc
    if not isinstance(data, dict):
        raise OnnxDeconvError(f"baseline '{path}' is not an onnxdeconv baseline")
    return data
