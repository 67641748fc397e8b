"""Benchmark: time and peak memory of ``layers``, ``project`` and ``check`` as a model grows.

Two families of models, built here:

* chains of Conv -> Relu blocks (a 3x3 MaxPool every third block) on a 4-channel 8x8 map, with
  ``--nodes`` nodes in all: the cost of the graph's structure;
* a Conv -> Relu -> Flatten -> MatMul -> Relu net on a 3x32x32 input whose MatMul weight holds
  ``--weights`` megabytes: the cost of the weights.

Each command runs as its own process (``python -m onnxdeconv ...``), and its wall time and peak
resident memory (``ru_maxrss`` from ``wait4``) are measured; the peer, in the same run, is a plain
ONNX Runtime forward pass in a fresh process (import, session creation on the file, one run).
``check`` runs with ``adjoint_layers`` set to ``--check-layers`` (0 tests every layer).

Usage:
    python benchmarks/scale.py [--nodes 300,1000,5000] [--weights 16,256] [--check-layers 16]
        [--commands layers,project,check]

The load of the machine (``uptime``) is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``command`` run as its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace").strip()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):  # check exits 1 when a check fails
        last = errors.splitlines()[-1] if errors else ""
        print(f"  ! {' '.join(command[2:5])} exited {process.returncode}: {last}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024


def uptime() -> str:
    with open("/proc/loadavg") as loadavg:
        return "load average " + ", ".join(loadavg.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="300,1000,5000", help="chain lengths, comma-separated")
    parser.add_argument("--weights", default="16,256", help="weight sizes in MB, comma-separated")
    parser.add_argument("--check-layers", type=int, default=16, help="adjoint_layers for check")
    parser.add_argument("--commands", default="layers,project,check")
    args = parser.parse_args()
    commands = args.commands.split(",")
    print(f"before: {uptime()}; python {sys.version.split()[0]}", flush=True)
    cli = [sys.executable, "-m", "onnxdeconv"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = root / "check.toml"
        config.write_text(f"[check]\nadjoint_layers = {args.check_layers}\n")
        models = [
            (f"chain {n}", root / f"chain{n}.onnx", chain_model(n), [1, 3, 8, 8])
            for n in map(int, args.nodes.split(","))
            if n
        ]
        models += [
            (
                f"weights {mb} MB",
                root / f"weights{mb}.onnx",
                weight_model(float(mb)),
                [1, 3, 32, 32],
            )
            for mb in args.weights.split(",")
            if mb
        ]
        for label, path, model, shape in models:
            onnx.save(model, str(path))
            size = path.stat().st_size / 2**20
            del model
            data = root / f"{path.stem}.npy"
            np.save(data, np.random.default_rng(1).random(shape, dtype=np.float32))
            peer = measure([sys.executable, "-c", PEER, str(path), str(data)])
            runs = {
                "layers": [*cli, "layers", str(path)],
                "project": [*cli, "project", str(path), str(data), "-o", str(root / "out.npy")],
                "check": [*cli, "check", str(path), "--config", str(config)],
            }
            for name in commands:
                wall, peak = measure(runs[name])
                rows.append((label, size, name, wall, peak, peer))
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
