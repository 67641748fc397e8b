"""``onnxdeconv preprocess``: which preprocessing a classifier expects, and a copy that says so."""

from __future__ import annotations

from pathlib import Path

import click

from onnxdeconv.analysis.preprocess import DECLARED, rank_preprocessing
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, list_skipped, progress, written
from onnxdeconv.cli.parse import check_output
from onnxdeconv.inputs import PRESETS, image_files, preprocessing_from_metadata
from onnxdeconv.labels import read_labels
from onnxdeconv.outputs import json_text
from onnxdeconv.outputs.model import write_model_metadata
from onnxdeconv.outputs.preprocess import preprocess_table

_WRITE = (
    "Write a copy of the model (to -o OUT.onnx) whose metadata declares the preprocessing (the "
    "one given, else the recommended one) and the class names, which every command then uses."
)


@click.command(context_settings=options.CONTEXT)
@click.argument("model", type=options.PATH)
@click.argument("images", nargs=-1, required=True, type=options.PATH)
@options.labels_option
@options.model_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--write", is_flag=True, help=_WRITE)
@options.output_option("OUT.onnx: the copy --write writes (never the model itself).")
def preprocess(
    model: Path,
    images: tuple[Path, ...],
    labels_path: Path | None,
    model_options: options.ModelOptions,
    as_json: bool,
    write: bool,
    output: Path | None,
) -> None:
    """Find the preprocessing a classifier expects, and store it in a copy of the model.

    IMAGES are image files or folders (searched recursively); unreadable ones are skipped and
    listed. Runs the images under every preset (and the --mean/--std/--scale/--bgr values if
    given, and the preprocessing the model declares in its metadata if any, as 'declared') and
    shows the model's top-5 classes on each. It recommends the one under which the model is most
    certain: the highest mean over the images of 1 - entropy/log(classes) of its class
    probabilities (softmax applied to scores). With --write -o OUT.onnx, the copy declares that
    preprocessing (or the one given with --preset or --mean/...) and the class names (--labels,
    else the model's) in its metadata, so that every later command uses them without options.

    Example: onnxdeconv preprocess model.onnx dog.jpg cat.jpg --labels labels.txt --write -o my.onnx
    """
    if write != (output is not None):
        raise click.UsageError("--write needs -o OUT.onnx, and -o is only for --write")
    if output is not None:
        check_output(output, "-o", ".onnx")  # that it is not the model: checked for every command
    given = model_options.given()
    prepared = model_options.prepared(model)
    labels = read_labels(labels_path) if labels_path is not None else prepared.loaded.labels
    candidates = dict(PRESETS)
    if given is not None and given[0] == "custom":
        candidates["custom"] = given[1]
    if (declared := preprocessing_from_metadata(prepared.loaded)) is not None:
        candidates[DECLARED] = declared
    files = [f for path in images for f in (image_files(path) if path.is_dir() else [path])]
    with progress(len(files) * len(candidates), "images", "img") as advance:
        report = rank_preprocessing(
            prepared,
            files,
            candidates=candidates,
            device=model_options.device,
            progress=advance,
        )
    list_skipped(report.skipped)
    info(f"running on {report.provider}")
    if as_json:
        click.echo(json_text(report.to_json(labels)))
    else:
        for line in preprocess_table(report, labels):
            click.echo(line)
    if output is None:
        return
    name, why = (given[0], "given") if given else (report.recommended, "recommended")
    write_model_metadata(model, output, given[1] if given else report.preprocessing(name), labels)
    names = "and no class names" if labels is None else f"and {len(labels)} class names"
    info(f"the copy declares preprocessing {name} ({why}) {names}")
    if not as_json:  # stdout holds the JSON alone
        written(output)
