"""Benchmark: windowed crops (conv2 at 224 vs 448 px) and the memory budget (K in parts).

The model is the ZFNet-sized net of ``zfnet.py`` (random Kaiming weights): its convolutional part
with a free input size for the image-size rows, the whole model (250 MB) for the ``--top`` rows.
The input is one real photo (``cat.jpg`` of the shared images), resized. Every row runs in a
fresh process; with ``--baseline REV`` the same rows also run on that git revision of the
library (an exported copy), in the same run, interleaved, as the peer.

Rows:
    * ``conv2 deconv``: the deconv of the 64 strongest conv2 units (one forward pass, then the
      median of ``--repeats`` deconv runs), at 224 and 448 px: ``project`` (whole images) and,
      where the library has it, ``project_crops`` (the crops the pictures and ``features`` use);
      the 448/224 ratio is the goal (<= 1.2);
    * ``top K``: the whole process of ``--top K`` from relu5 (load, forward, K projections as
      whole images), peak RSS and wall time, with the default budget and with none;
    * ``arena``: one windowed relu5 run of 64 rows with ONNX Runtime's CPU arena on, off, and
      shrunk after each run (the run option ``memory.enable_memory_arena_shrinkage``);
    * ``several K``: one process projecting K = 256, 64, 8, 256, 64, 1 from relu5 (dense graph,
      the costliest per row): the RSS after each, with the default budget and with none.

Usage:
    python benchmarks/bench_crops_memory.py [--baseline REV] [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
IMAGES = Path(os.environ.get("ONNXDECONV_SHARED") or REPO.parent / "shared") / "images"
UNLIMITED = str(1 << 50)

# One child process per measurement; it prints one JSON line.
RUNNER = r"""
import inspect, json, resource, sys, time
import numpy as np
from onnxdeconv import Projector
from onnxdeconv.inputs import PRESETS, load_input
from onnxdeconv.graph.load import load_model

mode, model, image, layer, size, K, budget, repeats = sys.argv[1:9]
size, K, repeats = int(size), int(K), int(repeats)
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
loaded = load_model(model)
x = load_input(image, loaded, PRESETS["imagenet"], size=(size, size)).array
kwargs = {}
if "memory_budget" in inspect.signature(Projector).parameters and budget != "-":
    kwargs["memory_budget"] = int(budget)
p = Projector(loaded, layer=layer, input_shape=(3, size, size), device="cpu", **kwargs)
forward = p.forward(x)
result = {}
if mode == "time":
    picks = p.strongest(forward, top=K)
    calls = {"project": lambda: p.project(forward, picks)}
    if hasattr(p, "project_crops"):
        calls["project_crops"] = lambda: p.project_crops(forward, picks)
    for name, call in calls.items():
        call()
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
        result[name] = float(np.median(times))
elif mode == "top":
    picks = p.strongest(forward, top=K)
    projections = p.project(forward, picks)
    result = {"wall": time.perf_counter() - start, "peak": peak_mb(), "rows": len(projections)}
elif mode == "arena":  # one windowed run of K rows: arena on, off, shrunk after each run
    import onnxruntime as ort
    from onnxdeconv.deconv.emitter import PROJECTION, WINDOW_ORIGIN
    plan = p.windowed[0]
    picks = p.strongest(forward, top=K)
    # Private API: older checkouts (--baseline) took the plan, newer ones its forward inputs.
    takes = inspect.signature(p._feeds).parameters
    inputs = plan.forward_inputs if "forward_inputs" in takes else plan
    feeds = p._feeds(forward, inputs, p._unit_signal(forward, picks), [0] * K)
    feeds = {k: (v.numpy() if isinstance(v, ort.OrtValue) else v) for k, v in feeds.items()}
    feeds[WINDOW_ORIGIN] = np.array([s.position for s in picks], np.int64)
    sessions, times = {}, {}
    model = plan.model
    if getattr(plan, "weights", None):  # the plan's large weights are shared, not in the graph
        from onnxdeconv.graph.passes import attach_weights
        model = attach_weights(model, plan.weights)
    for variant in ("arena on", "arena off", "arena shrunk after each run"):
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = variant != "arena off"
        payload = model.SerializeToString()
        cpu = ["CPUExecutionProvider"]
        sessions[variant] = ort.InferenceSession(payload, options, providers=cpu)
        times[variant] = []
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    for index in range(repeats + 1):
        for variant, session in sessions.items():
            t = time.perf_counter()
            session.run([PROJECTION], feeds, shrink if "shrunk" in variant else None)
            if index:  # the first run of each is a warm-up
                times[variant].append(time.perf_counter() - t)
    result = {variant: float(np.median(t)) for variant, t in times.items()}
