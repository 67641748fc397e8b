"""The PyTorch model zoo: every family, both exporters, static and dynamic axes.

For each net of :mod:`zoo_nets` and each export variant (legacy TorchScript and dynamo, with static
shapes and with dynamic batch and spatial axes), ``layers()`` must mark every tensor projectable or
say why not, every projectable layer must project under every rule, and projections from layers
across each net (conv, pool, concat, gated and fully connected outputs) must equal captum on the
PyTorch net: ``NeuronGradient`` for every net, and ``NeuronDeconvolution`` and
``NeuronGuidedBackprop`` for the nets whose only rectifier is ``nn.ReLU``.

The legacy exports are made here (each takes a fraction of a second); the dynamo exports, which
take seconds each, are stored in ``tests/data/zoo`` by ``tests/data/zoo/make_zoo.py``, and the
first test checks that each still computes what its net computes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import zoo_nets
from helpers import run
from onnx import TensorProto, helper, numpy_helper
from oracle_nets import captum_references, one_torch_thread, path_op_types, relative_error
from torch import nn
from zoo_nets import (
    RELU_ONLY,
    SIZE,
    ZOO,
    build,
    make_input,
    match_modules,
    override_references,
)

from onnxdeconv import PreparedModel, Projector, Selection, load_model, prepare
from onnxdeconv.deconv.builder import DeconvPlan
from onnxdeconv.deconv.emitter import BATCH_INDEX, PROJECTION, SIGNAL
from onnxdeconv.deconv.rules import Rule
from onnxdeconv.graph.fold import fold_constants
from onnxdeconv.graph.passes import instrument, with_input_shape

DATA = Path(__file__).resolve().parent / "data" / "zoo"
SHAPE = (3, SIZE, SIZE)
RULES = ("deconvnet", "guided", "gradient")
VARIANTS = tuple(zoo_nets.VARIANTS)
TOLERANCE = 1e-3

#: Modules to compare with captum, per net: stems, pools, Concat/Add/Mul outputs and the heads.
ORACLE_LAYERS: dict[str, tuple[str, ...]] = {
    "alexnet": ("relu1", "pool1", "pool2", "relu4", "fc1", "fc2"),
    "vgg": ("features.0.2", "features.2", "features.5.2", "fc1", "fc2"),
    "resnet": ("stem.2", "maxpool", "layer1.add", "layer2.relu", "fc"),
    "mobilenetv2": ("features.0.2", "features.1.add", "features.2.conv.1.2", "features.4.2", "fc"),
    "mobilenetv3": ("stem.2", "expand.2", "se.mul", "project.1", "fc1", "fc2"),
    "efficientnet": ("stem.2", "block1.add", "block2.se.mul", "head.2", "fc"),
    "squeezenet": ("features.2", "features.3.cat", "features.6.cat", "classifier.2"),
    "googlenet": ("pool1", "inc1.cat", "inc2.b4.0", "inc2.cat", "fc"),
    "densenet": ("block1.0.cat", "transition.3", "block2.1.cat", "relu", "fc"),
    "shufflenet": ("maxpool", "stage.0", "stage.1", "last.2", "fc"),
    "yolo": ("stem.2", "csp.2", "up", "fuse.2", "decode_large", "decode_small"),
    "unet": ("enc1.1", "pool", "up", "relu_up", "cat", "head"),
}

#: Ops each net must put on its paths in every export, so that an exporter change cannot
#: silently drop what the zoo is meant to cover.
PATH_OPS: dict[str, set[str]] = {
    "alexnet": {"Conv", "Relu", "MaxPool", "Gemm"},
    "vgg": {"Conv", "Relu", "MaxPool", "Gemm"},
    "resnet": {"Conv", "Relu", "MaxPool", "Add", "Gemm"},
    "mobilenetv2": {"Conv", "Clip", "Add", "Gemm"},
    "mobilenetv3": {"Conv", "HardSigmoid", "Mul", "Relu", "Gemm"},
    "efficientnet": {"Conv", "Sigmoid", "Mul", "Add", "Gemm"},
    "squeezenet": {"Conv", "Relu", "MaxPool", "Concat"},
    "googlenet": {"Conv", "Relu", "MaxPool", "AveragePool", "Concat", "Gemm"},
    "densenet": {"Conv", "BatchNormalization", "Relu", "AveragePool", "Concat", "Gemm"},
    "shufflenet": {"Conv", "Relu", "MaxPool", "Concat", "Reshape", "Transpose", "Gemm"},
    "yolo": {"Conv", "LeakyRelu", "Resize", "Concat", "Slice", "Sigmoid"},
    "unet": {"Conv", "Relu", "MaxPool", "ConvTranspose", "Concat"},
}


@dataclass
class Exported:
    """One net, one export of it, prepared for the 32x32 input."""

    name: str
    variant: str
    path: Path
    prepared: PreparedModel
    _values: dict[str, np.ndarray] = field(default_factory=dict)


class Zoo:
    """Builds each net and loads or makes each export once per test module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nets: dict[str, nn.Module] = {}
        self.exports: dict[tuple[str, str], Exported] = {}
        self.inputs = make_input(batch=2)

    def net(self, name: str) -> nn.Module:
        if name not in self.nets:
            self.nets[name] = build(name)
        return self.nets[name]

    def get(self, name: str, variant: str) -> Exported:
        key = (name, variant)
        if key not in self.exports:
            if variant in zoo_nets.DYNAMO_VARIANTS:
                path = DATA / f"{name}-{variant}.onnx"
                if not path.exists():
                    pytest.fail(f"{path} is missing: run tests/data/zoo/make_zoo.py {name}")
            else:
                path = self.folder / f"{name}-{variant}.onnx"
                zoo_nets.export(self.net(name), name, variant, path)
            prepared = prepare(load_model(path), SHAPE)
            self.exports[key] = Exported(name, variant, path, prepared)
        return self.exports[key]

    def forward_values(self, ex: Exported) -> dict[str, np.ndarray]:
        """Every candidate layer and every max pool's switches of ``ex`` on :attr:`inputs`: all
        that any deconv graph of the model reads, from one instrumented forward run.
        """
        if not ex._values:
            prepared = ex.prepared
            loaded = prepared.loaded
            pools = [n.output[0] for n in loaded.model.graph.node if n.op_type == "MaxPool"]
            sized = with_input_shape(loaded.model, loaded.input_name, ("N", *SHAPE))
            model, _ = instrument(sized, prepared.candidates, pools, prepared.info)
            session = _session(model)
            names = [o.name for o in session.get_outputs()]
            values = session.run(None, {loaded.input_name: self.inputs})
            ex._values.update(zip(names, values, strict=True))
        return ex._values


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    with one_torch_thread():
        yield Zoo(tmp_path_factory.mktemp("zoo_exports"))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    # Graph optimisations cost more than these tiny graphs take to run.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


