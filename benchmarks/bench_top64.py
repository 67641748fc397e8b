"""Benchmark: ``onnxdeconv project --top 64`` against captum doing the same 64 projections.

The model is the ZFNet-sized net of ``zfnet.py`` (random Kaiming weights) at 224x224; the input is
one real photo. Every measured run is a whole process, started fresh: interpreter start, imports,
model loading, the forward pass, the 64 projections and writing them to a ``.npy`` file.

Rows:
    * ``onnxdeconv CLI, cold cache``: ``onnxdeconv project MODEL INPUT.npy --layer relu5 --top 64
      -o OUT.npy`` (when the ``onnxdeconv`` console script works), with an empty graph cache
      (``ONNXDECONV_CACHE_DIR``, a fresh folder each run): it hashes the model file, loads and
      builds, and fills the cache;
    * ``onnxdeconv CLI, warm cache``: the same command again, finding its graphs in the cache
      (no ``onnx`` import, no model loading, no build);
    * ``onnxdeconv API``: a short script doing the same with ``onnxdeconv.Projector``;
    * ``captum``: ``NeuronDeconvolution(model, model.relu5)`` once per projection, times the
      activation (the oracle of the project's notes), on the same channels and positions;
    * ``torch batched VJP``: the same 64 projections as one vector-Jacobian product of the model
      cut at relu5, batched over the 64 one-hot signals (``is_grads_batched``), with every ReLU's
      backward replaced by ``relu(grad)`` (the deconvnet rule): the fastest plain-PyTorch peer;
    * ``ORT forward``: a plain onnxruntime forward pass of the model, as a floor.

Every run is repeated ``--repeats`` times (methods interleaved) after one untimed warm-up run
each, and the median is reported, with the child's CPU time (user + system). On a shared machine,
each run first waits for the CPUs to go quiet (``--idle-wait``) and a run during which other
processes used the CPU is run again (``--retries``; the least disturbed attempt is kept, and the
table says how many timed runs stayed disturbed). The runner scripts also time their own stages,
which gives the in-process breakdown (without interpreter start and imports).

The load average (``uptime``) is printed before and after: on a shared machine it says how far
the timings are from an idle machine's.

Usage:
    python benchmarks/bench_top64.py [--repeats 3] [--top 64] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
IMAGES = Path(os.environ.get("ONNXDECONV_SHARED") or REPO.parent / "shared") / "images"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
LAYER_ALIAS = "relu5"

# Each runner prints one JSON line of stage timings (seconds, from interpreter start) on stdout.
API_RUNNER = """
import time
T0 = time.perf_counter()
import json, sys
import numpy as np
from onnxdeconv import Projector
T1 = time.perf_counter()
model, inp, layer, top, out, device = sys.argv[1:7]
x = np.load(inp)
projector = Projector(model, layer=layer, rule="deconvnet", device=device)
T2 = time.perf_counter()
forward = projector.forward(x)
T3 = time.perf_counter()
picks = projector.strongest(forward, top=int(top))
projections = projector.project(forward, picks)
T4 = time.perf_counter()
np.save(out, projections.astype(np.float32))
T5 = time.perf_counter()
channels = [p.channel for p in picks]
positions = [list(p.position) for p in picks]
print(json.dumps({"stages": {"import": T1 - T0, "load": T2 - T1, "forward": T3 - T2,
                             "project": T4 - T3, "save": T5 - T4},
                  "channels": channels, "positions": positions,
                  "provider": projector.provider}))
"""

CAPTUM_RUNNER = """
import time
T0 = time.perf_counter()
import json, sys
import numpy as np
import torch
from captum.attr import NeuronDeconvolution
bench, state, inp, layer, top, out, threads = sys.argv[1:8]
sys.path.insert(0, bench)
import zfnet
T1 = time.perf_counter()
if int(threads) > 0:
    torch.set_num_threads(int(threads))
model = zfnet.load(state)
module = getattr(model, layer)
x = torch.from_numpy(np.load(inp))
T2 = time.perf_counter()
seen = {}
hook = module.register_forward_hook(lambda m, i, o: seen.__setitem__("act", o.detach()))
with torch.no_grad():
    model(x)
hook.remove()
act = seen["act"][0].numpy()
T3 = time.perf_counter()
flat = act.reshape(act.shape[0], -1)
order = np.argsort(-flat.max(axis=1), kind="stable")[: int(top)]
deconv = NeuronDeconvolution(model, module)
rows, positions = [], []
for c in order:
    where = tuple(int(i) for i in np.unravel_index(int(flat[c].argmax()), act.shape[1:]))
    attr = deconv.attribute(x, neuron_selector=(int(c), *where))
    rows.append(attr[0].detach() * float(act[(c, *where)]))
    positions.append(list(where))
