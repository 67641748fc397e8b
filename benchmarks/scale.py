"""Benchmark: time and peak memory of ``layers``, ``project`` and ``check`` as a model grows.

Two families of models, built here:

* chains of Conv -> Relu blocks (a 3x3 MaxPool every third block) on a 4-channel 8x8 map, with
  ``--nodes`` nodes in all: the cost of the graph's structure;
* a Conv -> Relu -> Flatten -> MatMul -> Relu net on a 3x32x32 input whose MatMul weight holds
  ``--weights`` megabytes: the cost of the weights.

Each command runs as its own process (``python -m onnxdeconv ...``), and its wall time and peak
resident memory (``VmHWM`` at exit) are measured; the peer, in the same run, is a plain ONNX
Runtime forward pass in a fresh process (import, session creation on the file, one run).
``check`` runs with ``adjoint_layers`` set to ``--check-layers`` (0 tests every layer), on chains
of at most ``--check-nodes`` nodes (its adjoint test costs a deconv graph per tested layer).

Usage:
    python benchmarks/scale.py [--nodes 300,1000,5000] [--weights 16,256] [--check-layers 16]
        [--check-nodes 1000] [--commands layers,project,check]

The load of the machine (``uptime``) is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Runs a module (``-m name``) or a script with its arguments, then writes its peak resident
#: memory (VmHWM, which a new program starts afresh, unlike ``ru_maxrss``, which keeps what
#: the forked parent held) in kB to the file named first.
LAUNCHER = """
import atexit, runpy, sys
report, kind, target, *rest = sys.argv[1:]
def peak():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    with open(report, "w") as out:
        out.write(str(kb))
atexit.register(peak)
sys.argv = [target, *rest]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""

PEER = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
session.run(None, {session.get_inputs()[0].name: np.load(sys.argv[2])})
"""


def chain_model(nodes: int) -> onnx.ModelProto:
    """Conv -> Relu blocks (He-scaled weights, so values stay finite) with a MaxPool every third."""
    rng = np.random.default_rng(0)
    layers, weights, x, index = [], [], "input", 0
    while len(layers) < nodes:
        channels = 3 if index == 0 else 4
        scale = np.sqrt(2.0 / (9 * channels))
        weight = (rng.standard_normal((4, channels, 3, 3)) * scale).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{index}"))
        layers.append(helper.make_node("Conv", [x, f"w{index}"], [f"c{index}"], pads=[1] * 4))
        layers.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        x = f"r{index}"
        if index % 3 == 2:
            layers.append(
                helper.make_node("MaxPool", [x], [f"p{index}"], kernel_shape=[3, 3], pads=[1] * 4)
            )
            x = f"p{index}"
        index += 1
    return _model(layers, weights, [1, 3, 8, 8], x, [1, 4, 8, 8])


def weight_model(megabytes: float) -> onnx.ModelProto:
    """A small conv, then a MatMul whose weight holds about ``megabytes`` MB of float32."""
    rng = np.random.default_rng(0)
    features = 16 * 32 * 32
    outputs = max(1, int(megabytes * 2**20 / 4 / features))
    conv = (rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32)
    dense = rng.standard_normal((features, outputs), dtype=np.float32) * 0.01
    layers = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["fc"]),
        helper.make_node("Relu", ["fc"], ["r2"]),
    ]
    weights = [numpy_helper.from_array(conv, "w1"), numpy_helper.from_array(dense, "w2")]
    return _model(layers, weights, [1, 3, 32, 32], "r2", [1, outputs])


def _model(
    nodes: list[onnx.NodeProto],
    weights: list[onnx.TensorProto],
    input_shape: list[int],
    output: str,
    output_shape: list[int],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "scale",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def measure(command: list[str], report: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``-m module ...`` or ``script path ...``."""
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(report), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - start
    if process.returncode not in (0, 1) or not report.exists():  # check exits 1 on a finding
        lines = process.stderr.decode(errors="replace").strip().splitlines()
        print(
            f"  ! {' '.join(command[:3])} exited {process.returncode}: {lines[-1:]}",
            file=sys.stderr,
        )
    peak = int(report.read_text()) / 1024 if report.exists() else float("nan")
    report.unlink(missing_ok=True)
    return wall, peak


def make(kind: str, size: str, path: str) -> None:
    """Write one model (run in a process of its own, so that this one stays small)."""
    model = chain_model(int(size)) if kind == "chain" else weight_model(float(size))
    onnx.save(model, path)


def uptime() -> str:
    with open("/proc/loadavg") as loadavg:
        return "load average " + ", ".join(loadavg.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="300,1000,5000", help="chain lengths, comma-separated")
    parser.add_argument("--weights", default="16,256", help="weight sizes in MB, comma-separated")
    parser.add_argument("--check-layers", type=int, default=16, help="adjoint_layers for check")
    parser.add_argument(
        "--check-nodes", type=int, default=1000, help="run check on chains of at most this length"
    )
    parser.add_argument("--commands", default="layers,project,check")
    parser.add_argument("--make", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make(*args.make)
        return
    commands = args.commands.split(",")
    print(f"before: {uptime()}; python {sys.version.split()[0]}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = root / "check.toml"
        config.write_text(f"[check]\nadjoint_layers = {args.check_layers}\n")
        peer = root / "peer.py"
        peer.write_text(PEER)
        report = root / "peak.txt"
        models = [("chain", n, f"chain {n}", [1, 3, 8, 8]) for n in args.nodes.split(",") if n]
        models += [
            ("weights", w, f"weights {w} MB", [1, 3, 32, 32]) for w in args.weights.split(",") if w
        ]
        for kind, size, label, shape in models:
            path = root / f"{kind}{size}.onnx"
            subprocess.run([sys.executable, __file__, "--make", kind, size, str(path)], check=True)
            megabytes = path.stat().st_size / 2**20
            data = root / f"{kind}{size}.npy"
            np.save(data, np.random.default_rng(1).random(shape, dtype=np.float32))
            forward = measure(["script", str(peer), str(path), str(data)], report)
            runs = {
                "layers": ["layers", str(path)],
                "project": ["project", str(path), str(data), "-o", str(root / "out.npy")],
                "check": ["check", str(path), "--config", str(config)],
            }
            for name in commands:
                if name == "check" and kind == "chain" and int(size) > args.check_nodes:
                    continue
                wall, peak = measure(["-m", "onnxdeconv", *runs[name]], report)
                rows.append((label, megabytes, name, wall, peak, forward))
                print(f"  {label}: {name} {wall:.2f} s {peak:.0f} MB", file=sys.stderr, flush=True)
            path.unlink()
    print(f"after: {uptime()}")
    print()
    print(
        "| model | file MB | command | wall s | peak MB | ORT forward s | peak MB | time x "
        "| memory x |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for label, size, name, wall, peak, (peer_wall, peer_peak) in rows:
        print(
            f"| {label} | {size:.0f} | {name} | {wall:.2f} | {peak:.0f} | {peer_wall:.2f} | "
            f"{peer_peak:.0f} | {wall / peer_wall:.1f} | {peak / peer_peak:.1f} |"
        )


if __name__ == "__main__":
    main()
