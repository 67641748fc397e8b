"""Projections of exported PyTorch convnets against captum, the numerical oracle.

For each architecture in :mod:`oracle_nets`, exported with the legacy TorchScript exporter and with
the dynamo exporter, the top-3 channels of two images are projected at their arg-max in one batched
call, under every rule, from an early conv, pools, deep conv/Add/Concat outputs and Linear outputs.
Each projection must equal captum's ``Neuron{Deconvolution,GuidedBackprop,Gradient}`` attribution
times the activation, to 1e-3 of its peak.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from oracle_nets import (
    ARCHITECTURES,
    build_net,
    captum_references,
    export,
    make_input,
    map_modules_to_tensors,
    module_outputs,
    one_torch_thread,
    path_op_types,
    relative_error,
)
from torch import nn

from onnxdeconv import PreparedModel, Projector, load_model, prepare

RULES = ("deconvnet", "guided", "gradient")
TOLERANCE = 1e-3
TOP = 3

#: Layers to project from, per architecture: readable id -> torch module name.
LAYERS: dict[str, dict[str, str]] = {
    "zfnet": {
        "conv1": "conv1",  # 7x7/2 conv, before its ReLU
        "pool1": "pool1",  # overlapping, padded 3x3/2 max pool
        "pool2ceil": "pool2",  # 3x3/2 max pool, ceil_mode=True
        "relu4": "relu4",  # deep conv, after its ReLU
        "fc1": "fc1",
        "fc2": "fc2",  # logits, behind ReLU and Dropout
    },
    "vgg": {
        "bn1": "features.1",  # conv + BN (a constant-folding export folds the BN into the conv)
        "bn2": "features.4",
        "pool1": "features.6",
        "bnpool": "features.7",  # BN after a max pool
        "relu5": "features.17",
        "gap": "pool",  # AdaptiveAvgPool2d(1)
        "fc": "fc",
    },
    "resnet": {
        "bn1": "bn1",  # stem conv + BN
        "maxpool": "maxpool",  # 3x3/2 padded stem pool
        "add1": "layer1.add",  # identity shortcut
        "add2proj": "layer2.add",  # strided 1x1 projection shortcut
        "relu3": "layer3.relu2",  # after an identity-shortcut Add
        "add4proj": "layer4.add",
        "gap": "avgpool",
        "fc": "fc",
    },
    "mobilenet": {
        "conv1": "features.0.0",
        "dwconv": "features.1.0",  # depthwise, groups=C
        "dwconv2s2": "features.3.1",  # strided depthwise, after its ReLU
        "dildw": "features.5.1",  # dilated depthwise
        "dilconv": "features.6.0",  # dilated dense conv
        "avgpool": "features.7",  # AvgPool2d(2)
        "avgpoolpad": "features.9",  # AvgPool2d(3, 2, padding=1, count_include_pad=False)
        "gap": "pool",
        "fc": "fc",
    },
    "squeeze": {
        "conv1": "stem.0",
        "pool1ceil": "pool1",  # 3x3/2 ceil-mode max pool
        "fire1cat": "fire1.cat",
        "fire2expand3": "fire2.expand3.1",
        "pool2ceil": "pool2",
        "branchpool": "incep.b4.0",  # 3x3 stride-1 padded max pool inside a branch
        "incepcat": "incep.cat",
        "conv": "conv.1",
        "gap": "pool",
        "fc": "fc",
    },
}

#: (architecture, exporter) pairs under test: every architecture with both exporters, and the
#: nets with BatchNorm once more without constant folding, which keeps every BatchNormalization.
EXPORTS = [(arch, exporter) for arch in ARCHITECTURES for exporter in ("legacy", "dynamo")] + [
    ("vgg", "legacy-nofold"),
    ("resnet", "legacy-nofold"),
]


@dataclass
class Exported:
    """One architecture, one export of it, and the ONNX tensor of each tested module."""

    net: nn.Module
    model: onnx.ModelProto
    path: Path
    inputs: np.ndarray
    prepared: PreparedModel
    #: Module name -> ONNX tensor name.
    tensors: dict[str, str]
    #: Module name -> the module's torch output on ``inputs``.
    activations: dict[str, np.ndarray]


class Zoo:
    """Exports each (architecture, exporter) pair on first use, once per test module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nets: dict[str, nn.Module] = {}
        self.cache: dict[tuple[str, str], Exported] = {}

    def get(self, arch: str, exporter: str) -> Exported:
        key = (arch, exporter)
        if key not in self.cache:
            if arch not in self.nets:
                self.nets[arch] = build_net(arch)
            net = self.nets[arch]
            inputs = make_input(arch)
            path = self.folder / f"{arch}-{exporter}.onnx"
            model = export(net, torch.from_numpy(inputs[:1]), exporter, path)
            tensors = map_modules_to_tensors(model, net, inputs[:1], list(LAYERS[arch].values()))
            prepared = prepare(load_model(path))
            activations = module_outputs(net, torch.from_numpy(inputs), list(tensors))
            self.cache[key] = Exported(net, model, path, inputs, prepared, tensors, activations)
        return self.cache[key]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    with one_torch_thread():
        yield Zoo(tmp_path_factory.mktemp("oracle_exports"))


