"""Activation functions, composite activations and gates on exported PyTorch nets.

Three small convnets cover every activation PyTorch exports (and squeeze-excitation gates made by
``nn.Sigmoid`` and ``nn.Hardsigmoid``). Each is exported with the legacy exporter (opset 17, and
opset 13 where HardSwish becomes ``x * HardSigmoid(x)``) and the dynamo exporter (opset 18). The
projections of the strongest activations of the last layer must equal a PyTorch oracle to 1e-3:

* ``gradient``: torch autograd of the activation times the signal;
* ``deconvnet`` and ``guided``: the same net with every activation replaced by a custom autograd
  function whose backward is ``relu(grad)`` (deconvnet) or ``relu(grad) * (f'(x) > 0)`` (guided,
  with ``f'`` from torch autograd), and every gate's backward to the gate branch zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import rule_cases as rc
import torch
from oracle_nets import relative_error
from torch import nn

from onnxdeconv import Projector, UnsupportedOpError, load_model, prepare
from onnxdeconv.check import CheckConfig, run_checks

RULES = ("deconvnet", "guided", "gradient")
TOLERANCE = 1e-3


# --- oracle modules ------------------------------------------------------------------------------


class _Override(torch.autograd.Function):
    """``y = f(x)`` whose backward is the deconvnet or guided override."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inner: nn.Module, mode: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.inner, ctx.mode = inner, mode
        with torch.no_grad():
            return inner(x)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        rectified = grad.clamp(min=0)
        if ctx.mode == "deconvnet":
            return rectified, None, None
        with torch.enable_grad():
            probe = x.detach().requires_grad_()
            (slope,) = torch.autograd.grad(ctx.inner(probe).sum(), probe)
        return rectified * (slope > 0), None, None


class _BlockGate(torch.autograd.Function):
    """The identity, with no gradient back to the gate branch."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


class Act(nn.Module):
    """An activation that the oracle can override (``mode``); plain when exported."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.mode: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode in (None, "gradient"):
            return self.inner(x)  # type: ignore[no-any-return]
        return _Override.apply(x, self.inner, self.mode)  # type: ignore[no-any-return]


class SqueezeExcite(nn.Module):
    """``x * gate(conv(relu(conv(mean(x)))))``: the gate is ``[C, 1, 1]``."""

    def __init__(self, channels: int, gate: nn.Module) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, 2, 1)
        self.relu = Act(nn.ReLU())
        self.expand = nn.Conv2d(2, channels, 1)
        self.gate = gate
        self.mode: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate(self.expand(self.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))))
        if self.mode in ("deconvnet", "guided"):
            g = _BlockGate.apply(g)
        return x * g


def _stack(channels: int, parts: list[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1)]
    for part in parts:
        layers.append(Act(part) if not isinstance(part, (SqueezeExcite, nn.MaxPool2d)) else part)
        if not isinstance(part, SqueezeExcite | nn.MaxPool2d):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
    return nn.Sequential(*layers)


def net_smooth() -> nn.Module:
    """GELU (both forms), SiLU, Mish and a Sigmoid-gated squeeze-excitation."""
    c = 6
    return _stack(
        c,
        [
            nn.GELU(),
            nn.SiLU(),
            SqueezeExcite(c, nn.Sigmoid()),
            nn.Mish(),
            nn.MaxPool2d(2),
            nn.GELU(approximate="tanh"),
        ],
    )


def net_piecewise() -> nn.Module:
    """ReLU6, Hardswish, a Hardsigmoid-gated squeeze-excitation, LeakyReLU, PReLU, Hardsigmoid."""
    c = 6
    return _stack(
        c,
        [
            nn.ReLU6(),
            nn.Hardswish(),
            SqueezeExcite(c, nn.Hardsigmoid()),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(2),
            nn.PReLU(c, init=0.2),
            nn.Hardsigmoid(),
        ],
    )


