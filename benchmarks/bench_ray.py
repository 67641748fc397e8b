"""Benchmark: the streaming phase of ``features`` on the local engine against the Ray engine.

Each engine streams the same image files (SqueezeNet 1.1 fp16 from $ONNXDECONV_SHARED, default
../shared; its nine photos repeated to ``--large`` files) with the command's defaults (the
deepest rectified layer at each resolution, channels 0-15, top 9), ``--batch`` images per
batch on both engines.
Every configuration streams ``--small`` and ``--large`` images; the slope between the two is the
cost per image, the intercept the fixed cost of a run (for Ray: the actor pool's start, each
actor loading the model, Ray Data's planning). Ray's overhead per image is its slope minus the
local one at the same ONNX Runtime threads.

Rows:
    * ``local``: this process, ONNX Runtime's default threads (all cores), decoding threads;
    * ``ray``: one local Ray instance with ``--cpus`` CPUs, started once (its start is printed
      apart), with 1 worker of 1 CPU, 1 worker of 2 CPUs and 2 workers of 1 CPU (a worker's
      ONNX Runtime runs as many threads as it holds CPUs).

Only streaming is timed (no projection). The machine may be shared: the load (``uptime``) is
printed before and after, and the rows take turns for ``--repeats`` rounds; the fastest run of
each is kept.

Usage:
    python benchmarks/bench_ray.py [--small 32] [--large 160] [--repeats 1] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or ROOT.parent / "shared").expanduser()
SQUEEZENET = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def image_folder(count: int) -> Path:
    photos = sorted(p for p in (SHARED / "images").iterdir() if p.is_file())
    folder = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    for index in range(count):
        source = photos[index % len(photos)]
        shutil.copy(source, folder / f"{index:05d}{source.suffix}")
    return folder


def timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=32)
    parser.add_argument("--large", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    if not SQUEEZENET.is_file():
        sys.exit(f"SqueezeNet not found at {SQUEEZENET}: set ONNXDECONV_SHARED")
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    print(f"before: {uptime()}", flush=True)

    import ray

    from onnxdeconv import load_model, prepare
    from onnxdeconv.engines import folder_images, mine_features
    from onnxdeconv.engines.ray import RayEngine

    folder = image_folder(args.large)
    names = folder_images(folder)
    prepared = prepare(load_model(SQUEEZENET))
    options = {"root": folder, "batch_size": args.batch, "device": "cpu", "per_channel": 9}
    options["channels"] = list(range(16))

    # Decoding alone (one thread, read + resize + normalise), the CPU work a GPU worker needs fed.
    from onnxdeconv.engines import ImageLoader
    from onnxdeconv.inputs import PRESETS, preprocessing_from_metadata

    preprocessing = preprocessing_from_metadata(prepared.loaded) or PRESETS["imagenet"]
    loader = ImageLoader(prepared, preprocessing, folder, names)
    decode = timed(lambda: [loader(i) for i in range(len(names))]) / len(names)

    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    ray.data.DataContext.get_current().enable_progress_bars = False

    # Ray's first dataset pays for its own start (the executor, the first worker processes):
    # a run before the timed ones.
    mine_features(prepared, names[: args.small], engine=RayEngine(workers=1), **options)

    configs: dict[str, Any] = {
        "local": None,
        "ray 1 worker x 1 CPU": RayEngine(workers=1, cpus_per_worker=1),
        "ray 1 worker x 2 CPUs": RayEngine(workers=1, cpus_per_worker=2),
        "ray 2 workers x 1 CPU": RayEngine(workers=2, cpus_per_worker=1),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeats):
        for label, engine in configs.items():
            for count in (args.small, args.large):

                def run(engine: Any = engine, count: int = count) -> None:
                    mine_features(prepared, names[:count], engine=engine, **options)

                seconds = timed(run)
                key = (label, count)
                best[key] = min(best.get(key, float("inf")), seconds)
                print(f"  {label}, {count} images: {seconds:.2f} s", flush=True)
    ray.shutdown()
    shutil.rmtree(folder)

    span = args.large - args.small
    local_slope = (best[("local", args.large)] - best[("local", args.small)]) / span
    print()
    print(f"SqueezeNet 1.1 fp16, 224x224, batch {args.batch}, top 9 of channels 0-15 of the ")
    print(f"default layers; Ray: local instance of {args.cpus} CPUs (start {ray_start:.1f} s)")
    header = (
        f"| engine | {args.small} img (s) | {args.large} img (s) | ms/img (slope) | "
        f"fixed (s) | img/s at {args.large} | overhead ms/img vs local |"
    )
    print(header)
    print("|" + "---|" * 7)
    for label in configs:
        small, large = best[(label, args.small)], best[(label, args.large)]
        slope = (large - small) / span
        fixed = small - slope * args.small
        overhead = "" if label == "local" else f"{(slope - local_slope) * 1e3:+.1f}"
        print(
            f"| {label} | {small:.2f} | {large:.2f} | {slope * 1e3:.1f} | {fixed:.1f} | "
            f"{args.large / large:.1f} | {overhead} |"
        )
    print(f"\ndecoding alone, one thread: {decode * 1e3:.1f} ms/img")
    print(f"\nafter: {uptime()}")


if __name__ == "__main__":
    main()