projections = torch.stack(rows).numpy()
T4 = time.perf_counter()
np.save(out, projections.astype(np.float32))
T5 = time.perf_counter()
print(json.dumps({"stages": {"import": T1 - T0, "load": T2 - T1, "forward": T3 - T2,
                             "project": T4 - T3, "save": T5 - T4},
                  "channels": [int(c) for c in order], "positions": positions,
                  "threads": torch.get_num_threads()}))
"""

VJP_RUNNER = """
import time
T0 = time.perf_counter()
import json, sys
import numpy as np
import torch
from torch import nn
bench, state, inp, layer, top, out, threads = sys.argv[1:8]
sys.path.insert(0, bench)
import zfnet
T1 = time.perf_counter()
if int(threads) > 0:
    torch.set_num_threads(int(threads))


class DeconvRelu(torch.autograd.Function):
    # The deconvnet rectifier: the backward pass sends relu(signal), whatever the input's sign.
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class Relu(nn.Module):
    def forward(self, x):
        return DeconvRelu.apply(x)


model = zfnet.load(state)
names = list(model._modules)
cut = torch.nn.Sequential(*[Relu() if isinstance(model._modules[n], nn.ReLU) else model._modules[n]
                            for n in names[: names.index(layer) + 1]])
x = torch.from_numpy(np.load(inp)).requires_grad_(True)
T2 = time.perf_counter()
act_t = cut(x)
act = act_t[0].detach().numpy()
T3 = time.perf_counter()
flat = act.reshape(act.shape[0], -1)
order = np.argsort(-flat.max(axis=1), kind="stable")[: int(top)]
signals = torch.zeros((len(order), *act_t.shape), dtype=act_t.dtype)
positions = []
for row, c in enumerate(order):
    where = tuple(int(i) for i in np.unravel_index(int(flat[c].argmax()), act.shape[1:]))
    signals[(row, 0, int(c), *where)] = float(act[(c, *where)])
    positions.append(list(where))
(grads,) = torch.autograd.grad(act_t, x, grad_outputs=signals, is_grads_batched=True)
projections = grads[:, 0].numpy()
T4 = time.perf_counter()
np.save(out, projections.astype(np.float32))
T5 = time.perf_counter()
print(json.dumps({"stages": {"import": T1 - T0, "load": T2 - T1, "forward": T3 - T2,
                             "project": T4 - T3, "save": T5 - T4},
                  "channels": [int(c) for c in order], "positions": positions,
                  "threads": torch.get_num_threads()}))
"""

ORT_RUNNER = """
import time
T0 = time.perf_counter()
import json, sys
import numpy as np
import onnxruntime as ort
T1 = time.perf_counter()
model, inp = sys.argv[1:3]
x = np.load(inp)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
T2 = time.perf_counter()
session.run(None, {session.get_inputs()[0].name: x})
T3 = time.perf_counter()
print(json.dumps({"stages": {"import": T1 - T0, "load": T2 - T1, "forward": T3 - T2}}))
"""


def prepare_input(workdir: Path, image: Path) -> Path:
    """Center-crop and resize ``image`` to 224x224, normalise it, save ``[1,3,224,224]`` f32."""
    import cv2

    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read image {image}")
    h, w = bgr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = bgr[top : top + side, left : left + side]
    rgb = cv2.cvtColor(
        cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    x = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    path = workdir / "input.npy"
    np.save(path, np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32))
    return path


def prepare_model(workdir: Path) -> tuple[Path, Path]:
    """Export the ZFNet-sized model to ``workdir`` in a subprocess (keeps torch out of here)."""
    onnx_path, state_path = workdir / "zfnet.onnx", workdir / "zfnet.pt"
    if not (onnx_path.exists() and state_path.exists()):
        code = (
            "import sys, warnings; warnings.simplefilter('ignore'); "
            f"sys.path.insert(0, {str(BENCH_DIR)!r}); import zfnet; "
            f"zfnet.export({str(workdir)!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    return onnx_path, state_path


def cli_path() -> Path | None:
    """The ``onnxdeconv`` console script next to this interpreter, if it runs."""
    script = Path(sys.executable).parent / "onnxdeconv"
    if not script.exists():
        found = shutil.which("onnxdeconv")
        if not found:
            return None
        script = Path(found)
    probe = subprocess.run([str(script), "project", "--help"], capture_output=True, text=True)
    return script if probe.returncode == 0 else None


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, *rest = (int(f) for f in fields)
    steal = rest[0] if rest else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` of the CPUs.

    Returns the busy fraction seen last. Other people's jobs on a shared machine skew timings.
    """
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_busy_seconds()
        time.sleep(1.0)
        busy = (cpu_busy_seconds() - before) / cores
        if busy < threshold or time.monotonic() >= deadline:
            return busy


