"""Parsing helpers shared by the commands."""

from __future__ import annotations

import click

from onnxdeconv.graph.load import LoadedModel
from onnxdeconv.inputs import PRESETS, Preprocessing, preprocessing_from_metadata

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}


def int_pair(value: str | None, option: str) -> tuple[int, int] | None:
    """Parse ``H,W``."""
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        pair = tuple(int(p) for p in parts)
    except ValueError:
        pair = ()
    if len(pair) != 2 or min(pair) < 0:
        raise click.BadParameter(
            f"expected two integers H,W such as 224,224, got '{value}'", param_hint=option
        )
    return pair[0], pair[1]


def floats(value: str | None, option: str) -> tuple[float, ...] | None:
    """Parse a comma-separated list of numbers."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, got '{value}'", param_hint=option
        ) from None


def resolve_preprocessing(
    loaded: LoadedModel,
    preset: str | None,
    mean: str | None,
    std: str | None,
    scale: float | None,
    bgr: bool,
) -> tuple[Preprocessing, str]:
    """Pick the preprocessing: a preset, custom values, the model's metadata, or ImageNet."""
    custom = mean is not None or std is not None or scale is not None or bgr
    if preset and custom:
        raise click.UsageError("use either --preset or --mean/--std/--scale/--bgr, not both")
    if preset:
        return PRESETS[preset], f"preset {preset}"
    if custom:
        return Preprocessing(
            scale=1.0 if scale is None else scale,
            mean=floats(mean, "--mean") or (0.0,),
            std=floats(std, "--std") or (1.0,),
            bgr=bgr,
        ), "custom"
    declared = preprocessing_from_metadata(loaded)
    if declared is not None:
        return declared, "from the model's metadata"
    return PRESETS["imagenet"], "preset imagenet (default; see --preset)"