def _cases() -> list[pytest.param]:
    cases = []
    for arch, exporter in EXPORTS:
        for layer_id, module in LAYERS[arch].items():
            for rule in RULES:
                cases.append(
                    pytest.param(
                        arch,
                        exporter,
                        module,
                        rule,
                        id=f"{arch}-{exporter}-{layer_id}-{rule}",
                    )
                )
    return cases


@pytest.mark.parametrize(("arch", "exporter", "module", "rule"), _cases())
def test_projection_matches_captum(
    zoo: Zoo,
    arch: str,
    exporter: str,
    module: str,
    rule: str,
    record_property: pytest.RecordProperty,
) -> None:
    ex = zoo.get(arch, exporter)
    projector = Projector(ex.prepared, layer=ex.tensors[module], rule=rule, device="cpu")
    forward = projector.forward(ex.inputs)
    np.testing.assert_allclose(forward.activations, ex.activations[module], rtol=1e-4, atol=1e-4)

    selections = [
        pick
        for image in range(len(ex.inputs))
        for pick in projector.strongest(forward, TOP, image=image)
    ]
    # The oracle scales captum's unit-gradient attribution by the activation, which is the
    # deconvnet projection only for a positive activation (the ReLU rule is not odd).
    assert all(pick.value > 0 for pick in selections), selections
    projections = projector.project(forward, selections)
    assert projections.shape == (len(selections), *ex.inputs.shape[1:])
    assert projections.dtype == np.float32

    references = captum_references(ex.net, module, rule, ex.inputs, selections)
    # A reference can be all zeros (every path to the input crosses a closed ReLU, or a
    # deconvnet ReLU clips the whole signal); the projection must then be zero too.
    errors = [relative_error(p, r) for p, r in zip(projections, references, strict=True)]
    peaks = [float(np.abs(r).max()) for r in references]
    assert max(peaks) > 0, "captum's references are all zeros: the case tests nothing"
    worst = max(errors)
    record_property("relative_error", worst)
    assert worst <= TOLERANCE, {
        f"image {s.image} channel {s.channel} at {s.position}": f"{e:.2e}"
        for s, e in zip(selections, errors, strict=True)
    }


@pytest.mark.parametrize(
    ("arch", "exporter"),
    [("vgg", "legacy"), ("vgg", "legacy-nofold"), ("vgg", "dynamo"), ("resnet", "legacy-nofold")],
    ids=lambda v: v,
)
def test_batchnorm_stays_on_the_projection_path(zoo: Zoo, arch: str, exporter: str) -> None:
    ex = zoo.get(arch, exporter)
    deepest = ex.tensors[LAYERS[arch]["fc"]]
    assert "BatchNormalization" in path_op_types(ex.model, ex.prepared.loaded.input_name, deepest)


#: Ops each architecture must put on the path from the input to its last Linear, in every export,
#: so that a change in an exporter cannot silently drop what these tests cover.
PATH_OPS = {
    "zfnet": {"Conv", "Relu", "MaxPool", "Gemm"},
    "vgg": {"Conv", "BatchNormalization", "Relu", "MaxPool", "Gemm"},
    "resnet": {"Conv", "Relu", "MaxPool", "Add", "Gemm"},
    "mobilenet": {"Conv", "Relu", "AveragePool", "Gemm"},
    "squeeze": {"Conv", "Relu", "MaxPool", "Concat", "Gemm"},
}


@pytest.mark.parametrize(("arch", "exporter"), EXPORTS, ids=lambda v: v)
def test_exports_cover_the_intended_ops(zoo: Zoo, arch: str, exporter: str) -> None:
    ex = zoo.get(arch, exporter)
    last = ex.tensors[LAYERS[arch]["fc2" if arch == "zfnet" else "fc"]]
    ops = set(path_op_types(ex.model, ex.prepared.loaded.input_name, last))
    assert PATH_OPS[arch] <= ops, sorted(ops)


@pytest.mark.parametrize(("arch", "exporter"), EXPORTS, ids=lambda v: v)
def test_modules_map_to_distinct_tensors(zoo: Zoo, arch: str, exporter: str) -> None:
    ex = zoo.get(arch, exporter)
    assert len(set(ex.tensors.values())) == len(ex.tensors), ex.tensors
    assert set(ex.tensors.values()) <= set(ex.prepared.candidates)


@pytest.mark.parametrize("rule", RULES)
def test_negative_logits_match_captum(
    zoo: Zoo, rule: str, record_property: pytest.RecordProperty
) -> None:
    """Negative units project as captum's Neuron* attribution times the (negative) activation."""
    ex = zoo.get("zfnet", "legacy")
    projector = Projector(ex.prepared, layer=ex.tensors["fc2"], rule=rule, device="cpu")  # type: ignore[arg-type]
    forward = projector.forward(ex.inputs)
    selections = [
        projector.strongest(forward, channel=int(channel), image=image)[0]
        for image in range(len(ex.inputs))
        for channel in np.argsort(forward.activations[image])[:TOP]
    ]
    assert all(pick.value < 0 for pick in selections), selections
    projections = projector.project(forward, selections)
    references = captum_references(ex.net, "fc2", rule, ex.inputs, selections)
    assert min(float(np.abs(r).max()) for r in references) > 0
    worst = max(relative_error(p, r) for p, r in zip(projections, references, strict=True))
    record_property("relative_error", worst)
    assert worst <= TOLERANCE, worst
