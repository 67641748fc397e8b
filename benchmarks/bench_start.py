"""Benchmark: start-up cost, before and after the graph cache and the lazy imports.

Two tables, each from runs interleaved in one loop so that they share the machine's load:

* **imports**: wall time of ``python -c "import onnxdeconv.projector"`` for this checkout and,
  with ``--baseline DIR``, for another checkout of onnxdeconv (say the previous version), and
  whether ``onnx`` was imported;
* **whole process**: ``onnxdeconv project MODEL INPUT.npy --layer relu5 --top 64 -o OUT.npy`` on
  the ZFNet-sized model of ``zfnet.py`` (as ``bench_top64.py``), with the graph cache off, cold
  (an empty cache folder each run) and warm, the same model saved with its weights in an
  external data file (cache off: only the weights on the layer's path are read from that file),
  and the baseline checkout (cache off) where given.

Wall and CPU seconds (user + system of the child) are medians, with the highest peak RSS of the
child; CPU time says more than wall time on a loaded machine. The load average (``uptime``) is
printed before and after.

Usage:
    python benchmarks/bench_start.py [--repeats 5] [--baseline /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_top64

REPO = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak RSS (MB) and stdout of ``cmd`` run with ``env`` added."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=tempfile.gettempdir(), stdout=out, stderr=err
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read()[-2000:]}")
        stdout = out.read()
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, stdout


Samples = tuple[list[float], list[float], list[float]]


def table(title: str, rows: dict[str, Samples], reference: str) -> None:
    """Print medians and each row's ratio to ``reference`` (reference time / row time)."""
    ref_wall = statistics.median(rows[reference][0])
    ref_cpu = statistics.median(rows[reference][1])
    print(f"\n{title}\n")
    print(
        f"| run | median wall s | median CPU s | {reference} / this (wall) | (CPU) | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, (walls, cpus, peaks) in rows.items():
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {ref_wall / wall:.2f}x | {ref_cpu / cpu:.2f}x "
            f"| {max(peaks):.0f} |"
        )


def external_copy(model: Path, workdir: Path) -> Path:
    """The model with its weights in an external data file, as exporters of large models do.

    Written by a child process: a parent that held the model would count in every later child's
    peak RSS (Linux keeps ``ru_maxrss`` across the fork and exec).
    """
    path = workdir / "external" / model.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2], "
            "save_as_external_data=True, all_tensors_to_one_file=True, location=sys.argv[3])"
        )
        command = [sys.executable, "-c", code, str(model), str(path), model.stem + ".data"]
        subprocess.run(command, check=True)
    return path


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
    imports: dict[str, Samples] = {}
    onnx_loaded: dict[str, str] = {}
    arguments = [str(inp), "--layer", "relu5", "--top", str(args.top), "-o"]
    project = [py, "-m", "onnxdeconv", "project", str(model), *arguments, str(workdir / "out.npy")]
    external = external_copy(model, workdir)
    project_external = [py, "-m", "onnxdeconv", "project", str(external), *arguments]
    project_external.append(str(workdir / "out_external.npy"))
    warm_dir = workdir / "cache-warm"
    runs: dict[str, tuple[Path, dict[str, str] | None]] = {}
    if args.baseline:
        runs["baseline, cache off"] = (trees["baseline"], {"ONNXDECONV_NO_CACHE": "1"})
    runs["this checkout, cache off"] = (REPO, {"ONNXDECONV_NO_CACHE": "1"})
    runs["this checkout, cold cache"] = (REPO, None)
    runs["this checkout, warm cache"] = (REPO, {"ONNXDECONV_CACHE_DIR": str(warm_dir)})
    runs["this checkout, cache off, external data"] = (REPO, {"ONNXDECONV_NO_CACHE": "1"})
    whole: dict[str, Samples] = {name: ([], [], []) for name in runs}
    print(f"Load before: {bench_top64.load_average()}", flush=True)
    run_child(project, {"PYTHONPATH": str(REPO), "ONNXDECONV_CACHE_DIR": str(warm_dir)})
    for _ in range(args.repeats):
        for name, tree in trees.items():
            wall, cpu, peak, out = run_child([py, "-c", probe], {"PYTHONPATH": str(tree)})
            imports.setdefault(name, ([], [], []))
            for samples, value in zip(imports[name], (wall, cpu, peak), strict=True):
                samples.append(value)
            onnx_loaded[name] = out.strip()
        for name, (tree, env) in runs.items():
            if env is None:  # cold: a fresh, empty cache
                cold_dir = workdir / "cache-cold"
                shutil.rmtree(cold_dir, ignore_errors=True)
                env = {"ONNXDECONV_CACHE_DIR": str(cold_dir)}
            command = project_external if "external" in name else project
            wall, cpu, peak, _ = run_child(command, {"PYTHONPATH": str(tree), **env})
            for samples, value in zip(whole[name], (wall, cpu, peak), strict=True):
                samples.append(value)
    print(f"Load after: {bench_top64.load_average()}")
    reference = "baseline" if args.baseline else "this checkout"
    table("import onnxdeconv.projector", imports, reference)
    print("\nonnx imported: " + ", ".join(f"{n}: {v}" for n, v in onnx_loaded.items()))
    whole_reference = "baseline, cache off" if args.baseline else "this checkout, cache off"
    table(f"Whole process, project --top {args.top} (ZFNet relu5)", whole, whole_reference)
    print(f"\n{args.repeats} runs each, interleaved; machine: {bench_top64.cpu_info()}.")


if __name__ == "__main__":
    main()
