"""Linear and structural ops of real exports against PyTorch autograd, plus LRN/InstanceNorm checks.

One network holds every op of this family the way PyTorch writes it: LocalResponseNorm (which
both exporters decompose into ``Mul, Reshape, Pad, AveragePool, ..., Pow, Div``, fused back into
``LRN``), InstanceNorm2d(affine), ReLU, reflect and constant ``F.pad``, nearest and bilinear
``F.interpolate`` (``align_corners`` both ways, up and down), and a grouped, dilated, strided
ConvTranspose2d with output padding. It is exported with the TorchScript exporter (dynamic batch
and spatial axes) and with the dynamo exporter (static).

The oracle is ``torch.autograd.grad`` of ``<signal, net(x)>`` on the same module, where
InstanceNorm holds its statistics at their forward values (``.detach()``: the rule's documented
linearisation) and, for ``deconvnet``, ReLU's backward passes ``relu(grad)``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import rule_cases as rc

from onnxdeconv import Projector, UnsupportedOpError, load_model
from onnxdeconv.check import CheckConfig, run_checks
from onnxdeconv.check.linearise import linearise
from onnxdeconv.deconv import rules
from onnxdeconv.graph.fold import fold_constants
from onnxdeconv.graph.fuse_lrn import fuse_local_response_norm

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

SHAPE = (1, 3, 10, 10)


class _DeconvRelu(torch.autograd.Function):
    """ReLU whose backward rectifies the incoming gradient (the deconvnet rule)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.clamp(min=0)


class Net(nn.Module):
    """Conv -> LRN -> InstanceNorm -> ReLU -> pads, resizes, ConvTranspose -> Conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(5, alpha=1.0, beta=0.75, k=2.0)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.convt = nn.ConvTranspose2d(
            8, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2
        )
        self.head = nn.Conv2d(6, 4, 1)
        with torch.no_grad():
            self.inorm.weight.copy_(torch.linspace(0.5, 2.0, 8))
            self.inorm.bias.copy_(torch.linspace(-0.3, 0.3, 8))
        self.oracle: str | None = None  # None: the plain forward; else the rule to mimic

    def _relu(self, x: torch.Tensor) -> torch.Tensor:
        return _DeconvRelu.apply(x) if self.oracle == "deconvnet" else torch.relu(x)

    def _instance_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.oracle is None:
            return self.inorm(x)
        mean = x.mean(dim=(2, 3), keepdim=True).detach()
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False).detach()
        scale = self.inorm.weight[None, :, None, None]
        return (x - mean) / torch.sqrt(var + self.inorm.eps) * scale + self.inorm.bias[
            None, :, None, None
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._relu(self._instance_norm(self.lrn(self.conv(x))))
        h = F.pad(h, (1, 2, 2, 1), mode="reflect")
        h = self.up(h)
        h = self._relu(self.convt(h))
        h = F.interpolate(h, size=(37, 41), mode="bilinear", align_corners=True)
        h = F.pad(h, (2, 0, 1, 3), value=0.5)
        h = F.interpolate(h, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.head(h)


def _export(net: nn.Module, variant: str) -> onnx.ModelProto:
    x = torch.randn(*SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "dynamo":
            program = torch.onnx.export(net, (x,), dynamo=True, opset_version=18, verbose=False)
            return program.model_proto  # type: ignore[union-attr]
        buffer = io.BytesIO()
        dynamic = {"x": {0: "n", 2: "h", 3: "w"}} if variant == "legacy_dynamic" else None
        torch.onnx.export(
            net,
            (x,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=dynamic,
        )
        return onnx.load_from_string(buffer.getvalue())


def _fused(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold the shape arithmetic, then fuse LocalResponseNorm (what ``prepare`` will do)."""
    loaded = load_model(model)
    batch = loaded.input_shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    folded = fold_constants(loaded.model, loaded.input_name, SHAPE[1:], fixed)
    return fuse_local_response_norm(folded)


@pytest.fixture(scope="module")
def net() -> Net:
    return Net().eval()


@pytest.fixture(scope="module")
def raw_exports(net: Net) -> dict[str, onnx.ModelProto]:
    return {}


def _raw(raw_exports: dict[str, onnx.ModelProto], net: Net, variant: str) -> onnx.ModelProto:
    if variant not in raw_exports:  # each export once per module: dynamo takes seconds
        raw_exports[variant] = _export(net, variant)
    return raw_exports[variant]