def net_saturating() -> nn.Module:
    """ELU, SELU, CELU, Softplus with beta, Softsign, Tanh, Sigmoid."""
    c = 5
    return _stack(
        c,
        [
            nn.ELU(0.7),
            nn.SELU(),
            nn.CELU(0.5),
            nn.Softplus(beta=2.0),  # the legacy exporter drops the threshold
            nn.Softsign(),
            nn.Tanh(),
            nn.Sigmoid(),
        ],
    )


NETS: dict[str, Callable[[], nn.Module]] = {
    "smooth": net_smooth,
    "piecewise": net_piecewise,
    "saturating": net_saturating,
}
EXPORTS = [(net, "legacy17") for net in NETS] + [("piecewise", "legacy13")]
EXPORTS += [(net, "dynamo") for net in NETS]
INPUT_SHAPE = (3, 10, 10)


def build(name: str) -> nn.Module:
    torch.manual_seed(3)
    net = NETS[name]()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(1.5)
    return net.eval()


def set_mode(net: nn.Module, mode: str | None) -> None:
    for module in net.modules():
        if isinstance(module, Act | SqueezeExcite):
            module.mode = mode


def export(net: nn.Module, exporter: str, path: Path) -> onnx.ModelProto:
    example = torch.zeros(1, *INPUT_SHAPE)
    set_mode(net, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter.startswith("legacy"):
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,
                opset_version=int(exporter.removeprefix("legacy")),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            )
        else:
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=18, output_names=["logits"]
            )
            program.save(str(path))
    return onnx.load(str(path))


def oracle(net: nn.Module, mode: str, x: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """The backward pass of ``signal`` at the output through the (overridden) net."""
    set_mode(net, mode)
    try:
        inputs = torch.from_numpy(x.copy()).requires_grad_()
        out = net(inputs)
        (grad,) = torch.autograd.grad(out, inputs, grad_outputs=torch.from_numpy(signal))
    finally:
        set_mode(net, None)
    return grad.numpy()


@dataclass
class Exported:
    net: nn.Module
    model: onnx.ModelProto
    path: Path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Exported]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("activation_exports")
    cache: dict[tuple[str, str], Exported] = {}

    class Lazy(dict[tuple[str, str], Exported]):
        def __missing__(self, key: tuple[str, str]) -> Exported:
            if key not in cache:
                net = build(key[0])
                path = folder / f"{key[0]}-{key[1]}.onnx"
                cache[key] = Exported(net, export(net, key[1], path), path)
            return cache[key]

    try:
        yield Lazy()
    finally:
        torch.set_num_threads(threads)


def _inputs() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((2, *INPUT_SHAPE)).astype(np.float32)


@pytest.mark.parametrize(("name", "exporter"), EXPORTS, ids=lambda v: v)
def test_projection_matches_torch_oracle(
    exports: dict[tuple[str, str], Exported], name: str, exporter: str
) -> None:
    ex = exports[(name, exporter)]
    x = _inputs()
    prepared = prepare(load_model(ex.path), INPUT_SHAPE)
    for rule in RULES:
        projector = Projector(prepared, layer="logits", rule=rule, device="cpu")  # type: ignore[arg-type]
        forward = projector.forward(x)
        picks = [p for image in (0, 1) for p in projector.strongest(forward, 3, image=image)]
        signal = projector.signal(forward, picks)
        projections = projector.project(forward, picks)
        images = [p.image for p in picks]
        signs = projector.signs(forward, picks).reshape(-1, 1, 1, 1)
        reference = signs * oracle(ex.net, rule, x[images], signal)
        errors = [relative_error(p, r) for p, r in zip(projections, reference, strict=True)]
        assert max(float(np.abs(r).max()) for r in reference) > 0, rule
        assert max(errors) <= TOLERANCE, (rule, [f"{e:.1e}" for e in errors])