#: What other engineers' passes do not handle yet: (net, variant) -> reason. Their cases are
#: expected to fail, strictly, so that a fix shows up.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _param(name: str, variant: str, *rest: str) -> pytest.param:
    # The gradient rule needs no fusion: the product rule through the decomposition is exact.
    gap = None if rest == ("gradient",) else KNOWN_GAPS.get((name, variant))
    marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
    return pytest.param(name, variant, *rest, id="-".join((name, variant, *rest)), marks=marks)


EXPORTS = [_param(name, variant) for name in ZOO for variant in zoo_nets.exports(name)]


# --- the exports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), [p for p in EXPORTS if not p.marks])
def test_export_computes_the_net(zoo: Zoo, name: str, variant: str) -> None:
    ex = zoo.get(name, variant)
    model = onnx.load(str(ex.path))
    with torch.no_grad():
        expected = zoo.net(name)(torch.from_numpy(zoo.inputs))
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = _session(model).run(None, {model.graph.input[0].name: zoo.inputs})
    for have, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(have, want.numpy(), rtol=1e-4, atol=1e-4)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dynamic = [bool(d.dim_param) or not d.dim_value for d in dims]
    assert dynamic == ([True, False, True, True] if "dynamic" in variant else [False] * 4)
    ops: set[str] = set()
    for output in ex.prepared.loaded.model.graph.output:  # YOLO has two heads
        ops |= set(path_op_types(ex.prepared.loaded.model, "input", output.name))
    ops = {"Resize" if op == "Upsample" else op for op in ops}  # opset 9 has Upsample
    assert PATH_OPS[name] <= ops, sorted(PATH_OPS[name] - ops)


