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

Two more tables follow:

* ONNX Runtime's own profile of the plain forward, the instrumented forward and the dense
  deconv graph at K=1: kernel time per node (median over the runs), summed by what the nodes do
  (convolutions, max pooling, unpooling, the rest);
* per max pool on the path, on the pool's real input: the pool without ``Indices``, with
  ``Indices``, and the compare cascade of :func:`pool_model`, which gets the same switches
  from comparisons (checked equal).

Usage:
    python benchmarks/bench_deconv_graph.py [--repeats 15] [--k 1 8] [--threads 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
) -> tuple[list[str], list[str], list[str]]:
    """The rows of one model in the three tables: timings, ORT profile, switches."""
    from onnxdeconv import Projector
    from onnxdeconv.runtime import ForwardRunner, create_session

    # Both built here: from the graph cache, the previous graph would be the current one.
    projector = Projector(path, layer=layer, device="cpu", use_cache=False)
    with previous_graph():
        previous = Projector(path, layer=layer, device="cpu", use_cache=False)
    prepared = projector.prepared
    names = [projector.layer, *projector.plan.forward_inputs]
    # Every session with the same thread count: on a loaded machine one thread is steadier.
    for one in (projector, previous):
        one.__dict__["deconv_session"] = create_session(
            one.plan.model, "cpu", threads, weights=one.plan.weights
        )
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
    runners = {"plain forward": plain, "instrumented forward": projector.runner}
    profile = profile_rows(name, projector, runners, x, repeats)
    return rows, profile, switch_rows(name, projector, x, repeats)


#: ORT profile op types by what they do in these graphs.
FAMILIES = {
    "convolutions": ("Conv", "ConvTranspose", "FusedConv", "NchwcConv"),
    "max pooling (with switches)": ("MaxPool",),
    "unpooling": ("ScatterElements", "Mod", "ConstantOfShape"),
}


