"""Benchmark: the deconv graph's transposes and the instrumented forward, each against its peer.

Rows, per model, measured in one run with the methods interleaved (median of ``--repeats``):

* ``plain forward``: ONNX Runtime's forward pass up to the layer, nothing exposed;
* ``instrumented forward``: the same pass also returning what the deconv graph reads (the max
  pools' switches, rectifier inputs), as :class:`onnxdeconv.Projector` runs it;
* ``dense deconv K=k, previous graph``: the deconv graph with every Conv transposed by a
  ConvTranspose (as before this benchmark was written);
* ``dense deconv K=k``: the graph as built now (stride-1 Conv transposes as Conv nodes, see
  ``transpose_as_conv`` in ``onnxdeconv/deconv/rules/spatial.py``), with its largest relative
  difference to the previous graph over the K projections.

Ratios are per projection against one plain forward pass, in wall time and in the CPU time of
the calling thread (with the default single ONNX Runtime thread, the work done: steady on a
loaded machine). Models: the ZFNet-sized net of
``zfnet.py`` (random weights, relu5) and the real SqueezeNet 1.1 of ``../shared`` (fire9).

Usage:
    python benchmarks/bench_deconv_graph.py [--repeats 15] [--k 1 8] [--threads 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or REPO.parent / "shared")
SQUEEZENET = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"


def zfnet_model(workdir: Path) -> Path:
    """Export the ZFNet-sized model into ``workdir`` (in a subprocess: torch stays out of here)."""
    path = workdir / "zfnet.onnx"
    if not path.exists():
        code = (
            "import sys, warnings; warnings.simplefilter('ignore'); "
            f"sys.path.insert(0, {str(BENCH_DIR)!r}); import zfnet; zfnet.export({str(workdir)!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


@contextlib.contextmanager
def previous_graph() -> Iterator[None]:
    """Build deconv graphs as before: every Conv transposed by a ConvTranspose."""
    from onnxdeconv.deconv.rules import conv

    saved = conv.transpose_as_conv
    conv.transpose_as_conv = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        conv.transpose_as_conv = saved


def median_ms(
    runs: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU time of each callable in ms, the callables interleaved, after a warm-up.

    The CPU time is this thread's: with one ONNX Runtime thread the session runs in the calling
    thread, so it counts the work done whatever else the machine runs.
    """
    for run in runs.values():
        run()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            run()
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return (
        {name: 1e3 * statistics.median(values) for name, values in wall.items()},
        {name: 1e3 * statistics.median(values) for name, values in cpu.items()},
    )


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """Worst over rows of ``max|a - b| / max|b|``."""
    return max(
        float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
        for a, b in zip(ours, reference, strict=True)
    )


def bench_model(
    name: str, path: Path, layer: str, ks: list[int], repeats: int, threads: int
) -> list[str]:
    """The table rows of one model."""
    from onnxdeconv import Projector
    from onnxdeconv.runtime import ForwardRunner, create_session

    projector = Projector(path, layer=layer, device="cpu")
    with previous_graph():
        previous = Projector(path, layer=layer, device="cpu")
    prepared = projector.prepared
    names = [projector.layer, *projector.plan.forward_inputs]
    # Every session with the same thread count: on a loaded machine one thread is steadier.
    for one in (projector, previous):
        one.__dict__["deconv_session"] = create_session(one.plan.model, "cpu", threads)
    projector.runner = ForwardRunner(
        prepared,
        expose=names,
        switches_of=list(projector.plan.switches),
        keep_outputs=False,
        device="cpu",
        threads=threads,
    )
    rng = np.random.default_rng(0)
    x = rng.random((1, *projector.input_shape)).astype(prepared.loaded.input_dtype)
    plain = ForwardRunner(
        prepared, expose=[projector.layer], keep_outputs=False, device="cpu", threads=threads
    )
    forward = projector.forward(x)
    runs: dict[str, Callable[[], object]] = {
        "plain forward": lambda: plain.run_bound(x, [projector.layer], (projector.layer,)),
        "instrumented forward": lambda: projector.runner.run_bound(x, names, (projector.layer,)),
    }
    differences: dict[str, float] = {}
    for k in ks:
        picks = projector.strongest(forward, top=k)
        signal = projector.signal(forward, picks)
        images = [0] * len(picks)
        new = projector.project_signal(forward, signal, images)
        old = previous.project_signal(forward, signal, images)
        differences[f"dense deconv K={k}"] = relative_difference(new, old)
        runs[f"dense deconv K={k}, previous graph"] = lambda s=signal, i=images: (
            previous.project_signal(forward, s, i)
        )
        runs[f"dense deconv K={k}"] = lambda s=signal, i=images: projector.project_signal(
            forward, s, i
        )
    wall, cpu = median_ms(runs, repeats)
    rows = []
    for label in runs:
        k = int(label.split("K=")[1].split(",")[0]) if "K=" in label else 1
        diff = differences.get(label)
        wall_ratio = wall[label] / k / wall["plain forward"]
        cpu_ratio = cpu[label] / k / cpu["plain forward"]
        rows.append(
            f"| {name} | {label} | {wall[label]:.1f} | {wall_ratio:.2f} | {cpu[label]:.1f} | "
            f"{cpu_ratio:.2f} | {'' if diff is None else f'{diff:.1e}'} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the exported ZFNet")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnxdeconv-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = bench_model("ZFNet", zfnet_model(workdir), "relu5", args.k, args.repeats, args.threads)
    if SQUEEZENET.exists():
        rows += bench_model(
            "SqueezeNet 1.1", SQUEEZENET, "fire9/concat_1", args.k, args.repeats, args.threads
        )
    load_after = os.getloadavg()
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{args.threads} ONNX Runtime thread(s) per session, median of {args.repeats}"
    )
    print(
        "| model | run | wall ms | wall per projection / plain forward | CPU ms "
        "| CPU per projection / plain forward | max rel. diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