# --- layers and projections ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), EXPORTS)
def test_layers_marks_every_tensor(zoo: Zoo, name: str, variant: str) -> None:
    ex = zoo.get(name, variant)
    rows = ex.prepared.layers()
    assert [r.name for r in rows] == ex.prepared.candidates
    for row in rows:
        if not row.projectable:
            assert re.match(r"cannot project through node '.+' \(\w+\): [^;]+; .+", row.reason), row
    blocked = {r.alias: r.reason for r in rows if not r.projectable}
    assert not blocked, blocked


def _project(
    plan: DeconvPlan, values: dict[str, np.ndarray], signal: np.ndarray, images: Sequence[int]
) -> np.ndarray:
    """Run ``plan``'s deconv graph on ``signal``, row ``k`` following image ``images[k]``."""
    feeds = {SIGNAL: signal}
    if plan.forward_inputs:
        feeds[BATCH_INDEX] = np.asarray(list(images), np.int64)
        feeds.update({n: values[n] for n in plan.forward_inputs})
    (projection,) = _session(plan.self_contained()).run([PROJECTION], feeds)
    return np.asarray(projection)


def _strongest_signal(activations: np.ndarray) -> np.ndarray:
    """Per image, zero except at the arg-max of the strongest channel, which keeps its value."""
    signal = np.zeros_like(activations, dtype=np.float32)
    for row, act in enumerate(activations):
        flat = act.reshape(act.shape[0], -1)
        channel = int(flat.max(axis=1).argmax())
        where = int(flat[channel].argmax())
        signal[row].reshape(act.shape[0], -1)[channel, where] = flat[channel, where]
    return signal


@pytest.mark.parametrize(("name", "variant"), [p for p in EXPORTS if not p.marks])
def test_every_layer_projects_under_every_rule(zoo: Zoo, name: str, variant: str) -> None:
    """Each projectable layer's deconv graph runs on the switches and rectifier inputs of one
    forward pass and gives a finite projection of the input's shape.

    One instrumented forward graph serves all layers here (a :class:`Projector` per layer and
    rule would cost a second per model); :func:`test_projection_matches_captum` and
    :func:`test_deepest_layer_through_projector` cover the Projector itself.
    """
    ex = zoo.get(name, variant)
    prepared = ex.prepared
    layers = [r.name for r in prepared.layers() if r.projectable]
    # Each layer runs under one rule per variant, the rule shifting from variant to variant, so
    # that the four exports of a net cover every layer under every rule in a third of the time.
    shift = VARIANTS.index(variant)
    plans = [prepared.plan(layer, RULES[(i + shift) % 3]) for i, layer in enumerate(layers)]
    values = zoo.forward_values(ex)
    nonzero = 0
    for plan in plans:
        signal = _strongest_signal(values[plan.target])
        projection = _project(plan, values, signal, range(len(signal)))
        assert projection.shape == zoo.inputs.shape, (plan.target, plan.rule)
        assert np.isfinite(projection).all(), (plan.target, plan.rule)
        nonzero += bool(np.abs(projection).max() > 0)
    # A deconvnet signal can die at a rectifier, but not on most layers of a random net.
    assert nonzero >= 0.8 * len(plans), f"{nonzero} of {len(plans)} projections are non-zero"


@pytest.mark.parametrize(
    ("name", "rule"), [(name, RULES[i % 3]) for i, name in enumerate(ZOO)], ids=lambda v: v
)
def test_deepest_layer_through_projector(zoo: Zoo, name: str, rule: str) -> None:
    """The Projector on the dynamo export with dynamic axes, at a size other than the export's
    where the net allows one (AlexNet's and VGG's first Linear fixes theirs).
    """
    path = DATA / f"{name}-dynamo-dynamic.onnx"
    height, width = (SIZE, SIZE) if name in ("alexnet", "vgg") else (64, 48)
    projector = Projector(path, rule=rule, device="cpu", input_shape=(3, height, width))
    inputs = np.ascontiguousarray(make_input(batch=2, size=64)[..., :height, :width])
    forward = projector.forward(inputs)
    picks = [p for image in (0, 1) for p in projector.strongest(forward, 2, image=image)]
    projections = projector.project(forward, picks)
    assert projections.shape == (4, 3, height, width)
    assert np.isfinite(projections).all() and np.abs(projections).max() > 0


