"""``onnxdeconv sanity``: the model-parameter randomisation test (Adebayo et al. 2018)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import cast

import click
from tqdm import tqdm

from onnxdeconv.analysis.layers import sanity_layer
from onnxdeconv.analysis.sanity import (
    CAVEAT,
    SanityReport,
    Target,
    cascade_steps,
    input_layout,
    sanity_check,
    weighted_layers,
)
from onnxdeconv.cli import options
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.files import atomic_path
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.prepared import prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.sanity import sanity_figure
from onnxdeconv.runtime import Device

CONTEXT = options.CONTEXT


def _position(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected H,W such as 3,8, got '{value}'", param_hint="--position"
        ) from None


def _check_output(path: Path | None, suffix: str, hint: str) -> None:
    if path is None:
        return
    if path.suffix.lower() != suffix:
        raise click.BadParameter(f"'{path}' must end in {suffix}", param_hint=hint)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise click.BadParameter(
            f"output folder '{path.parent}' does not exist: create it first", param_hint=hint
        )


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "--layer",
    help="Tensor name or alias to project from; default: the deepest Conv output with a "
    "feature map.",
)
@click.option("--channel", type=int, help="Channel of the unit; default: the strongest.")
@click.option("--position", metavar="H,W", help="Position of the unit; default: its arg-max.")
@click.option(
    "--target",
    type=click.Choice(["same", "own"]),
    default="same",
    show_default=True,
    help="same: every step projects the original's unit (as published); own: each step its own "
    "strongest unit.",
)
@click.option(
    "--rule",
    "rules",
    type=click.Choice([*RULES, "all"]),
    multiple=True,
    help="Rule(s) to test; repeat the option for several.  [default: all]",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    help="Cascade steps after the original, spread over the layers; default: one per layer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@options.preset_option
@click.option("--size", metavar="H,W", help="Resize the image to H,W (models with dynamic size).")
@options.device_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OUT.png; default: IMAGE-stem_sanity.png",
)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the scores as CSV."
)
def sanity(
    model: Path,
    image: Path,
    layer: str | None,
    channel: int | None,
    position: str | None,
    target: str,
    rules: tuple[str, ...],
    steps: int | None,
    seed: int,
    preset: str | None,
    size: str | None,
    device: str,
    output: Path | None,
    csv_path: Path | None,
) -> None:
    """Test whether projections depend on the learned weights (Adebayo et al. 2018).

    Re-initialises the weighted layers (Conv, Gemm, MatMul) below the chosen layer from the top
    down, one more at each step, with random weights of each tensor's own scale, and projects the
    same unit of the same image at every step. Each projection is compared with the original's
    inside the unit's receptive field: Spearman rank correlation of the magnitudes and SSIM.
    Scores that stay near 1 mean the projection shows the architecture and the image, not what
    the model learned. IMAGE is an image file, preprocessed by --preset, or a .npy array.

    Example: onnxdeconv sanity models/digitnet.onnx models/examples/digit_7.png --csv scores.csv
    """
    output = output or Path(f"{image.stem}_sanity.png")
    _check_output(output, ".png", "-o")
    _check_output(csv_path, ".csv", "--csv")
    chosen = cast(tuple[Rule, ...], RULES if not rules or "all" in rules else tuple(rules))
    chosen = tuple(dict.fromkeys(chosen))
    where = _position(position)
    loaded = load_model(model)
    preprocessing, source = options.resolve_preprocessing(loaded, preset, None, None, None, False)
    model_input = load_input(image, loaded, preprocessing, options.int_pair(size, "--size"))
    prepared = prepare(loaded, tuple(model_input.array.shape[1:]))
    name = prepared.resolve(layer) if layer else sanity_layer(prepared)
    total = len(cascade_steps(len(weighted_layers(loaded.model, name)), steps))
    with tqdm(
        total=total, desc="cascade steps", unit="step", leave=False, disable=None
    ) as progress:
        report = sanity_check(
            prepared,
            model_input.array,
            layer=name,
            rules=chosen,
            steps=steps,
            seed=seed,
            channel=channel,
            position=where,
            target=cast(Target, target),
            device=cast(Device, device),
            on_step=lambda _: progress.update(1),
        )
    if image.suffix.lower() != ".npy":
        click.echo(f"preprocessing: {source}: {preprocessing.describe()}", err=True)
    aliases = {tensor: alias for alias, tensor in prepared.aliases.items()}
    shown = aliases.get(report.layer, report.layer)
    bgr = bool(model_input.preprocessing and model_input.preprocessing.bgr)
    title = (
        f"{model.name} · {image.name} · layer {shown} · cascading randomisation of "
        f"{len(report.layers)} weighted layers, top first (seed {seed})"
    )
    figure = sanity_figure(
        report, model_input.display, layout=input_layout(prepared), bgr=bgr, title=title
    )
    save_figure(figure, output)
    if csv_path is not None:
        _write_csv(report, csv_path)
    click.echo(_table(report))
    click.echo()
    for line in _summary(report):
        click.echo(line)
    click.echo()
    click.echo(f"Caveat: {CAVEAT}")
    click.echo(str(output))
    if csv_path is not None:
        click.echo(str(csv_path))


def _write_csv(report: SanityReport, path: Path) -> None:
    rows = report.rows()
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def _score(value: float) -> str:
    return "zero" if math.isnan(value) else f"{value:.3f}"


def _table(report: SanityReport) -> str:
    header = ["step", "randomised", "down to", "activation"]
    for rule in report.rules:
        header += [f"{rule} spearman", f"{rule} SSIM"]
    table = [header]
    for index, count in enumerate(report.steps):
        row = [
            str(index),
            f"{count}/{len(report.layers)}",
            "none (original)" if count == 0 else report.step_label(index),
            f"{report.activations[index]:.4g}",
        ]
        for rule in report.rules:
            row += [_score(report.spearman[rule][index]), _score(report.ssim[rule][index])]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def _summary(report: SanityReport) -> list[str]:
    last = len(report.steps) - 1
    count = report.steps[last]
    lines = []
    for rule in report.rules:
        rho, similarity = report.spearman[rule][last], report.ssim[rule][last]
        scores = (
            "the projection is zero"
            if math.isnan(rho)
            else f"Spearman {rho:.2f}, SSIM {similarity:.2f} (1 = unchanged)"
        )
        lines.append(
            f"{rule}: with {count} of {len(report.layers)} weighted layers randomised "
            f"(down to {report.step_label(last)}): {scores}"
        )
    return lines