# The static TorchScript export is the dynamic one with its shape arithmetic already folded:
# the dynamic one covers it (and the test's time budget has room for two exports).
@pytest.fixture(scope="module", params=["legacy_dynamic", "dynamo"])
def exported(
    request: pytest.FixtureRequest, net: Net, raw_exports: dict[str, onnx.ModelProto]
) -> Iterator[onnx.ModelProto]:
    yield _fused(_raw(raw_exports, net, request.param))


def _oracle(net: Net, x: np.ndarray, signal: np.ndarray, mode: str) -> np.ndarray:
    net.oracle = mode
    try:
        xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        out = net.double()(xt)
        (grad,) = torch.autograd.grad(out, xt, torch.from_numpy(signal.astype(np.float64)))
        return grad.numpy()
    finally:
        net.oracle = None
        net.float()


@pytest.mark.parametrize("mode", ["gradient", "deconvnet"])
def test_export_matches_autograd(exported: onnx.ModelProto, net: Net, mode: str) -> None:
    ops = {n.op_type for n in exported.graph.node}
    assert {"LRN", "InstanceNormalization", "Pad", "Resize", "ConvTranspose"} <= ops, ops
    assert "Pow" not in ops and "Div" not in ops  # the LRN chain is gone
    output = exported.graph.output[0].name
    p = Projector(
        exported,
        layer=output,
        rule=mode,  # type: ignore[arg-type]
        device="cpu",
        input_shape=SHAPE[1:],
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    forward = p.forward(x)
    with torch.no_grad():
        np.testing.assert_allclose(
            forward.activations, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4
        )
    signal = rng.standard_normal((2, *p.layer_shape)).astype(np.float32)
    back = p.project_signal(forward, signal, [0, 0])
    for row in range(2):
        want = _oracle(net, x, signal[row : row + 1], mode)[0]
        error = np.abs(back[row] - want).max() / np.abs(want).max()
        assert error < 1e-4, (mode, row, error)


@pytest.mark.parametrize("variant", ["legacy_dynamic", "dynamo"])
def test_lrn_fusion_keeps_the_outputs(
    net: Net, raw_exports: dict[str, onnx.ModelProto], variant: str
) -> None:
    import onnxruntime as ort

    original = _raw(raw_exports, net, variant)
    fused = _fused(original)
    assert [n.op_type for n in fused.graph.node].count("LRN") == 1
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    results = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {m.graph.input[0].name: x}
        )[0]
        for m in (original, fused)
    ]
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_lrn_fusion_leaves_other_divisions_alone() -> None:
    # x / (x * x + 2)^0.75 has no channel window: not an LRN.
    model = rc.make_model(
        [
            rc.node("Mul", ["x", "x"], ["sq"]),
            rc.node("Add", ["sq", "two"], ["d"]),
            rc.node("Pow", ["d", "beta"], ["p"]),
            rc.node("Div", ["x", "p"], ["y"]),
        ],
        (2, 3, 3),
        {"two": rc.arr(2.0), "beta": rc.arr(0.75)},
    )
    assert fuse_local_response_norm(model) is model


# --------------------------------------------------------------------------------------------
# LRN and InstanceNormalization: the adjoint of the frozen (linearised) model, and `check`
# --------------------------------------------------------------------------------------------


def _norm_net() -> onnx.ModelProto:
    """x[N,3,12,12] -> Conv -> LRN -> InstanceNorm -> Relu -> Conv -> GAP -> Flatten -> Gemm."""
    inits = {
        "w1": rc.rand(600, 6, 3, 3, 3),
        "g": rc.arr([1.5, -0.5, 2.0, 0.7, 1.0, -1.2]),
        "b": rc.rand(601, 6),
        "w2": rc.rand(602, 4, 6, 3, 3),
        "fc": rc.rand(603, 4, 3),
    }
    nodes = [
        rc.node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        rc.node("LRN", ["c1"], ["l1"], name="lrn1", size=3, alpha=0.9, beta=0.75, bias=1.5),
        rc.node("InstanceNormalization", ["l1", "g", "b"], ["n1"], name="inorm1", epsilon=1e-3),
        rc.node("Relu", ["n1"], ["r1"], name="relu1"),
        rc.node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        rc.node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
        rc.node("Flatten", ["gap"], ["flat"], name="flat"),
        rc.node("Gemm", ["flat", "fc"], ["logits"], name="fc"),
    ]
    return rc.make_model(nodes, (3, 12, 12), inits, outputs=("logits",))