# --- the oracle ----------------------------------------------------------------------------------


def _oracle_cases() -> list[pytest.param]:
    return [
        _param(name, variant, rule)
        for name in ZOO
        for variant in zoo_nets.exports(name)
        for rule in RULES
    ]


def _picks(activations: np.ndarray, top: int) -> list[Selection]:
    """The ``top`` strongest channels of each image at their arg-max, as Projector picks them."""
    picks = []
    for image, act in enumerate(activations):
        flat = act.reshape(act.shape[0], -1)
        for channel in np.argsort(-flat.max(axis=1), kind="stable")[:top]:
            where = np.unravel_index(int(flat[channel].argmax()), act.shape[1:])
            position = tuple(int(i) for i in where)
            value = float(act[(int(channel), *position)])
            picks.append(Selection(image, int(channel), position, value))
    return picks


@pytest.mark.parametrize(("name", "variant", "rule"), _oracle_cases())
def test_projection_matches_the_oracle(
    zoo: Zoo, name: str, variant: str, rule: Rule, record_property: pytest.RecordProperty
) -> None:
    """The top-2 channels of two images, at their arg-max, from each of the net's oracle layers,
    equal the oracle's projection (times the activation) to 1e-3 of the peak.

    The oracle is captum's ``NeuronGradient`` under ``gradient``; under ``deconvnet`` and
    ``guided`` it is captum's ``NeuronDeconvolution`` and ``NeuronGuidedBackprop`` for the nets
    whose only activation is ReLU, and torch autograd with every activation and gate overridden
    (:func:`zoo_nets.overridden`) for the others.
    """
    ex = zoo.get(name, variant)
    net = zoo.net(name)
    modules = ORACLE_LAYERS[name]
    wanted = zoo_nets.module_outputs(net, zoo.inputs, modules)
    values = zoo.forward_values(ex)
    tensors = match_modules({n: values[n] for n in ex.prepared.candidates}, wanted)
    worst = 0.0
    for module in modules:
        plan = ex.prepared.plan(tensors[module], rule)
        activations = values[plan.target]
        np.testing.assert_allclose(activations, wanted[module], rtol=1e-4, atol=1e-4)
        picks = _picks(activations, 2)
        if rule != "gradient":
            # captum's unit-gradient attribution times the activation is the deconvnet
            # projection only for a positive activation (the ReLU rule is not odd); a layer
            # without a rectifier (a head) can have a negative strongest channel.
            picks = [p for p in picks if p.value > 0]
            assert picks, module
        signal = np.zeros((len(picks), *activations.shape[1:]), np.float32)
        for row, pick in enumerate(picks):
            signal[(row, pick.channel, *(pick.position or ()))] = pick.value
        projections = _project(plan, values, signal, [p.image for p in picks])
        if rule == "gradient" or name in RELU_ONLY:
            references = captum_references(net, module, rule, zoo.inputs, picks)
        else:
            references = override_references(net, module, rule, zoo.inputs, picks)
        assert max(float(np.abs(r).max()) for r in references) > 0, module
        errors = [relative_error(p, r) for p, r in zip(projections, references, strict=True)]
        assert max(errors) <= TOLERANCE, (module, [f"{e:.1e}" for e in errors])
        worst = max(worst, *errors)
    record_property("relative_error", worst)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
@pytest.mark.parametrize("name", ["resnet", "densenet"])
def test_override_oracle_equals_captum_on_relu_nets(zoo: Zoo, name: str, rule: str) -> None:
    """The hand-written override oracle agrees with captum where both apply."""
    net = zoo.net(name)
    module = ORACLE_LAYERS[name][-2]
    (activations,) = zoo_nets.module_outputs(net, zoo.inputs, [module]).values()
    picks = [p for p in _picks(activations, 3) if p.value > 0]
    ours = override_references(net, module, rule, zoo.inputs, picks)
    theirs = captum_references(net, module, rule, zoo.inputs, picks)
    assert np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * np.abs(theirs).max())


