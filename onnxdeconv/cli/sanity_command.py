"""``onnxdeconv sanity``: the model-parameter randomisation test (Adebayo et al. 2018)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from onnxdeconv.analysis.sanity import Target, sanity_check, sanity_steps
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, progress
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.outputs import OutputPaths
from onnxdeconv.outputs.sanity import write_sanity


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("image", type=options.PATH)
@options.layer_option("the deepest Conv output with a feature map")
@options.channel_option
@options.position_option()
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
@options.count_option(
    "--steps",
    text="Cascade steps after the original, spread over the layers; default: one per layer.",
)
@options.seed_option("weights")
@options.model_options()
@options.outputs("{image.stem}_sanity.png", csv_suffix=".csv", csv="the scores", json="the scores")
def sanity(
    model: Path,
    image: Path,
    layer: str | None,
    channel: int | None,
    position: tuple[int, ...] | None,
    target: str,
    rules: tuple[str, ...],
    steps: int | None,
    seed: int,
    model_options: options.ModelOptions,
    paths: OutputPaths,
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
    chosen = cast(tuple[Rule, ...], RULES if not rules or "all" in rules else tuple(rules))
    (_, prepared, _, how), model_input = model_options.load_input(model, image)
    with progress(len(sanity_steps(prepared, layer, steps)), "cascade steps", "step") as advance:
        report = sanity_check(
            prepared,
            model_input.array,
            layer=layer,
            rules=tuple(dict.fromkeys(chosen)),
            steps=steps,
            seed=seed,
            channel=channel,
            position=position,
            target=cast(Target, target),
            device=model_options.device,
            progress=advance,
        )
    if model_input.preprocessing is not None:
        info(f"preprocessing: {how}")
    info(f"running on {report.provider}")
    summary = write_sanity(
        report, model_input, paths, prepared=prepared, model=model, image=image, seed=seed
    )
    click.echo(summary)