def profile_ms(model: object, feeds: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """ONNX Runtime's kernel time per op family (ms per run), from its own profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = tempfile.mkdtemp(prefix="onnxdeconv-profile-") + "/run"
    session = ort.InferenceSession(
        model.SerializeToString(),  # type: ignore[attr-defined]
        options,
        providers=["CPUExecutionProvider"],
    )
    for _ in range(repeats + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    # Each node runs once per run: its median over the runs (the first is a warm-up) is steady
    # where a mean would take in one disturbed run.
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        per_node.setdefault(event["name"], []).append(event["dur"] / 1e3)
        op_of[event["name"]] = event["args"]["op_name"]
    totals: dict[str, float] = {family: 0.0 for family in [*FAMILIES, "other", "all"]}
    for node, durations in per_node.items():
        family = next((f for f, ops in FAMILIES.items() if op_of[node] in ops), "other")
        time_ms = statistics.median(durations[1:] or durations)
        totals[family] += time_ms
        totals["all"] += time_ms
    return totals


def deconv_feeds(projector: Any, forward: Any, signal: Any) -> dict[str, np.ndarray]:
    """The feeds of one run of the dense deconv graph, as the Projector gives them."""
    captured: dict[str, np.ndarray] = {}
    run = projector._run

    def spy(session: Any, windowed: bool, feeds: dict[str, Any]) -> np.ndarray:
        for key, value in feeds.items():
            captured[key] = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        return run(session, windowed, feeds)  # type: ignore[no-any-return]

    projector._run = spy
    try:
        projector.project_signal(forward, signal, [0] * len(signal))
    finally:
        del projector._run
    return captured


def profile_rows(
    name: str, projector: Any, runners: dict[str, Any], x: np.ndarray, repeats: int
) -> list[str]:
    """Where the time of the forward graphs (``runners``) and the dense deconv graph goes."""
    from onnxdeconv.graph.passes import attach_weights

    forward = projector.forward(x)
    signal = projector.signal(forward, projector.strongest(forward, top=1))
    image = {projector.prepared.loaded.input_name: x}
    graphs = {
        label: (attach_weights(runner.model, runner.weights), image)
        for label, runner in runners.items()
    }
    plan = projector.plan
    graphs["dense deconv K=1"] = (
        attach_weights(plan.model, plan.weights),
        deconv_feeds(projector, forward, signal),
    )
    times = {label: profile_ms(model, inputs, repeats) for label, (model, inputs) in graphs.items()}
    convs = times["plain forward"]["convolutions"]
    rows = []
    for label, totals in times.items():
        rows.append(
            f"| {name} | {label} | {totals['all']:.1f} | {totals['convolutions']:.1f} | "
            f"{totals['convolutions'] / convs:.2f} | {totals['max pooling (with switches)']:.1f} | "
            f"{totals['unpooling']:.1f} | {totals['other']:.1f} |"
        )
    return rows


def pool_model(
    shape: tuple[int, ...], dtype: np.dtype, attributes: dict[str, Any], how: str
) -> Any:
    """One max pool of ``shape``: ``plain``, ``indices`` (ORT's kernel), or ``cascade``.

    ``cascade`` gets the same switches without the Indices output: it compares each of the
    window's k*k strided slices of the (-inf padded) input with the pooled output, and keeps the
    first equal offset in row-major order, as ONNX Runtime breaks ties, through a chain of Where.
    """
    from onnx import TensorProto, helper, numpy_helper

    _, channels, height, width = shape
    (kh, kw), (sh, sw) = attributes["kernel_shape"], attributes["strides"]
    top, left, bottom, right = attributes["pads"]
    out_h, out_w = (height + top + bottom - kh) // sh + 1, (width + left + right - kw) // sw + 1
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    pool = helper.make_node("MaxPool", ["x"], ["y"], **attributes)
    nodes, constants = [pool], []

    def const(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, name))
        return name

    outputs = [helper.make_tensor_value_info("y", elem, None)]
    if how == "indices":
        pool.output.append("switches")
    elif how == "cascade":
        pads = const("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        fill = const("fill", np.array(-np.inf, dtype))
        nodes.append(helper.make_node("Pad", ["x", pads, fill], ["padded"]))
        axes, steps = const("axes", np.array([2, 3], np.int64)), const("steps", np.array([sh, sw]))
        offsets = [(i, j) for i in range(kh) for j in range(kw)]
        chosen = ""
        for i, j in reversed(offsets):
            starts = const(f"starts_{i}_{j}", np.array([i, j], np.int64))
            ends = const(
                f"ends_{i}_{j}", np.array([i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1])
            )
            offset = const(f"offset_{i}_{j}", np.array(i * width + j, np.int32))
            nodes.append(
                helper.make_node("Slice", ["padded", starts, ends, axes, steps], [f"s{i}_{j}"])
            )
            nodes.append(helper.make_node("Equal", [f"s{i}_{j}", "y"], [f"e{i}_{j}"]))
            if chosen:
                nodes.append(
                    helper.make_node("Where", [f"e{i}_{j}", offset, chosen], [f"w{i}_{j}"])
                )
                chosen = f"w{i}_{j}"
            else:
                chosen = offset
        rows = np.arange(out_h) * sh - top
        cols = np.arange(out_w) * sw - left
        first = (
            np.arange(channels)[:, None, None] * height * width
            + rows[None, :, None] * width
            + cols[None, None, :]
        )
        nodes.append(
            helper.make_node("Add", [chosen, const("first", first.astype(np.int32))], ["local"])
        )
        nodes.append(helper.make_node("Cast", ["local"], ["switches"], to=TensorProto.INT64))
    if how != "plain":
        outputs.append(helper.make_tensor_value_info("switches", TensorProto.INT64, None))
    graph = helper.make_graph(
        nodes, how, [helper.make_tensor_value_info("x", elem, list(shape))], outputs, constants
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def switch_rows(name: str, projector: Any, x: np.ndarray, repeats: int) -> list[str]:
    """Per max pool on the path: ORT's MaxPool with Indices against the compare cascade."""
    import onnxruntime as ort
    from onnx import helper

    from onnxdeconv.runtime import ForwardRunner

    graph = projector.prepared.loaded.model.graph
    pools = [
        n for n in graph.node if n.op_type == "MaxPool" and n.output[0] in projector.plan.switches
    ]
    inputs = [n.input[0] for n in pools]
    runner = ForwardRunner(
        projector.prepared, expose=inputs, keep_outputs=False, device="cpu", threads=1
    )
    values = {k: v.numpy() for k, v in runner.run_bound(x, inputs, tuple(inputs)).items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    rows = []
    for node in pools:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        value = values[node.input[0]]
        kernel = list(attributes["kernel_shape"])
        usable = (
            value.ndim == 4
            and not attributes.get("ceil_mode")
            and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and all(d == 1 for d in attributes.get("dilations", [1, 1]))
        )
        if not usable:
            rows.append(f"| {name} | {node.output[0]} | {list(value.shape)} | n/a | | | | |")
            continue
        attributes = {
            "kernel_shape": kernel,
            "strides": list(attributes.get("strides", [1, 1])),
            "pads": list(attributes.get("pads", [0, 0, 0, 0])),
        }
        sessions = {
            how: ort.InferenceSession(
                pool_model(value.shape, value.dtype, attributes, how).SerializeToString(),
                options,
                providers=["CPUExecutionProvider"],
            )
            for how in ("plain", "indices", "cascade")
        }
        theirs = sessions["indices"].run(["switches"], {"x": value})[0]
        ours = sessions["cascade"].run(["switches"], {"x": value})[0]
        feeds = {"x": value}
        runs = {how: lambda s=s, f=feeds: s.run(None, f) for how, s in sessions.items()}
        wall, _ = median_ms(runs, repeats)
        rows.append(
            f"| {name} | {node.output[0]} | {list(value.shape)} | {wall['plain']:.2f} | "
            f"{wall['indices']:.2f} | {wall['cascade']:.2f} | "
            f"{wall['indices'] / wall['cascade']:.2f} | {np.array_equal(ours, theirs)} |"
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
    models = [("ZFNet", zfnet_model(workdir), "relu5")]
    if SQUEEZENET.exists():
        models.append(("SqueezeNet 1.1", SQUEEZENET, "fire9/concat_1"))
    rows, profile, switches = [], [], []
    for name, path, layer in models:
        tables = bench_model(name, path, layer, args.k, args.repeats, args.threads)
        rows += tables[0]
        profile += tables[1]
        switches += tables[2]
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
    print(
        "\nONNX Runtime's profile (kernel time, ms per run, 1 thread): convolutions include "
        "the deconv graph's transposed ones; 'x forward' is that time over the plain "
        "forward's convolutions"
    )
    print(
        "| model | graph | all kernels | convolutions | x forward | max pooling "
        "| unpooling | other |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(profile))
    print(
        "\nSwitches per max pool, on the pool's real input (ms, median): MaxPool without "
        "Indices, ORT's MaxPool with Indices, and the compare cascade (pool_model)"
    )
    print("| model | pool | input | plain | with Indices | cascade | speed-up | same switches |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    print("\n".join(switches))


if __name__ == "__main__":
    main()