#: Ops the exports must put on the path (so a changed exporter cannot silently skip a rule).
PATH_OPS = {
    ("smooth", "legacy17"): {"Erf", "Sigmoid", "Softplus", "Tanh", "Mul", "Div"},
    ("smooth", "dynamo"): {"Erf", "Sigmoid", "Mish", "Tanh", "Mul", "Div", "Pow"},
    ("piecewise", "legacy17"): {"Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu"},
    ("piecewise", "legacy13"): {"Clip", "HardSigmoid", "LeakyRelu", "PRelu", "Mul"},
    ("piecewise", "dynamo"): {"Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu"},
    ("saturating", "legacy17"): {"Elu", "Selu", "Celu", "Softplus", "Abs", "Tanh", "Sigmoid"},
    ("saturating", "dynamo"): {"Elu", "Selu", "Celu", "Softplus", "Where", "Tanh", "Sigmoid"},
}


@pytest.mark.parametrize(("name", "exporter"), list(PATH_OPS), ids=lambda v: v)
def test_exports_cover_the_activations(
    exports: dict[tuple[str, str], Exported], name: str, exporter: str
) -> None:
    ops = {node.op_type for node in exports[(name, exporter)].model.graph.node}
    assert PATH_OPS[(name, exporter)] <= ops, sorted(ops)


@pytest.mark.parametrize(("name", "exporter"), EXPORTS, ids=lambda v: v)
def test_composites_are_fused(
    exports: dict[tuple[str, str], Exported], name: str, exporter: str
) -> None:
    """The deconvnet graph rectifies once per activation: one Relu per activation unit."""
    prepared = prepare(load_model(exports[(name, exporter)].path), INPUT_SHAPE)
    plan = prepared.plan("logits", "deconvnet")
    relus = sum(node.op_type == "Relu" for node in plan.model.graph.node)
    # One per activation; the squeeze-excitation's inner ReLU is on the gate branch, never reached.
    activations = {"smooth": 4, "piecewise": 5, "saturating": 7}[name]
    assert relus == activations


#: Ops whose outputs exist only inside a composite activation, where they may be unprojectable.
COMPOSITE_INNER_OPS = ("Mul", "Abs", "Pow")


@pytest.mark.parametrize(
    ("name", "exporter"), [("smooth", "dynamo"), ("saturating", "legacy17")], ids=lambda v: v
)
def test_every_layer_is_listed_and_projects(
    exports: dict[tuple[str, str], Exported], name: str, exporter: str
) -> None:
    prepared = prepare(load_model(exports[(name, exporter)].path), INPUT_SHAPE)
    layers = prepared.layers()
    x = _inputs()[:1]
    for layer in layers:
        if not layer.projectable:
            # Tensors inside a composite (GELU's x * (1 + erf), Softsign's |x|): the reason
            # names the node and its op.
            assert layer.reason.startswith("cannot project through node '"), layer
            assert any(f"({op})" in layer.reason for op in COMPOSITE_INNER_OPS), layer
            continue
        projector = Projector(prepared, layer=layer.name, device="cpu")
        forward = projector.forward(x)
        assert np.all(np.isfinite(projector.project(forward, projector.strongest(forward, 1))))
    assert layers[-1].projectable and sum(layer.projectable for layer in layers) > len(layers) // 2


@pytest.mark.parametrize(
    ("name", "exporter"),
    [("smooth", "dynamo"), ("piecewise", "legacy17"), ("saturating", "dynamo")],
    ids=lambda v: v,
)
def test_check_adjoint_passes(
    exports: dict[tuple[str, str], Exported], name: str, exporter: str
) -> None:
    """`onnxdeconv check` linearises every activation, product, quotient, Pow and Where exactly."""
    ex = exports[(name, exporter)]
    images = _inputs()
    report = run_checks(
        load_model(ex.path), images, ["a", "b"], config=CheckConfig(adjoint_layers=6)
    )
    adjoint = [f for f in report.findings if f.check == "faithful.adjoint"]
    # A layer that does not respond to the input at this point (the squeeze-excitation's inner
    # ReLU, closed everywhere) is skipped; every other one must pass.
    assert sum(f.status == "pass" for f in adjoint) >= 4, adjoint
    assert all(f.status in ("pass", "skip") for f in adjoint), [
        (f.subject, f.message) for f in adjoint if f.status not in ("pass", "skip")
    ]