# --- the command line ----------------------------------------------------------------------------


def test_cli_layers_and_project_on_dynamic_exports(
    zoo: Zoo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = zoo.get("shufflenet", "legacy-dynamic").path
    code, out, err = run(["layers", legacy, "--size", "32,32", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(r["projectable"] for r in rows), [r for r in rows if not r["projectable"]]
    code, out, err = run(["layers", legacy], capsys)
    assert code == 2 and "--size" in err

    array = tmp_path / "x.npy"
    np.save(array, make_input(batch=1))
    for name in ("yolo", "densenet"):
        out_path = tmp_path / f"{name}.npy"
        args = ["project", DATA / f"{name}-dynamo-dynamic.onnx", array, "--size", "32,32"]
        code, _, err = run([*args, "--top", "3", "--rule", "guided", "-o", out_path], capsys)
        assert code == 0, err
        projections = np.load(out_path)
        assert projections.shape == (3, *SHAPE) and np.isfinite(projections).all()


# --- constant folding ----------------------------------------------------------------------------


def _chain_model(batch: int | str = "N", allowzero: int = 0) -> onnx.ModelProto:
    """An old-style flatten and chunk: ``x.view(x.size(0), -1)`` and ``x[:, :C // 2]`` by shapes.

    Conv -> Shape -> Gather(0) -> Unsqueeze -> Concat([N, -1]) -> Reshape, and the channel half
    ``Shape -> Gather(1) -> Div(2) -> Unsqueeze -> Slice``.
    """
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)

    def const(name: str, value: object) -> onnx.NodeProto:
        array = np.asarray(value, np.int64)
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(array, name + "_v")
        )

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["y"], ["shape"]),
        const("zero", 0),
        const("one", 1),
        const("two", 2),
        const("minus1", [-1]),
        const("axes0", [0]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["c"], axis=0),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["half", "axes0"], ["half1"]),
        const("start", [0]),
        const("axis1", [1]),
        helper.make_node("Slice", ["y", "start", "half1", "axis1"], ["part"]),
        helper.make_node("Reshape", ["part", "flat_shape"], ["flat"], allowzero=allowzero),
    ]
    graph = helper.make_graph(
        nodes,
        "chains",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [batch, None])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return np.asarray(_session(model).run(None, {"x": x})[0])


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


@pytest.mark.parametrize("allowzero", [0, 1])
def test_fold_keeps_the_batch_free_and_folds_the_rest(allowzero: int) -> None:
    model = _chain_model(allowzero=allowzero)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    folded = fold_constants(model, "x", (3, 6, 5))
    assert model == before, "the pass must not mutate its argument"
    initializers = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    # The slice end is C // 2 = 2, now a constant. The reshape target [N, -1] varies with the
    # batch; its output [N, 2 * 6 * 5] varies in the batch only, so it becomes [-1, 60].
    assert initializers["half1"].tolist() == [2]
    (reshape,) = [n for n in folded.graph.node if n.op_type == "Reshape"]
    assert initializers[reshape.input[1]].tolist() == [-1, 60]
    assert [n.op_type for n in folded.graph.node if n.op_type != "Constant"] == [
        "Conv",
        "Slice",
        "Reshape",
    ]
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 3, 6, 5)).astype(np.float32)
        np.testing.assert_array_equal(_run(folded, x), _run(model, x))
        assert _run(folded, x).shape == (batch, 2 * 6 * 5)


def test_fold_with_a_fixed_batch_folds_the_batch_too() -> None:
    folded = fold_constants(_chain_model(batch=1), "x", (3, 6, 5), batch=1)
    initializers = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert initializers["flat_shape"].tolist() == [1, -1]
    computed = [n.op_type for n in folded.graph.node if n.op_type != "Constant"]
    assert computed == ["Conv", "Slice", "Reshape"]


