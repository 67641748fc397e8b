"""Benchmark: cost per projection against K and against the image size, a low and a deep layer.

The model is the convolutional part of the ZFNet-sized net of ``zfnet.py`` (random weights,
free input size); the input is one real photo (``cat.jpg``), resized. For relu2 (low) and relu5
(deep), in one process, each timing the median of ``--repeats`` runs after a warm-up:

* ``windowed``: ``Projector.project_crops``, the crops the pictures and ``features`` use
  (each row carries its unit's receptive field only);
* ``dense``: the dense deconv graph (whole maps per row, what a path through a Concat or a
  global pool needs), through ``Projector.project_signal``;
* the peer, in the same run: a plain ONNX Runtime forward pass up to the layer, nothing exposed,
  run between every two timed runs of the others (its median over all of them).

The K sweep runs at ``--size`` (224); the size sweep at ``--size-k`` projections (16). The cost
is per projection (the run's time over K), and its ratio to one plain forward pass at the same
size. ``--plot PNG`` draws both sweeps (the docs' performance page shows it).

Usage:
    python benchmarks/cost_curves.py [--ks 1,4,16,64,256] [--sizes 112,224,336,448]
        [--repeats 5] [--plot docs/images/performance_cost.png] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or REPO.parent / "shared")
IMAGE = SHARED / "images" / "cat.jpg"
LAYERS = {"relu2": "low", "relu5": "deep"}

EXPORT = """
import sys, warnings
warnings.simplefilter("ignore")
import torch
sys.path.insert(0, sys.argv[1])
import zfnet
torch.onnx.export(
    zfnet.build()[:12], (torch.zeros(1, 3, 224, 224),), sys.argv[2], dynamo=False,
    opset_version=13, input_names=["input"], output_names=["relu5"],
    dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "relu5": {0: "N", 2: "h", 3: "w"}},
)
"""


def convs_model(workdir: Path) -> Path:
    """ZFNet's convolutional part at a free input size (exported in a subprocess: no torch here)."""
    path = workdir / "zfnet_convs.onnx"
    if not path.exists():
        subprocess.run([sys.executable, "-c", EXPORT, str(BENCH_DIR), str(path)], check=True)
    return path


def interleaved_s(
    run: Callable[[], object], peer: Callable[[], object], repeats: int, peer_times: list[float]
) -> float:
    """Median wall time of ``run`` after a warm-up; ``peer`` runs between, its times kept."""
    run()
    peer()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        peer()
        peer_times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    model: Path, layer: str, size: int, ks: list[int], repeats: int
) -> list[dict[str, Any]]:
    """Rows of one layer at one size: each mode at each K, with the plain forward between runs."""
    from onnxdeconv import Projector
    from onnxdeconv.graph.load import load_model
    from onnxdeconv.inputs import PRESETS, load_input
    from onnxdeconv.runtime import ForwardRunner, create_session

    loaded = load_model(model)
    x = load_input(IMAGE, loaded, PRESETS["imagenet"], size=(size, size)).array
    projector = Projector(loaded, layer=layer, input_shape=(3, size, size), device="cpu")
    # Every session on one ONNX Runtime thread: idle pools of several sessions would otherwise
    # spin against each other's runs, and one thread measures the work done.
    prepared = projector.prepared
    plain = ForwardRunner(prepared, expose=[projector.layer], keep_outputs=False, threads=1)
    projector.runner = ForwardRunner(
        prepared,
        expose=[projector.layer, *projector.plan.forward_inputs],
        switches_of=list(projector.plan.switches),
        keep_outputs=False,
        threads=1,
    )
    plans = {"deconv_session": projector.plan}
    if projector.windowed is not None:
        plans["windowed"] = projector.windowed[0]
    for attribute, plan in plans.items():
        session = create_session(plan.model, "cpu", 1, weights=plan.weights)
        projector.__dict__[attribute] = (
            session if attribute == "deconv_session" else (plan, session)
        )

    def forward_pass() -> object:
        return plain.run_bound(x, [projector.layer], (projector.layer,))

    forward = projector.forward(x)
    forward_times: list[float] = []
    rows = []
    for k in ks:
        picks = projector.strongest(forward, top=k)
        signal = projector.signal(forward, picks)
        modes: dict[str, Callable[[], object]] = {
            "dense": lambda s=signal: projector.project_signal(forward, s, [0] * len(s)),
        }
        if projector.windowed is not None:
            modes["windowed"] = lambda p=picks: projector.project_crops(forward, p)
        for mode, run in modes.items():
            seconds = interleaved_s(run, forward_pass, repeats, forward_times)
            rows.append(
                {"layer": layer, "mode": mode, "size": size, "k": len(picks), "seconds": seconds}
            )
    # One forward time per layer and size: the median of all the runs between the others.
    forward_ms = 1e3 * statistics.median(forward_times)
    for row in rows:
        row["per_projection_ms"] = 1e3 * row.pop("seconds") / row["k"]
        row["forward_ms"] = forward_ms
    return rows


