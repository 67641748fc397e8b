"""CLI glue of ``features`` and ``merge`` (the dataset top-k): page options, states, pages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnxdeconv.analysis.features import FeaturesState
from onnxdeconv.cli import options
from onnxdeconv.cli.feedback import info, progress, written
from onnxdeconv.cli.model import together
from onnxdeconv.engines import FeaturesResult
from onnxdeconv.outputs.features import write_features


@contextmanager
def interrupted(path: Path) -> Iterator[None]:
    """On an interrupt, say how many images the checkpoint at ``path`` holds and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        saved = FeaturesState.load(path).processed if path.is_file() else 0
        info(f"interrupted: the checkpoint {path} holds {saved} images; continue with --resume")
        raise


#: ``--per-page``, ``--batch-size`` and ``--workers``: how the pages are made (features, merge).
page_options = together(
    options.count_option("--per-page", text="", default=16),
    options.count_option(
        "--batch-size",
        text="Images per forward pass; default: as many as fill 8 MB of input, from 32 to 256.",
    ),
    options.count_option(
        "--workers",
        text="Image decoding threads; default: min(4, CPUs). With --engine ray: actors per pool; "
        "default: one per CPU (per --gpus-per-worker of the GPUs).",
    ),
)


def describe_ray(facts: dict[str, Any]) -> str:
    """One line of what the Ray engine did: workers, images, time, object store peak."""
    parts = [f"{facts.get('workers', '?')} workers"]
    if "streamed" in facts:
        parts.append(f"{facts['streamed']} images in {facts['stream_seconds']:.1f} s")
    peak = facts.get("object_store_peak_bytes")
    parts.append("object store peak " + ("unknown" if peak is None else f"{peak / 2**20:.1f} MiB"))
    return ", ".join(parts)


def write_pages(
    result: FeaturesResult, outdir: Path, model: Path, per_page: int, state_path: Path
) -> None:
    """Project the entries and write the pages and JSON, with a progress bar; list the files."""
    streamed = result.provider is not None
    with progress(result.state.filled, "projecting", "proj", True, True) as advance:
        pages = write_features(
            result,
            outdir,
            model_name=model.name,
            per_page=per_page,
            state_path=state_path,
            progress=advance,
        )
    if not streamed:  # the projections were the first run: say where it ran
        info(f"running on {result.provider}")
    written(*pages)