def test_frozen_norms_match_the_rules() -> None:
    """<J d, y> = <d, J^T y> with J from check/linearise/ and J^T the generated deconv graph."""
    import onnxruntime as ort

    model = _norm_net()
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = ["c1", "l1", "n1", "g", "b"]
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"x": x0}), strict=True))
    frozen = linearise(model, values)
    frozen.graph.output.append(onnx.helper.make_tensor_value_info("n1", 1, None))
    assert {n.op_type for n in frozen.graph.node}.isdisjoint({"LRN", "InstanceNormalization"})
    frozen_session = ort.InferenceSession(
        frozen.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    d = rng.standard_normal(x0.shape).astype(np.float32)
    # The frozen model is affine: J d is the difference of two runs.
    layer_jd = [
        np.asarray(frozen_session.run(["n1"], {"x": v})[0], np.float64) for v in (x0 + d, x0)
    ]
    jd = layer_jd[0] - layer_jd[1]
    y = rng.standard_normal(jd.shape).astype(np.float32)
    for mode in ("gradient", "deconvnet"):
        p = Projector(model, layer="n1", rule=mode, device="cpu")  # type: ignore[arg-type]
        back = p.project_signal(p.forward(x0), y)
        lhs = float((jd * y).sum())
        rhs = float((d.astype(np.float64) * back.astype(np.float64)).sum())
        assert abs(lhs - rhs) <= 1e-4 * float(np.abs(jd).sum() * np.abs(y).max()), (lhs, rhs)


def test_check_passes_on_lrn_and_instance_norm() -> None:
    images = np.random.default_rng(4).standard_normal((2, 3, 12, 12)).astype(np.float32)
    report = run_checks(load_model(_norm_net()), images, ["a", "b"], config=CheckConfig())
    adjoint = {f.subject: f.status for f in report.findings if f.check == "faithful.adjoint"}
    assert {"l1", "n1", "logits"} <= set(adjoint)
    assert set(adjoint.values()) == {"pass"}, adjoint


def test_check_notices_an_lrn_rule_without_its_cross_term(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dropping the window coupling (a plain division by D^beta) fails the adjoint check."""
    from onnxdeconv.deconv.rules import norm

    def diagonal_only(ctx: rules.TransposeContext, signal: str) -> dict[int, str]:
        graph = ctx.graph
        x0 = graph.forward(ctx.node.input[0])
        size = int(ctx.attr("size"))
        flat = graph.const([-1, ctx.input_shape()[0], int(np.prod(ctx.input_shape()[1:]))])
        squares = graph.op("Reshape", [graph.op("Mul", [x0, x0]), flat])
        window = graph.const(norm.lrn_window(ctx.input_shape()[0], size))
        summed = graph.op("MatMul", [window, squares])
        d = graph.op(
            "Add",
            [
                graph.op("Mul", [summed, graph.const(np.array(float(ctx.attr("alpha")) / size))]),
                graph.const(np.array(float(ctx.attr("bias")))),
            ],
        )
        scale = graph.op("Pow", [d, graph.const(np.array(-float(ctx.attr("beta"))))])
        shaped = graph.op("Reshape", [scale, graph.const([-1, *ctx.input_shape()])])
        return {0: graph.op("Mul", [signal, shaped])}

    monkeypatch.setitem(rules.TRANSPOSE_RULES, "LRN", diagonal_only)
    images = np.random.default_rng(4).standard_normal((1, 3, 12, 12)).astype(np.float32)
    report = run_checks(load_model(_norm_net()), images, ["a"], config=CheckConfig())
    adjoint = {f.subject: f.status for f in report.findings if f.check == "faithful.adjoint"}
    assert adjoint["l1"] == "fail" and adjoint["c1"] == "pass", adjoint


# --------------------------------------------------------------------------------------------
# Data-dependent ops on the path
# --------------------------------------------------------------------------------------------


def _data_dependent_models() -> dict[str, tuple[onnx.ModelProto, str]]:
    """op -> (model whose layer ``y`` lies behind that op, the name of its node)."""
    then_branch = onnx.helper.make_graph(
        [rc.node("Relu", ["x"], ["then_y"])],
        "then",
        [],
        [onnx.helper.make_tensor_value_info("then_y", 1, [1, 2, 5])],
    )
    else_branch = onnx.helper.make_graph(
        [rc.node("Neg", ["x"], ["else_y"])],
        "else",
        [],
        [onnx.helper.make_tensor_value_info("else_y", 1, [1, 2, 5])],
    )
    body = onnx.helper.make_graph(
        [
            rc.node("Identity", ["cond_in"], ["cond_out"]),
            rc.node("Relu", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("v_in", 1, ["N", 2, 5]),
        ],
        [
            onnx.helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("v_out", 1, ["N", 2, 5]),
        ],
    )
    zero, k = {"zero": rc.arr(0.0)}, {"k": np.array([2])}
    loop = rc.make_model(
        [rc.node("Loop", ["trips", "go", "x"], ["y"], name="loop", body=body)],
        (2, 5),
        {"trips": np.array(3), "go": np.array(True)},
    )
    del loop.graph.output[:]  # shape inference leaves a Loop's output shapeless
    loop.graph.output.append(onnx.helper.make_tensor_value_info("y", 1, ["N", 2, 5]))
    return {
        "TopK": (
            rc.make_model([rc.node("TopK", ["x", "k"], ["y", "i"], name="topk")], (2, 5), k),
            "topk",
        ),
        # The condition is computed from the image: which input passes is decided by the data.
        "Where": (
            rc.make_model(
                [
                    rc.node("Greater", ["x", "zero"], ["positive"]),
                    rc.node("Where", ["positive", "x", "zero"], ["y"], name="where"),
                ],
                (2, 5),
                zero,
            ),
            "where",
        ),
        # The branches read x from the enclosing graph, not through an input of the If node.
        "If": (
            rc.make_model(
                [
                    rc.node("ReduceSum", ["x"], ["total"], keepdims=0),
                    rc.node("Greater", ["total", "zero"], ["cond"]),
                    rc.node(
                        "If",
                        ["cond"],
                        ["y"],
                        name="branch",
                        then_branch=then_branch,
                        else_branch=else_branch,
                    ),
                ],
                (2, 5),
                zero,
                batch=1,
            ),
            "branch",
        ),
        "Loop": (
            loop,
            "loop",
        ),
    }


@pytest.mark.parametrize("op", ["TopK", "Where", "If", "Loop"])
def test_data_dependent_op_on_the_path_is_named(op: str) -> None:
    model, node_name = _data_dependent_models()[op]
    with pytest.raises(UnsupportedOpError) as info:
        Projector(model, layer="y", device="cpu")
    assert info.value.node_name == node_name and info.value.op_type == op
    message = str(info.value)
    assert f"'{node_name}' ({op})" in message and "data-dependent" in message, message


# --------------------------------------------------------------------------------------------
# MatMul with the constant on either side
# --------------------------------------------------------------------------------------------


def test_matmul_weight_on_the_left() -> None:
    # y = W x per sample, W = [[1, 2], [3, 4], [5, 6]]: back = W^T s.
    w = rc.arr([[1, 2], [3, 4], [5, 6]])
    model = rc.make_model([rc.node("MatMul", ["w", "x"])], (2, 2), {"w": w})
    p = Projector(model, layer="y", rule="gradient", device="cpu")
    signal = rc.batch1([[1, 0], [0, 10], [100, 0]])
    back = p.project_signal(p.forward(rc.rand(0, 1, 2, 2)), signal)
    np.testing.assert_allclose(back, rc.batch1([[501, 30], [602, 40]]))


@pytest.mark.parametrize(
    ("nodes", "x_shape", "inits", "what"),
    [
        ([rc.node("MatMul", ["x", "x"], name="mm")], (3, 3), {}, "exactly one operand"),
        (
            [rc.node("Flatten", ["x"], ["flat"]), rc.node("MatMul", ["w", "flat"], name="mm")],
            (1, 3),
            {"w": rc.rand(0, 3, 3)},
            "batch",
        ),
    ],
    ids=["both_on_path", "left_weight_contracts_batch"],
)
def test_matmul_refusals(nodes: list, x_shape: tuple, inits: dict, what: str) -> None:
    model = rc.make_model(nodes, x_shape, inits, batch=3)
    with pytest.raises(UnsupportedOpError, match=what) as info:
        Projector(model, layer="y", device="cpu")
    assert info.value.node_name == "mm"
