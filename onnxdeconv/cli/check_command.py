"""``onnxdeconv check``: lint a convnet for CI (exit 0 pass, 1 a check failed, 2 otherwise)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxdeconv.analysis.layers import MAX_CHECK_LAYERS
from onnxdeconv.check import CHECK_STAGES, load_baseline, load_config, run_checks
from onnxdeconv.check.formats import github_annotations, summary_table, write_check_files
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import find_images, info, progress, read_images
from onnxdeconv.cli.options import CONTEXT, ModelOptions
from onnxdeconv.errors import CheckFailedError, OnnxDeconvError, first_line, interrupted

logger = logging.getLogger(__name__)


def crash_exits_2(command: Callable[..., None]) -> Callable[..., None]:
    """Turn an unexpected exception into one line and exit 2, never 1: CI reads 1 as a finding.

    The traceback is logged (shown with ``onnxdeconv -v``).
    """

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (OnnxDeconvError, click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if interrupted(exc):  # Ctrl-C inside a library's own handling: the CLI says so
                raise
            logger.info("internal error in check", exc_info=True)
            first = first_line(exc) if str(exc).strip() else ""
            raise OnnxDeconvError(
                f"internal error: {type(exc).__name__}{': ' + first if first else ''} "
                "(please report, with the output of onnxdeconv -v check ...)"
            ) from exc

    return guarded


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
@options.layer_sample_option(
    "the adjoint test", f"{MAX_CHECK_LAYERS} (or adjoint_layers in --config)"
)
@click.option("--verbose", "show_all", is_flag=True, help="List passed findings too.")
@crash_exits_2
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
    layer_sample: int | None,
    show_all: bool,
) -> None:
    """Check that a model is analyzable, that its projections are faithful and its filters healthy.

    Runs the analyzable, faithful, filters, architecture and regression checks and prints a
    summary. The adjoint test runs on a sample of layers spread over depth (always the last conv
    stage); --layers all tests every layer. Unreadable images are skipped and listed. GitHub Actions
    annotations are printed when GITHUB_ACTIONS=true.

    Exit status: 0 all checks pass; 1 a check failed; 2 a usage, model or image error, or an
    internal error (a crash is never 1).

    Example: onnxdeconv check models/digitnet.onnx --images models/examples --junit check.xml
    """
    config = load_config(config_path)
    if layer_sample is not None:
        config.adjoint_layers = layer_sample
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
    if found is not None:
        report.skipped_images = found.skipped
    info(f"running on {report.provider}")
    if report.sampled:
        info(f"tested a sample of the layers: --layers all tests all {report.projectable_layers}")
    click.echo(summary_table(report, show_all))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github_annotations(report):
            click.echo(line)
    write_check_files(report, json_path=json_path, junit=junit, baseline=write_baseline)
    if not report.passed:
        failed = report.counts()["fail"]
        raise CheckFailedError(f"{failed} check(s) failed on {model.name}: see the summary above")
