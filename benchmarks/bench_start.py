"""Benchmark: start-up cost, before and after the graph cache and the lazy imports.

Two tables, each from runs interleaved in one loop so that they share the machine's load:

* **imports**: wall time of ``python -c "import onnxdeconv.projector"`` for this checkout and,
  with ``--baseline DIR``, for another checkout of onnxdeconv (say the previous version), and
  whether ``onnx`` was imported;
* **whole process**: ``onnxdeconv project MODEL INPUT.npy --layer relu5 --top 64 -o OUT.npy`` on
  the ZFNet-sized model of ``zfnet.py`` (as ``bench_top64.py``), with the graph cache off, cold
  (an empty cache folder each run) and warm, and the baseline checkout (cache off) where given.

Wall and CPU seconds (user + system of the child) are medians; CPU time says more than wall time
on a loaded machine. The load average (``uptime``) is printed before and after.

Usage:
    python benchmarks/bench_start.py [--repeats 5] [--baseline /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_top64

REPO = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds and stdout of ``cmd`` run with ``env`` added."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        cmd,
        env={**os.environ, **env},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def table(title: str, rows: dict[str, tuple[list[float], list[float]]], reference: str) -> None:
    """Print medians and each row's ratio to ``reference`` (reference time / row time)."""
    ref_wall = statistics.median(rows[reference][0])
    ref_cpu = statistics.median(rows[reference][1])
    print(f"\n{title}\n")
    print(f"| run | median wall s | median CPU s | {reference} / this (wall) | (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, (walls, cpus) in rows.items():
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {ref_wall / wall:.2f}x | {ref_cpu / cpu:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another onnxdeconv checkout to compare")
    parser.add_argument("--top", type=int, default=64)
    parser.add_argument("--workdir", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--image", type=Path, default=bench_top64.IMAGES / "cat.jpg")
    args = parser.parse_args()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="onnxdeconv-start-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model, _ = bench_top64.prepare_model(workdir)
    inp = bench_top64.prepare_input(workdir, args.image)
    py = sys.executable
    trees = {"this checkout": REPO}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()

    probe = "import sys, onnxdeconv.projector; print('onnx' in sys.modules)"
    imports: dict[str, tuple[list[float], list[float]]] = {}
    onnx_loaded: dict[str, str] = {}
    project = [py, "-m", "onnxdeconv", "project", str(model), str(inp), "--layer", "relu5"]
    project += ["--top", str(args.top), "-o", str(workdir / "out.npy")]
    warm_dir = workdir / "cache-warm"
    runs: dict[str, tuple[Path, dict[str, str] | None]] = {}
    if args.baseline:
        runs["baseline, cache off"] = (trees["baseline"], {"ONNXDECONV_NO_CACHE": "1"})
    runs["this checkout, cache off"] = (REPO, {"ONNXDECONV_NO_CACHE": "1"})
    runs["this checkout, cold cache"] = (REPO, None)
    runs["this checkout, warm cache"] = (REPO, {"ONNXDECONV_CACHE_DIR": str(warm_dir)})
    whole: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    print(f"Load before: {bench_top64.load_average()}", flush=True)
    run_child(project, {"PYTHONPATH": str(REPO), "ONNXDECONV_CACHE_DIR": str(warm_dir)})
    for _ in range(args.repeats):
        for name, tree in trees.items():
            wall, cpu, out = run_child([py, "-c", probe], {"PYTHONPATH": str(tree)})
            imports.setdefault(name, ([], []))
            imports[name][0].append(wall)
            imports[name][1].append(cpu)
            onnx_loaded[name] = out.strip()
        for name, (tree, env) in runs.items():
            if env is None:  # cold: a fresh, empty cache
                cold_dir = workdir / "cache-cold"
                shutil.rmtree(cold_dir, ignore_errors=True)
                env = {"ONNXDECONV_CACHE_DIR": str(cold_dir)}
            wall, cpu, _ = run_child(project, {"PYTHONPATH": str(tree), **env})
            whole[name][0].append(wall)
            whole[name][1].append(cpu)
    print(f"Load after: {bench_top64.load_average()}")
    reference = "baseline" if args.baseline else "this checkout"
    table("import onnxdeconv.projector", imports, reference)
    print("\nonnx imported: " + ", ".join(f"{n}: {v}" for n, v in onnx_loaded.items()))
    whole_reference = "baseline, cache off" if args.baseline else "this checkout, cache off"
    table(f"Whole process, project --top {args.top} (ZFNet relu5)", whole, whole_reference)
    print(f"\n{args.repeats} runs each, interleaved; machine: {bench_top64.cpu_info()}.")


if __name__ == "__main__":
    main()