#: A method: its command line, and the environment overrides of each run (called per run).
Method = tuple[list[str], Callable[[], dict[str, str]]]


def load_average() -> str:
    """What ``uptime`` prints (the 1, 5 and 15 minute load averages)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, float, dict[str, object]]:
    """Run ``cmd`` as a fresh process (with ``env`` added to the environment).

    Returns:
        Its wall time, its CPU time (user + system), the CPU seconds other processes used
        meanwhile, and its JSON report.
    """
    busy0, child0 = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - start
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    foreign = max(0.0, cpu_busy_seconds() - busy0 - ours)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    report: dict[str, object] = {}
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            report = json.loads(line)
            break
    return wall, ours, foreign, report


def worst_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst over rows of ``max|a-b| / max|b|``."""
    if ours.shape != ref.shape:
        return float("inf")
    errors = [
        float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
        for a, b in zip(ours, ref, strict=True)
    ]
    return max(errors)


def versions() -> str:
    """Versions of the packages involved (read without importing torch here)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for name in ("onnxdeconv", "onnxruntime-gpu", "onnxruntime", "onnx", "torch", "captum"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def cpu_info() -> str:
    """CPU model and core count."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (median taken)")
    parser.add_argument("--top", type=int, default=64, help="projections (strongest channels)")
    parser.add_argument("--workdir", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--image", type=Path, default=IMAGES / "cat.jpg")
    parser.add_argument(
        "--device", default="auto", help="onnxdeconv API runner device (the CLI uses its default)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for captum (0: torch's default)"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="reruns of a run that other processes disturbed"
    )
    parser.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=True, help="one untimed run each"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI rows")
    parser.add_argument("--no-api", action="store_true", help="skip the API runner row")
    parser.add_argument("--no-vjp", action="store_true", help="skip the torch batched VJP row")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnxdeconv-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir.resolve())
    finally:
        if args.keep or args.workdir:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Prepare, time every method, compare the outputs and print the tables."""
    load_before = load_average()
    model, state = prepare_model(workdir)
    inp = prepare_input(workdir, args.image)
    runners = {"api": API_RUNNER, "captum": CAPTUM_RUNNER, "vjp": VJP_RUNNER, "ort": ORT_RUNNER}
    for name, source in runners.items():
        (workdir / f"run_{name}.py").write_text(source)
    py, top = sys.executable, str(args.top)
    outs = {m: workdir / f"out_{m}.npy" for m in ("cold", "warm", "api", "captum", "vjp")}
    warm_cache = workdir / "cache-warm"
    cold_caches = iter(range(1_000_000))

    def warm() -> dict[str, str]:
        return {"ONNXDECONV_CACHE_DIR": str(warm_cache)}

    def cold() -> dict[str, str]:
        folder = workdir / f"cache-cold-{next(cold_caches)}"
        shutil.rmtree(folder, ignore_errors=True)
        return {"ONNXDECONV_CACHE_DIR": str(folder)}

    def plain() -> dict[str, str]:
        return {}

    commands: dict[str, Method] = {}
    cli = None if args.no_cli else cli_path()
    if cli is not None:
        project = [str(cli), "project", str(model), str(inp), "--layer", LAYER_ALIAS, "--top", top]
        commands["onnxdeconv CLI, cold cache"] = ([*project, "-o", str(outs["cold"])], cold)
        commands["onnxdeconv CLI, warm cache"] = ([*project, "-o", str(outs["warm"])], warm)
    if not args.no_api:
        api = [py, str(workdir / "run_api.py"), str(model), str(inp), LAYER_ALIAS, top]
        commands["onnxdeconv API, warm cache"] = ([*api, str(outs["api"]), args.device], warm)
    torch_args = [str(BENCH_DIR), str(state), str(inp), LAYER_ALIAS, top]
    commands["captum"] = (
        [py, str(workdir / "run_captum.py"), *torch_args, str(outs["captum"]), str(args.threads)],
        plain,
    )
    if not args.no_vjp:
        commands["torch batched VJP"] = (
            [py, str(workdir / "run_vjp.py"), *torch_args, str(outs["vjp"]), str(args.threads)],
            plain,
        )
    commands["ORT forward"] = ([py, str(workdir / "run_ort.py"), str(model), str(inp)], plain)

    for cmd, env in commands.values() if args.warmup else ():
        timed(cmd, env())  # untimed: fills the page cache (and the warm graph cache)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    clean_runs: dict[str, list[bool]] = {name: [] for name in commands}
    reports: dict[str, list[dict[str, object]]] = {name: [] for name in commands}
    cores = os.cpu_count() or 1
    for r in range(args.repeats):
        for name, (cmd, env) in commands.items():
            attempts = []
            for attempt in range(args.retries + 1):
                busy = wait_for_idle(args.idle_wait) if args.idle_wait > 0 else 0.0
                wall, cpu, other, report = timed(cmd, env())
                clean = other <= max(0.5, 0.05 * wall * cores)
                attempts.append((other, wall, cpu, report, clean))
                print(
                    f"[{r + 1}/{args.repeats}] {name}: {wall:.2f} s wall, {cpu:.1f} s CPU "
                    f"(machine busy before: {busy:.0%}, other processes' CPU during the run: "
                    f"{other:.1f} s{'' if clean else ', contended'})",
                    file=sys.stderr,
                    flush=True,
                )
                if clean:
                    break
                if attempt < args.retries:
                    print("    contended: running it again", file=sys.stderr)
            # Keep the least disturbed attempt.
            other, wall, cpu, report, clean = min(attempts, key=lambda a: a[0])
            walls[name].append(wall)
            cpus[name].append(cpu)
            clean_runs[name].append(clean)
            reports[name].append(report)
    load_after = load_average()

    ref = np.load(outs["captum"])
    captum_report = reports["captum"][-1]
    errors: dict[str, str] = {"captum": "(reference)", "ORT forward": "n/a"}
    notes = []
    outputs = {
        "onnxdeconv CLI, cold cache": "cold",
        "onnxdeconv CLI, warm cache": "warm",
        "onnxdeconv API, warm cache": "api",
        "torch batched VJP": "vjp",
    }
    for name, key in outputs.items():
        if name in commands:
            errors[name] = f"{worst_error(np.load(outs[key]), ref):.1e}"
    if "onnxdeconv CLI, cold cache" in commands:
        cold_vs_warm = worst_error(np.load(outs["cold"]), np.load(outs["warm"]))
        notes.append(f"cold vs warm cache output: worst rel. difference {cold_vs_warm:.1e}")
    for name in ("onnxdeconv API, warm cache", "torch batched VJP"):
        report = reports.get(name, [{}])[-1]
        if report:
            same = report.get("channels") == captum_report.get("channels")
            same_pos = report.get("positions") == captum_report.get("positions")
            notes.append(
                f"{name}: same channels, in the same order, as captum: {same}; "
                f"same positions: {same_pos}"
            )
        if report.get("provider"):
            notes.append(f"onnxdeconv provider: {report.get('provider')}")

    peers = [p for p in ("captum", "torch batched VJP") if p in commands]
    medians = {name: statistics.median(values) for name, values in walls.items()}
    print(
        "\n| method | median wall s | min wall s | "
        + " | ".join(f"{peer} time / this" for peer in peers)
        + " | median CPU s | worst rel. error vs captum |"
    )
    print("|---|---:|---:|" + "---:|" * len(peers) + "---:|---:|")
    for name in commands:
        median, best = medians[name], min(walls[name])
        ratios = " | ".join(f"{medians[peer] / median:.2f}x" for peer in peers)
        cpu = statistics.median(cpus[name])
        print(f"| {name} | {median:.2f} | {best:.2f} | {ratios} | {cpu:.1f} | {errors[name]} |")
    contended = {n: sum(not c for c in v) for n, v in clean_runs.items() if not all(v)}
    if contended:
        which = ", ".join(f"{n}: {k} of {args.repeats}" for n, k in contended.items())
        print(f"\nWarning: other processes used the CPU during some timed runs ({which}).")
    print(f"\nLoad: before the runs '{load_before}'; after '{load_after}'.")
    print(
        "min-based ratio vs captum: "
        + ", ".join(
            f"{n} {min(walls['captum']) / min(walls[n]):.2f}x" for n in commands if n != "captum"
        )
    )

    print("\nIn-process stages (median s; 'load' = model load + session/graph preparation):\n")
    stages = ["import", "load", "forward", "project", "save"]
    print("| method | " + " | ".join(stages) + " | total excl. import |")
    print("|---|" + "---:|" * (len(stages) + 1))
    for name in commands:
        if not reports[name] or not reports[name][0]:
            continue
        cells = []
        for stage in stages:
            values = [rep["stages"][stage] for rep in reports[name] if stage in rep["stages"]]
            cells.append(f"{statistics.median(values):.2f}" if values else "")
        after_import = [
            sum(v for k, v in rep["stages"].items() if k != "import") for rep in reports[name]
        ]
        cells.append(f"{statistics.median(after_import):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")

    print(f"\nMachine: {cpu_info()}; {versions()}.")
    print(
        f"Model: ZFNet-sized, random weights, 224x224, layer {LAYER_ALIAS} (conv5 after ReLU, "
        f"256x13x13), --top {args.top}, input {args.image.name}; {args.repeats} runs each."
    )
    print(
        f"Threads: torch {captum_report.get('threads')} (captum, VJP), ONNX Runtime default "
        f"intra-op threads ({os.cpu_count()} cores)."
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
