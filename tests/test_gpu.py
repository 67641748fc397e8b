"""Every projection path on CUDA: no node falls back to the CPU, forward tensors stay on the GPU.

Run with ``pytest -m gpu`` on a machine where onnxruntime-gpu loads its CUDA provider (see
docs/performance.md, "GPU"). Elsewhere every test here skips, saying why. CUDA sessions are
created with ``session.disable_cpu_ep_fallback`` (``ONNXDECONV_STRICT_CUDA=1``): a node without
a CUDA kernel fails the session instead of running on the CPU.

Projections are compared with the CPU's relative to each row's peak. ONNX Runtime's CUDA
convolutions may use TF32 (10-bit mantissa products), hence a tolerance of 5e-3 and not 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import DIGIT_7, DIGITNET
from helpers import conv_relu_pool_model, run

from onnxdeconv.deconv.names import Rule
from onnxdeconv.graph.load import load_model
from onnxdeconv.prepared import prepare
from onnxdeconv.projector import ForwardPass, Projector
from onnxdeconv.runtime import CUDA, ForwardRunner, cuda_loads
from onnxdeconv.runtime.sessions import STRICT_CUDA_ENV

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not cuda_loads(),
        reason="the CUDA execution provider does not load here (no GPU, or onnxruntime without "
        "CUDA): these tests run where it does, with pytest -m gpu",
    ),
]

RULES: tuple[Rule, ...] = ("deconvnet", "guided", "gradient")
#: Worst difference to the CPU, relative to the row's peak (TF32 convolutions on CUDA).
TOLERANCE = 5e-3


@pytest.fixture(autouse=True)
def strict_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_CUDA_ENV, "1")


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    worst = 0.0
    for a, b in zip(ours, reference, strict=True):
        peak = max(float(np.abs(b).max()), 1e-30)
        worst = max(worst, float(np.abs(a - b).max()) / peak)
    return worst


def digits(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((count, 1, 28, 28), np.float32)


def assert_on_device(forward: ForwardPass, names: list[str]) -> None:
    """The switches and rectifier inputs the deconv graph reads stay in GPU memory."""
    assert sorted(forward.forward_values) == sorted(names)
    for name, value in forward.forward_values.items():
        assert isinstance(value, ort.OrtValue), name
        assert value.device_name().lower() == "cuda", (name, value.device_name())


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("layer", ["conv1", "maxpool1", "relu2", "maxpool2", "relu3", "logits"])
def test_projections_match_the_cpu(rule: Rule, layer: str) -> None:
    gpu = Projector(DIGITNET, layer=layer, rule=rule, device="cuda", use_cache=False)
    cpu = Projector(DIGITNET, layer=layer, rule=rule, device="cpu", use_cache=False)
    assert gpu.provider == CUDA
    x = digits()
    forward_gpu, forward_cpu = gpu.forward(x), cpu.forward(x)
    assert_on_device(forward_gpu, list(gpu.plan.forward_inputs))
    np.testing.assert_allclose(
        forward_gpu.activations, forward_cpu.activations, rtol=1e-2, atol=1e-3
    )
    # The picks come from the CPU's activations, so that both sides project the same units.
    for position in (None, "all"):
        picks = cpu.strongest(forward_cpu, top=4, position=position, image=2)
        ours = gpu.project(forward_gpu, picks)
        theirs = cpu.project(forward_cpu, picks)
        assert relative_error(ours, theirs) <= TOLERANCE, (layer, rule, position)
    signal = np.random.default_rng(1).normal(size=(3, *gpu.layer_shape)).astype(np.float32)
    ours = gpu.project_signal(forward_gpu, signal)
    assert relative_error(ours, cpu.project_signal(forward_cpu, signal)) <= TOLERANCE


def test_the_windowed_graph_runs_on_cuda() -> None:
    projector = Projector(DIGITNET, layer="relu2", device="cuda", use_cache=False)
    windowed = projector.windowed
    assert windowed is not None
    assert windowed[1].get_providers()[0] == CUDA
    assert projector.deconv_session.get_providers()[0] == CUDA


def test_a_cached_projector_runs_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXDECONV_CACHE_DIR", str(tmp_path / "cache"))
    built = Projector(DIGITNET, layer="conv2", device="cuda")
    cached = Projector(DIGITNET, layer="conv2", device="cuda")
    assert cached._entry is not None
    assert cached.provider == CUDA
    x = digits()
    forward = cached.forward(x)
    assert_on_device(forward, list(built.plan.forward_inputs))
    picks = cached.strongest(forward, top=8)
    expected = built.project(built.forward(x), picks)
    np.testing.assert_array_equal(cached.project(forward, picks), expected)


def test_a_max_pool_network_keeps_its_switches_on_the_gpu() -> None:
    model = conv_relu_pool_model(size=32)
    gpu = Projector(model, layer="pool", device="cuda")
    cpu = Projector(model, layer="pool", device="cpu")
    x = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    forward = gpu.forward(x)
    assert gpu.plan.switches
    assert_on_device(forward, list(gpu.plan.forward_inputs))
    forward_cpu = cpu.forward(x)
    picks = cpu.strongest(forward_cpu, top=4, image=1)
    assert relative_error(gpu.project(forward, picks), cpu.project(forward_cpu, picks)) <= TOLERANCE


def test_the_forward_runner_matches_the_cpu() -> None:
    prepared = prepare(load_model(DIGITNET))
    exposed = [prepared.resolve("relu2"), prepared.resolve("maxpool2")]
    gpu = ForwardRunner(prepared, expose=exposed, device="cuda")
    cpu = ForwardRunner(prepared, expose=exposed, device="cpu")
    assert gpu.provider == CUDA
    x = digits(5)
    ours, theirs = gpu.run(x, chunk=2), cpu.run(x)
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("layer", ["concat8", "maxpool3"])  # fire9 (dense), pool5 (windowed)
def test_squeezenet_on_cuda(squeezenet_path: Path, layer: str) -> None:
    prepared = prepare(load_model(squeezenet_path))
    gpu = Projector(prepared, layer=layer, device="cuda")
    cpu = Projector(prepared, layer=layer, device="cpu")
    x = (
        np.random.default_rng(3)
        .normal(size=(1, *gpu.input_shape))
        .astype(prepared.loaded.input_dtype)
    )
    forward, forward_cpu = gpu.forward(x), cpu.forward(x)
    assert_on_device(forward, list(gpu.plan.forward_inputs))
    picks = cpu.strongest(forward_cpu, top=4)
    # fp16 weights: the GPU's fp16 kernels round differently from the CPU's.
    assert relative_error(gpu.project(forward, picks), cpu.project(forward_cpu, picks)) <= 2e-2


def test_the_cli_projects_on_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.npy"
    code, _, err = run(
        ["project", DIGITNET, DIGIT_7, "--device", "cuda", "--top", "4", "-o", out], capsys
    )
    assert code == 0, err
    assert "running on CUDAExecutionProvider" in err
    assert np.load(out).shape == (4, 1, 28, 28)