def test_fold_inlines_an_if_whose_condition_folds() -> None:
    """The legacy exporter's ``squeeze(1)``: ``If(Shape(x)[1] == 1, Squeeze, Identity)``."""
    then_graph = helper.make_graph(
        [helper.make_node("Squeeze", ["y", "axes1"], ["squeezed"])],
        "then",
        [],
        [helper.make_tensor_value_info("squeezed", TensorProto.FLOAT, None)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["same"])],
        "else",
        [],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Shape", ["y"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["c"], axis=0),
        helper.make_node("Equal", ["c", "one"], ["is_one"]),
        helper.make_node("If", ["is_one"], ["out"], then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(
        nodes,
        "if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array([1], np.int64), "axes1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    for channels, kept in ((1, "Squeeze"), (3, "Identity")):
        folded = fold_constants(model, "x", (channels, 4))
        assert [n.op_type for n in folded.graph.node] == ["Relu", kept, "Identity"]
        x = np.random.default_rng(0).normal(size=(2, channels, 4)).astype(np.float32)
        np.testing.assert_array_equal(_run(folded, x), _run(model, x))


def test_fold_reads_the_run_shape_of_a_ceil_mode_pool() -> None:
    """Below opset 22, shape inference keeps a ceil-mode window that starts in the end padding
    (5 -> 4 here) while ONNX Runtime drops it (5 -> 3); a folded shape must be the real one.
    """
    nodes = [
        helper.make_node(
            "MaxPool", ["x"], ["p"], kernel_shape=[2], strides=[2], pads=[1, 1], ceil_mode=1
        ),
        helper.make_node("Shape", ["p"], ["shape"], start=2),
        helper.make_node("Cast", ["shape"], ["size"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["p", "size"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ceil",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    folded = fold_constants(model, "x", (1, 5))
    size = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}["size"]
    x = np.arange(10, dtype=np.float32).reshape(2, 1, 5)
    assert _run(model, x).shape[-1] == 3 and size.tolist() == [3.0]
    np.testing.assert_array_equal(_run(folded, x), _run(model, x))


def test_fold_leaves_a_graph_without_shape_arithmetic_alone() -> None:
    model = _chain_model()
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.graph.node[1:]
    plain.graph.output[0].name = "y"
    assert fold_constants(plain, "x", (3, 6, 5)) is plain


@pytest.mark.parametrize(("name", "op"), [("shufflenet", "Slice"), ("alexnet", "LRN")])
def test_legacy_shape_chains_become_constants(zoo: Zoo, name: str, op: str) -> None:
    """Old dynamic exports compute reshape targets, slice bounds and pads from ``Shape``, and
    squeeze under ``If``: after ``prepare`` no ``Shape`` or ``If`` is left, the slices read
    constants, and AlexNet's LocalResponseNorm, whose pads were computed, is one LRN node again.
    """
    raw = onnx.load(str(zoo.get(name, "legacy-dynamic").path))
    graph = zoo.get(name, "legacy-dynamic").prepared.loaded.model.graph
    raw_ops = {n.op_type for n in raw.graph.node}
    ops = {n.op_type for n in graph.node}
    assert {"Shape", "Gather", "Concat"} <= raw_ops and ("If" in raw_ops or name != "alexnet")
    assert not {"Shape", "If", "Gather"} & ops and op in ops
    constants = {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    for node in graph.node:
        if node.op_type in ("Slice", "Reshape", "Pad"):
            assert set(node.input[1:]) - {""} <= constants, node.name


def test_prepare_folds_a_copy_for_each_input_size(zoo: Zoo) -> None:
    """``prepare`` leaves the loaded model alone, so that it can be prepared again at another
    size: the folded constants (here the channel split of the shuffle) differ by size only where
    they should.
    """
    loaded = load_model(zoo.get("shufflenet", "legacy-dynamic").path)
    before = onnx.ModelProto()
    before.CopyFrom(loaded.model)
    small = prepare(loaded, SHAPE)
    large = prepare(loaded, (3, 64, 96))
    assert loaded.model == before
    assert small.loaded.model is not loaded.model
    assert small.info[small.candidates[-1]].per_sample == (10,)
    shuffled = [n for n in large.loaded.model.graph.node if n.op_type == "Reshape"]
    targets = [numpy_helper.to_array(t) for t in large.loaded.model.graph.initializer]
    # [N, groups, C / groups, H, W], the batch entry 0 ("copy") or -1 ("infer").
    sizes = {tuple(t.tolist()[1:]) for t in targets if t.ndim == 1 and t.size == 5}
    assert shuffled and sizes == {(2, 8, 8, 12)}