# --- gates and products in small graphs -----------------------------------------------------------


def test_product_without_gate_is_refused_under_deconvnet() -> None:
    model = rc.make_model(
        [rc.node("Conv", ["x", "w"], ["a"]), rc.node("Mul", ["a", "x"], ["y"], name="prod")],
        (1, 3, 3),
        {"w": rc.rand(0, 1, 1, 1, 1)},
    )
    for mode in ("deconvnet", "guided"):
        with pytest.raises(UnsupportedOpError, match="gate") as info:
            Projector(model, layer="y", rule=mode, device="cpu")  # type: ignore[arg-type]
        assert info.value.node_name == "prod" and info.value.op_type == "Mul"
    # The gradient rule uses the product rule: y = (w x) x, dy/dx = 2 w x.
    p = Projector(model, layer="y", rule="gradient", device="cpu")
    x = rc.arr([[[[1, -2, 3], [0.5, 1, 2], [-1, 0, 4]]]])
    back = p.project_signal(p.forward(x), np.ones((1, 1, 3, 3), np.float32))
    w = float(rc.rand(0, 1, 1, 1, 1).ravel()[0])
    np.testing.assert_allclose(back, 2 * w * x, rtol=1e-5)


def test_square_uses_the_product_rule() -> None:
    model = rc.make_model([rc.node("Mul", ["x", "x"], ["y"])], (1, 3))
    p = Projector(model, layer="y", rule="gradient", device="cpu")
    back = p.project_signal(p.forward(rc.arr([[[1, -2, 3]]])), rc.arr([[[1, 1, -1]]]))
    np.testing.assert_allclose(back, rc.arr([[[2, -4, -6]]]))


def test_division_by_a_full_size_path_tensor_is_refused_under_deconvnet() -> None:
    model = rc.make_model(
        [rc.node("Abs", ["x"], ["a"]), rc.node("Div", ["x", "a"], ["y"], name="ratio")], (1, 3)
    )
    with pytest.raises(UnsupportedOpError, match="divisor") as info:
        Projector(model, layer="y", rule="deconvnet", device="cpu")
    assert info.value.node_name == "ratio" and info.value.op_type == "Div"
    constant_over_x = rc.make_model(
        [rc.node("Div", ["c", "x"], ["y"], name="inverse")], (1, 3), {"c": rc.arr(1.0)}
    )
    for mode in RULES:
        with pytest.raises(UnsupportedOpError, match="dividend") as info:
            Projector(constant_over_x, layer="y", rule=mode, device="cpu")  # type: ignore[arg-type]
        assert info.value.node_name == "inverse"


def test_intermediate_read_twice_is_not_fused() -> None:
    """A SiLU whose sigmoid is also read elsewhere goes op by op: Sigmoid rule plus a gate."""
    model = rc.make_model(
        [
            rc.node("Sigmoid", ["x"], ["s"]),
            rc.node("Mul", ["x", "s"], ["silu"]),
            rc.node("Add", ["silu", "s"], ["y"]),
        ],
        (1, 4),
    )
    x = rc.arr([[[-2, -0.5, 0.5, 2]]])
    signal = rc.arr([[[1, -1, 2, -2]]])
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    p = Projector(model, layer="y", rule="deconvnet", device="cpu")
    back = p.project_signal(p.forward(x), signal)
    # signal * s to x through the gate; relu(signal) to x through the Sigmoid of the Add branch.
    np.testing.assert_allclose(back, signal * s + np.maximum(signal, 0), rtol=1e-5)
    gradient = Projector(model, layer="y", rule="gradient", device="cpu")
    back = gradient.project_signal(gradient.forward(x), signal)
    # d/dx (x s + s) = s + x s (1 - s) + s (1 - s)
    want = signal * (s + x * s * (1 - s) + s * (1 - s))
    np.testing.assert_allclose(back, want, rtol=1e-5)