def plot(rows: list[dict[str, Any]], size: int, size_k: int, path: Path) -> None:
    """Both sweeps side by side: cost per projection over a forward pass, and in ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_k, by_size) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"windowed": "-", "dense": "--"}
    colors = {"relu2": "tab:blue", "relu5": "tab:orange"}
    for layer in LAYERS:
        for mode in styles:
            label = f"{layer} ({LAYERS[layer]}), {mode}"
            sweep = [r for r in rows if (r["layer"], r["mode"], r["size"]) == (layer, mode, size)]
            sweep.sort(key=lambda r: r["k"])
            if sweep:
                by_k.plot(
                    [r["k"] for r in sweep],
                    [r["per_projection_ms"] / r["forward_ms"] for r in sweep],
                    styles[mode],
                    color=colors[layer],
                    marker="o",
                    label=label,
                )
            sizes = [r for r in rows if (r["layer"], r["mode"], r["k"]) == (layer, mode, size_k)]
            sizes.sort(key=lambda r: r["size"])
            if sizes:
                by_size.plot(
                    [r["size"] for r in sizes],
                    [r["per_projection_ms"] for r in sizes],
                    styles[mode],
                    color=colors[layer],
                    marker="o",
                    label=label,
                )
        forwards = {r["size"]: r["forward_ms"] for r in rows if r["layer"] == layer}
        by_size.plot(
            sorted(forwards),
            [forwards[s] for s in sorted(forwards)],
            ":",
            color=colors[layer],
            label=f"{layer}: one plain forward pass",
        )
    by_k.set_xscale("log", base=2)
    by_k.axhline(1.0, color="gray", linewidth=0.8)
    by_k.set_xlabel("K, projections per call")
    by_k.set_ylabel("cost per projection / one forward pass")
    by_k.set_title(f"Against K ({size}x{size} input)")
    by_size.set_yscale("log")  # windowed low layers cost a fraction of a millisecond
    by_size.set_xlabel("input side (px)")
    by_size.set_ylabel("ms per projection (log)")
    by_size.set_title(f"Against the input size (K={size_k})")
    for axes in (by_k, by_size):
        axes.grid(True, alpha=0.3)
    by_k.legend(fontsize=8)
    by_size.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,4,16,64,256", help="K values of the K sweep")
    parser.add_argument("--sizes", default="112,224,336,448", help="input sides of the size sweep")
    parser.add_argument("--size", type=int, default=224, help="input side of the K sweep")
    parser.add_argument("--size-k", type=int, default=16, help="K of the size sweep")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plot", type=Path, help="write the two sweeps as a PNG")
    parser.add_argument("--workdir", type=Path, help="keeps the exported model")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnxdeconv-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = convs_model(workdir)
    ks = [int(k) for k in args.ks.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for layer in LAYERS:
        rows += measure(model, layer, args.size, ks, args.repeats)
        for size in sizes:
            if size != args.size or args.size_k not in ks:
                rows += measure(model, layer, size, [args.size_k], args.repeats)
    load_after = os.getloadavg()
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"median of {args.repeats}; one ONNX Runtime thread per session"
    )
    print("| layer | mode | input | K | ms per projection | plain forward ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: (r["layer"], r["mode"], r["size"], r["k"])):
        print(
            f"| {row['layer']} | {row['mode']} | {row['size']} | {row['k']} | "
            f"{row['per_projection_ms']:.2f} | {row['forward_ms']:.2f} | "
            f"{row['per_projection_ms'] / row['forward_ms']:.2f} |"
        )
    if args.plot:
        plot(rows, args.size, args.size_k, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
