"""GPU benchmark: projections per second of onnxdeconv on CUDA against captum on the same GPU.

The model is the ZFNet-sized net of ``zfnet.py`` (random weights) at 224x224, layer relu5, on one
random input. For each K (projections per call), onnxdeconv runs one forward pass and one batched
deconv of the K strongest channels; captum runs ``NeuronDeconvolution`` once per projection
(each a forward and a backward pass), on the same channels and positions. Both are timed after a
warm-up, with the GPU synchronised (onnxdeconv returns host arrays; captum's results are moved to
the host), and the worst relative difference between the two is printed.

Every ONNX Runtime session refuses CPU fallback (``session.disable_cpu_ep_fallback``), so a node
without a CUDA kernel fails the run instead of quietly running on the CPU.

Without a working CUDA provider for ONNX Runtime the script says so and exits 0 (nothing to
measure); without CUDA in torch the captum rows are left out, with a note.

Usage:
    python benchmarks/bench_gpu.py [--ks 1,16,64,256] [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))


def cuda_or_exit() -> None:
    """Exit with a clear message (status 0) unless ONNX Runtime's CUDA provider loads."""
    from onnxdeconv.runtime import cuda_loads

    if not cuda_loads():
        import onnxruntime as ort

        print(
            "bench_gpu: the CUDA execution provider does not load here (providers available: "
            f"{', '.join(ort.get_available_providers())}); nothing to measure. Run it on a "
            "machine with an NVIDIA GPU and onnxruntime-gpu (see docs/performance.md, 'GPU')."
        )
        raise SystemExit(0)


def timed(function, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall times of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def worst_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst over rows of ``max|a-b| / max|b|``."""
    return max(
        float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
        for a, b in zip(ours, ref, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,16,64,256", help="projections per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    parser.add_argument("--captum-max", type=int, default=64, help="largest K captum runs")
    parser.add_argument("--workdir", type=Path, help="where the model is exported")
    args = parser.parse_args()
    os.environ["ONNXDECONV_STRICT_CUDA"] = "1"
    cuda_or_exit()

    import onnxruntime as ort
    import torch
    import zfnet

    from onnxdeconv import Projector

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnxdeconv-gpu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path, state_path = zfnet.export(workdir)
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    projector = Projector(onnx_path, layer=zfnet.LAYER_TENSOR, device="cuda", use_cache=False)
    print(f"onnxdeconv runs on {projector.provider}")

    torch_cuda = torch.cuda.is_available()
    if torch_cuda:
        from captum.attr import NeuronDeconvolution

        model = zfnet.load(state_path).cuda().eval()
        module = getattr(model, zfnet.LAYER_MODULE)
        deconv = NeuronDeconvolution(model, module)
        x_gpu = torch.from_numpy(x).cuda()
    else:
        print("torch has no CUDA here: the captum rows are left out")

    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        forward = projector.forward(x)
        picks = projector.strongest(forward, top=k)
        k = len(picks)

        def ours(picks=picks):  # type: ignore[no-untyped-def]
            forward = projector.forward(x)
            return projector.project(forward, picks)

        our_times = timed(ours, args.repeats)
        row = {"K": k, "onnxdeconv s": statistics.median(our_times)}
        if torch_cuda and k <= args.captum_max:
            act = forward.activations[0]

            def theirs(picks=picks, act=act):  # type: ignore[no-untyped-def]
                out = []
                for pick in picks:
                    selector = (pick.channel, *pick.position)
                    attr = deconv.attribute(x_gpu, neuron_selector=selector)
                    out.append(attr[0] * float(act[selector]))
                result = torch.stack(out).cpu().numpy()
                torch.cuda.synchronize()
                return result

            their_times = timed(theirs, args.repeats)
            row["captum s"] = statistics.median(their_times)
            row["error"] = worst_error(ours(), theirs())
        rows.append(row)

    print("\n| K | onnxdeconv proj/s | captum proj/s | speed-up | worst rel. diff |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        k, mine = row["K"], row["onnxdeconv s"]
        if "captum s" in row:
            theirs_s = row["captum s"]
            print(
                f"| {k} | {k / mine:.0f} | {k / theirs_s:.0f} | {theirs_s / mine:.1f}x "
                f"| {row['error']:.1e} |"
            )
        else:
            print(f"| {k} | {k / mine:.0f} | - | - | - |")
    device = torch.cuda.get_device_name() if torch_cuda else "(torch sees no GPU)"
    print(
        f"\nGPU: {device}; Python {platform.python_version()}, onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}; median of {args.repeats} timed calls after one warm-up; "
        "onnxdeconv times include its forward pass, captum's include its own."
    )


if __name__ == "__main__":
    main()
