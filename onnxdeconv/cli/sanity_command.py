"""``onnxdeconv sanity``: the model-parameter randomisation test (Adebayo et al. 2018)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from onnxdeconv.analysis.sanity import CSV_COLUMNS, Target, input_layout, sanity_check, sanity_steps
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, progress, written
from onnxdeconv.cli.parse import check_output
from onnxdeconv.deconv.rules import RULES, Rule
from onnxdeconv.graph.load import load_model
from onnxdeconv.inputs import load_input
from onnxdeconv.outputs import write_csv, write_json
from onnxdeconv.prepared import prepare
from onnxdeconv.render import save_figure
from onnxdeconv.render.sanity import sanity_figure, sanity_text


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
@options.output_option("OUT.png; default: IMAGE-stem_sanity.png")
@options.csv_option("the scores")
@options.json_option("the scores")
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
    output: Path | None,
    csv_path: Path | None,
    json_path: Path | None,
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
    check_output(output, "-o", ".png")
    check_output(csv_path, "--csv", ".csv")
    check_output(json_path, "--json")
    chosen = cast(tuple[Rule, ...], RULES if not rules or "all" in rules else tuple(rules))
    loaded = load_model(model)
    preprocessing, source = model_options.preprocessing(loaded)
    model_input = load_input(image, loaded, preprocessing, model_options.size)
    prepared = prepare(loaded, tuple(model_input.array.shape[1:]))
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
        info(f"preprocessing: {source}: {preprocessing.describe()}")
    info(f"running on {report.provider}")
    shown = prepared.alias_of.get(report.layer, report.layer)
    title = (
        f"{model.name} · {image.name} · layer {shown} · cascading randomisation of "
        f"{len(report.layers)} weighted layers, top first (seed {seed})"
    )
    bgr = bool(model_input.preprocessing and model_input.preprocessing.bgr)
    figure = sanity_figure(
        report, model_input.display, layout=input_layout(prepared), bgr=bgr, title=title
    )
    save_figure(figure, output)
    if csv_path is not None:
        write_csv(csv_path, report.rows(), CSV_COLUMNS)
    if json_path is not None:
        write_json(json_path, {"model": str(model), "image": str(image), **report.to_json()})
    click.echo(sanity_text(report))
    written(output, csv_path, json_path)
