"""Thresholds of ``onnxdeconv check``, read from a TOML file with documented defaults."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from onnxdeconv.analysis.layers import MAX_CHECK_LAYERS
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
    #: Test this many layers, spread over depth with the last conv stage (0 = every projectable
    #: layer); see :func:`~onnxdeconv.analysis.layers.check_layers`.
    adjoint_layers: int = MAX_CHECK_LAYERS
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


#: The valid values of each number: ``(kind, lowest, highest)``; None is no bound.
RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "adjoint_tolerance": (float, 0.0, None),
    "adjoint_layers": (int, 0, None),
    "output_tolerance": (float, 0.0, None),
    "dead_ratio": (float, 0.0, 1.0),
    "saturated_fraction": (float, 0.0, 1.0),
    "max_inactive_fraction": (float, 0.0, 1.0),
    "aliasing_threshold": (float, 0.0, 1.0),
    "min_band_coverage": (float, 0.0, 1.0),
    "stat_drift": (float, 0.0, None),
    "topk": (int, 1, None),
    "min_topk_overlap": (float, 0.0, 1.0),
    "min_projection_similarity": (float, -1.0, 1.0),
}
#: The word ``adjoint_layers`` also takes: test every projectable layer (stored as 0).
ALL_LAYERS = "all"


def _valid_range(kind: type, low: float | None, high: float | None) -> str:
    what = "a whole number" if kind is int else "a number"
    if low is not None and high is not None:
        return f"{what} from {low:g} to {high:g}"
    if low is not None:
        return f"{what} >= {low:g}"
    return what  # pragma: no cover - every number has a lowest value


def _number(path: Path, key: str, value: object) -> float | int:
    """``value`` of ``check.<key>`` if it is a number in the key's range; one line otherwise."""
    kind, low, high = RANGES[key]
    valid = _valid_range(kind, low, high)
    if key == "adjoint_layers":
        valid += f" or {ALL_LAYERS!r} (0 is every layer too)"
        if value == ALL_LAYERS:
            return 0
    whole = isinstance(value, int) and not isinstance(value, bool)
    number = whole or (kind is float and isinstance(value, float))
    if not number or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise OnnxDeconvError(f"config '{path}': check.{key} = {value!r} must be {valid}")
    if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
        raise OnnxDeconvError(
            f"config '{path}': check.{key} = {value!r} is out of range: give {valid}"
        )
    return kind(value)  # type: ignore[no-any-return]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise OnnxDeconvError(f"cannot read config '{path}': {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise OnnxDeconvError(
            f"config '{path}' is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise OnnxDeconvError(f"config '{path}' is not valid TOML: {exc}") from exc
    return data


def load_config(path: str | Path | None) -> CheckConfig:
    """Read ``[check]`` thresholds and ``[check.severity]`` from a TOML file (defaults if None).

    Raises:
        OnnxDeconvError: The file is unreadable, not UTF-8 TOML, or has an unknown key or a value
            of the wrong type or out of its range (the message names the key and the range).
    """
    config = CheckConfig()
    if path is None:
        return config
    path = Path(path)
    if wrong := wrong_kind(path, "file", "a TOML file"):
        raise OnnxDeconvError(wrong)
    data = _read_toml(path)
    for key in data:
        if key != "check":
            raise OnnxDeconvError(
                f"config '{path}': unknown section or key '{key}': thresholds go in [check] and "
                "[check.severity]"
            )
    section = data.get("check", {})
    if not isinstance(section, dict):
        raise OnnxDeconvError(f"config '{path}': check must be a table ([check])")
    section = dict(section)
    severity = section.pop("severity", {})
    if not isinstance(severity, dict):
        raise OnnxDeconvError(f"config '{path}': check.severity must be a table ([check.severity])")
    known = {f.name for f in fields(CheckConfig) if f.name != "severity"}
    for key, value in section.items():
        if key not in known:
            raise OnnxDeconvError(
                f"config '{path}': unknown key check.{key}; known keys: "
                f"{', '.join(sorted([*known, 'severity']))}"
            )
        if key == "allowed_unprojectable_ops":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OnnxDeconvError(
                    f"config '{path}': check.{key} must be a list of op names (strings), "
                    'such as ["Softmax"]'
                )
            setattr(config, key, list(value))
        else:
            setattr(config, key, _number(path, key, value))
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
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise OnnxDeconvError(f"cannot read baseline '{path}': {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise OnnxDeconvError(f"baseline '{path}' is not UTF-8 JSON: write it again") from exc
    except json.JSONDecodeError as exc:
        raise OnnxDeconvError(f"baseline '{path}' is not JSON ({exc.msg}): write it again") from exc
    if not isinstance(data, dict):
        raise OnnxDeconvError(f"baseline '{path}' is not an onnxdeconv baseline")
    return data
