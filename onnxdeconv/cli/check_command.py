"""``onnxdeconv check``: lint a convnet for CI (exit 0 pass, 1 a check failed, 2 usage error)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from onnxdeconv.check import CHECK_STAGES, load_baseline, load_config, run_checks
from onnxdeconv.check.formats import github_annotations, summary_table, write_check_files
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, progress, read_images
from onnxdeconv.cli.options import CONTEXT, ModelOptions
from onnxdeconv.errors import CheckFailedError


@click.command(context_settings=CONTEXT)
@click.argument("model", type=options.PATH)
@options.images_option("for the activity, drift and projection checks")
@options.limit_option
@options.model_options(device="cpu")
@click.option(
    "--baseline", type=options.PATH, help="Compare with a baseline written by --write-baseline."
)
@click.option(
    "--write-baseline",
    type=options.PATH,
    help="Write this run's statistics and top-k projections as a baseline.",
)
@click.option(
    "--config",
    "config_path",
    type=options.PATH,
    help="TOML file with thresholds (keys and defaults: docs/commands/check.md).",
)
@click.option("--junit", type=options.PATH, help="Write JUnit XML here.")
@options.json_option("the report")
@click.option("--verbose", "show_all", is_flag=True, help="List passed findings too.")
def check(
    model: Path,
    images: Path | None,
    limit: int | None,
    model_options: ModelOptions,
    baseline: Path | None,
    write_baseline: Path | None,
    config_path: Path | None,
    junit: Path | None,
    json_path: Path | None,
    show_all: bool,
) -> None:
    """Check that a model is analyzable, that its projections are faithful and its filters healthy.

    Runs the analyzable, faithful, filters, architecture and regression checks, prints a summary,
    and exits with 0 when all pass, 1 when a check fails and 2 for a usage or model error.
    GitHub Actions annotations are printed when GITHUB_ACTIONS=true.

    Example: onnxdeconv check models/digitnet.onnx --images models/examples --junit check.xml
    """
    config = load_config(config_path)
    old = load_baseline(baseline) if baseline is not None else None
    prepared = model_options.prepared(model)
    loaded, input_shape = prepared.loaded, prepared.input_shape
    found = None
    if images is not None:
        preprocessing, _ = model_options.preprocessing(loaded)
        files = find_images(images, limit)
        found = read_images(files, prepared, preprocessing, images)
    batch, names = (found.batch, found.names) if found else (None, ())
    with progress(len(CHECK_STAGES), "checking", "stage") as advance:
        report = run_checks(
            loaded,
            batch,
            names,
            old,
            config,
            input_shape=input_shape,
            device=model_options.device,
            progress=advance,
        )
    info(f"running on {report.provider}")
    click.echo(summary_table(report, show_all))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github_annotations(report):
            click.echo(line)
    write_check_files(report, json_path=json_path, junit=junit, baseline=write_baseline)
    if not report.passed:
        failed = report.counts()["fail"]
        raise CheckFailedError(f"{failed} check(s) failed on {model.name}: see the summary above")
