"""Every benchmark script still runs and prints its table, at the smallest settings.

The benchmarks call the library the way a user would and some of its private API; a change
there once left two of them raising (the shared weights of the deconv plans). Timings are not
checked here: they belong to the scripts' own tables.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, unavailable

BENCHMARKS = ROOT / "benchmarks"

#: Script, its smallest arguments (``{tmp}``: the test's folder), and what it needs beyond the
#: test extras.
SMOKE_RUNS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "bench_deconv_graph.py": (["--repeats", "1", "--k", "1"], ("shared",)),
    "bench_top64.py": (
        ["--repeats", "1", "--top", "2", "--idle-wait", "0", "--retries", "0", "--no-warmup"],
        ("shared",),
    ),
    "bench_start.py": (["--repeats", "1", "--top", "2"], ("shared",)),
    "bench_crops_memory.py": (
        ["--repeats", "1", "--top", "4", "--top-repeats", "1", "--only", "conv2,arena"],
        ("shared",),
    ),
    "bench_features.py": (
        ["--repeats", "1", "--photos", "2", "--models", "squeezenet"],
        ("shared",),
    ),
    "bench_ray.py": (["--small", "2", "--large", "4"], ("shared",)),
    "bench_gpu.py": (["--ks", "1", "--repeats", "1"], ()),
    "scale.py": (
        ["--nodes", "50", "--weights", "1", "--check-layers", "1", "--check-nodes", "50"],
        (),
    ),
    "explore_page.py": (["--clicks", "1", "--screenshots", "{tmp}/shots"], ("shared", "chromium")),
    "cost_curves.py": (
        [
            *("--ks", "1,2", "--sizes", "64", "--size", "96", "--size-k", "2", "--repeats", "1"),
            *("--plot", "{tmp}/cost.png"),
        ],
        ("shared",),
    ),
}


def missing(needs: tuple[str, ...]) -> str | None:
    """What a run needs that this machine lacks, or None."""
    if "shared" in needs and not SHARED.exists():
        return f"../shared is not at {SHARED}"
    if "chromium" in needs and not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "chromium and chromium-driver are not installed"
    return None


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - {"zfnet.py"}
    assert scripts == set(SMOKE_RUNS)


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs(script: str, tmp_path: Path) -> None:
    arguments, needs = SMOKE_RUNS[script]
    reason = missing(needs)
    if reason:
        unavailable(reason)
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    if "--workdir" in (BENCHMARKS / script).read_text(encoding="utf-8"):
        arguments = [*arguments, "--workdir", str(tmp_path)]
    environment = {**os.environ, "ONNXDECONV_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if script == "bench_gpu.py" and "does not load here" in done.stdout + done.stderr:
        return  # No CUDA here: the script says so and measures nothing.
    assert re.search(r"^\| ?---", done.stdout, re.MULTILINE), done.stdout[-3000:]
    if "--plot" in arguments:
        assert (tmp_path / "cost.png").stat().st_size > 10_000