else:  # several K, dense graph
    rss = []
    for k in [256, 64, 8, 256, 64, 1]:
        picks = (p.strongest(forward, top=256) * 2)[:k]
        p.project_signal(forward, p.signal(forward, picks), [0] * k)
        rss.append(round(rss_mb()))
    result = {"rss": rss, "peak": peak_mb()}
import onnxdeconv
result["module"] = onnxdeconv.__file__
print(json.dumps(result))
"""


def export_models(workdir: Path) -> tuple[Path, Path]:
    """The whole ZFNet (224 px) and its convolutional part (any size) as ONNX files."""
    import torch

    sys.path.insert(0, str(BENCH_DIR))
    import zfnet

    whole, _ = zfnet.export(workdir)
    convs = workdir / "zfnet_convs.onnx"
    torch.onnx.export(
        zfnet.build()[:12],
        (torch.zeros(1, 3, zfnet.INPUT_SIZE, zfnet.INPUT_SIZE),),
        str(convs),
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["relu5"],
        dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "relu5": {0: "N", 2: "h", 3: "w"}},
    )
    return whole, convs


def run(code: Path, *args: object) -> dict[str, object]:
    """One child process on the library at ``code``; its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    # Not from the repository's root: ``python -c`` puts the working directory first on the path.
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *map(str, args)],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    if not str(result["module"]).startswith(str(code)):
        raise RuntimeError(f"the child imported {result['module']}, not the library at {code}")
    return result


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to measure as the peer (exported copy)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=256)
    parser.add_argument("--top-repeats", type=int, default=3)
    parser.add_argument("--only", default="conv2,top,arena,growth", help="tables to measure")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_crops_"))
    workdir.mkdir(parents=True, exist_ok=True)
    whole, convs = export_models(workdir)
    image = IMAGES / "cat.jpg"
    codes = {"this": REPO}
    if args.baseline:
        base = workdir / "baseline"
        base.mkdir(exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline, "onnxdeconv"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        codes = {f"baseline {args.baseline}": base, "this": REPO}
    print(f"load average before: {load()}")

    tables = args.only.split(",")
    runs = [(f"{label}, no budget", code, "-") for label, code in codes.items() if code != REPO]
    runs += [("this, default budget", REPO, "-"), ("this, no budget", REPO, UNLIMITED)]
    if "conv2" in tables:
        conv2_table(codes, convs, image, args.repeats)
    if "top" in tables:
        print(f"\n| `--top {args.top}` from relu5, whole process | median wall s | peak RSS MB |")
        print("|---|---:|---:|")
        got: dict[str, list[dict[str, object]]] = {label: [] for label, _, _ in runs}
        for _ in range(args.top_repeats):  # interleaved
            for label, code, budget in runs:
                got[label].append(run(code, "top", whole, image, "relu5", 224, args.top, budget, 1))
        for label, results in got.items():
            wall = statistics.median(float(r["wall"]) for r in results)  # type: ignore[arg-type]
            peak = max(float(r["peak"]) for r in results)  # type: ignore[arg-type]
            print(f"| {label} | {wall:.2f} | {peak:.0f} |")
    if "arena" in tables:
        got_a = run(REPO, "arena", convs, image, "relu5", 224, 64, "-", args.repeats)
        print("\n| one windowed relu5 run, K=64, s (one process, interleaved) | median | vs on |")
        print("|---|---:|---:|")
        for variant in ("arena on", "arena off", "arena shrunk after each run"):
            seconds = float(got_a[variant])  # type: ignore[arg-type]
            ratio = seconds / float(got_a["arena on"])  # type: ignore[arg-type]
            print(f"| {variant} | {seconds:.3f} | {ratio:.2f} |")
    if "growth" in tables:
        print(
            "\n| several K in one process (dense relu5) | RSS MB after K = 256, 64, 8, 256, 64, 1 |"
        )
        print("|---|---|")
        for label, code, budget in runs:
            got_k = run(code, "growth", convs, image, "relu5", 224, 0, budget, 1)
            print(f"| {label} | {got_k['rss']} (peak {got_k['peak']:.0f}) |")
    print(f"\nload average after: {load()}")


def conv2_table(codes: dict[str, Path], convs: Path, image: Path, repeats: int) -> None:
    """The conv2 rows: deconv time at 224 and 448 px, for each library."""
    print("\n| conv2, K=64, deconv s | 224 px | 448 px | 448/224 |")
    print("|---|---:|---:|---:|")
    for label, code in codes.items():
        at = {
            size: run(code, "time", convs, image, "conv2", size, 64, "-", repeats)
            for size in (224, 448)
        }
        for call in [name for name in at[224] if name != "module"]:
            small, large = float(at[224][call]), float(at[448][call])  # type: ignore[arg-type]
            print(f"| {label}: `{call}` | {small:.4f} | {large:.4f} | {large / small:.2f} |")


if __name__ == "__main__":
    main()
