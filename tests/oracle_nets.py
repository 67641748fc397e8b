"""Small PyTorch convnets, their ONNX exports, and helpers for the captum oracle tests.

Every rectifier is its own ``nn.ReLU`` module (captum hooks only ``nn.ReLU`` modules, never
``F.relu``), and every Add or Concat that a test projects from is wrapped in a module, so that
captum can name it as a layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop
from torch import nn

from onnxdeconv import Selection, load_model, prepare

#: captum's neuron attribution for each projection rule of the library.
CAPTUM_METHODS = {
    "deconvnet": NeuronDeconvolution,
    "guided": NeuronGuidedBackprop,
    "gradient": NeuronGradient,
}


class AddBlock(nn.Module):
    """``a + b`` as a module, so that the sum is a layer captum can select."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class CatBlock(nn.Module):
    """Channel concatenation as a module, so that the result is a layer captum can select."""

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts, dim=1)


def _conv_relu(cin: int, cout: int, k: int, **kw: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, **kw), nn.ReLU())


# --- 1. ZFNet ------------------------------------------------------------------------------------


class ZFNet(nn.Module):
    """ZFNet in miniature: 7x7/2 conv, overlapping padded and ceil-mode 3x3/2 max pools, FC head."""

    input_shape = (3, 64, 64)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, stride=2, padding=1)  # 64 -> 30
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)  # 30 -> 15, overlapping, padded
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2, padding=2)  # 15 -> 8
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 8 -> 4 (floor mode: 3)
        self.conv3 = nn.Conv2d(16, 24, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(24, 24, 3, padding=1)
        self.relu4 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(24 * 4 * 4, 32)
        self.relu5 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu4(self.conv4(self.relu3(self.conv3(x))))
        x = self.drop(self.relu5(self.fc1(self.flatten(x))))
        return self.fc2(x)


# --- 2. VGG with batch norm ----------------------------------------------------------------------


class VGGBN(nn.Module):
    """VGG blocks with BatchNorm2d (also one BN after a pool, which no exporter can fold into a
    Conv), adaptive average pooling and a Linear head.
    """

    input_shape = (3, 32, 32)

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, 8),  # 0 conv, 1 bn, 2 relu
            *block(8, 8),  # 3, 4, 5
            nn.MaxPool2d(2, 2),  # 6: 32 -> 16
            nn.BatchNorm2d(8),  # 7: BN after a pool
            *block(8, 16),  # 8, 9, 10
            *block(16, 16),  # 11, 12, 13
            nn.MaxPool2d(2, 2),  # 14: 16 -> 8
            *block(16, 24),  # 15, 16, 17
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


# --- 3. ResNet -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Residual block: identity shortcut, or a strided 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.add = AddBlock()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add(y, self.shortcut(x)))


class ResNet(nn.Module):
    """ResNet stem (conv, 3x3/2 max pool), identity and projection blocks, GAP and FC."""

    input_shape = (3, 48, 48)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)  # 48 -> 24
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # 24 -> 12
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)  # 12 -> 6
        self.layer3 = BasicBlock(16, 16)
        self.layer4 = BasicBlock(16, 24, stride=2)  # 6 -> 3
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


# --- 4. MobileNet --------------------------------------------------------------------------------


class MobileNet(nn.Module):
    """Depthwise-separable blocks (groups=C), dilated depthwise and dense convs, average pools."""

    input_shape = (3, 48, 48)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_relu(3, 8, 3, stride=2, padding=1),  # 0: 48 -> 24
            _conv_relu(8, 8, 3, padding=1, groups=8),  # 1: depthwise
            _conv_relu(8, 16, 1),  # 2: pointwise
            _conv_relu(16, 16, 3, stride=2, padding=1, groups=16),  # 3: depthwise /2: 24 -> 12
            _conv_relu(16, 24, 1),  # 4: pointwise
            _conv_relu(24, 24, 3, padding=2, dilation=2, groups=24),  # 5: dilated depthwise
            _conv_relu(24, 24, 3, padding=2, dilation=2),  # 6: dilated dense
            nn.AvgPool2d(2),  # 7: 12 -> 6
            _conv_relu(24, 32, 1),  # 8: pointwise
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),  # 9: 6 -> 3
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


# --- 5. SqueezeNet / Inception -------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = _conv_relu(cin, squeeze, 1)
        self.expand1 = _conv_relu(squeeze, expand, 1)
        self.expand3 = _conv_relu(squeeze, expand, 3, padding=1)
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return self.cat(self.expand1(s), self.expand3(s))


class Inception(nn.Module):
    """GoogLeNet inception module, with a stride-1 3x3 max pool branch."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = _conv_relu(cin, 8, 1)
        self.b2 = nn.Sequential(_conv_relu(cin, 6, 1), _conv_relu(6, 8, 3, padding=1))
        self.b3 = nn.Sequential(_conv_relu(cin, 4, 1), _conv_relu(4, 6, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv_relu(cin, 6, 1))
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cat(self.b1(x), self.b2(x), self.b3(x), self.b4(x))


class SqueezeInception(nn.Module):
    """SqueezeNet stem and fire modules, then an inception module, a 1x1 conv, GAP and FC."""

    input_shape = (3, 48, 48)

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_relu(3, 16, 3, stride=2)  # 48 -> 23
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 23 -> 11
        self.fire1 = Fire(16, 4, 8)
        self.fire2 = Fire(16, 4, 8)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 11 -> 5
        self.incep = Inception(16)
        self.conv = _conv_relu(28, 16, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stem(x))
        x = self.pool2(self.fire2(self.fire1(x)))
        x = self.conv(self.incep(x))
        return self.fc(self.flatten(self.pool(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "zfnet": ZFNet,
    "vgg": VGGBN,
    "resnet": ResNet,
    "mobilenet": MobileNet,
    "squeeze": SqueezeInception,
}


def build_net(arch: str, seed: int = 0) -> nn.Module:
    """The net with random weights from ``seed`` and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    return with_random_batch_norm(ARCHITECTURES[arch]())


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: for tiny nets, faster than two that compete with ONNX Runtime."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def with_random_batch_norm(net: nn.Module) -> nn.Module:
    """``net`` in eval mode, its BatchNorm layers given non-trivial affine and running values."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.3, 2.0)
    return net.eval()


def make_input(arch: str, batch: int = 2, seed: int = 1) -> np.ndarray:
    """Random normal images for the architecture, float32 ``[batch, C, H, W]``."""
    shape = ARCHITECTURES[arch].input_shape
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


# --- export --------------------------------------------------------------------------------------


#: The exports under test. ``legacy`` is the TorchScript exporter at opset 13 with its defaults
#: (constant folding on, which folds a BatchNormalization that follows a Conv into the Conv) and a
#: dynamic batch axis; ``legacy-nofold`` turns constant folding off, which keeps every
#: BatchNormalization node; ``dynamo`` is the torch.export-based exporter (static batch of 1).
EXPORTERS = ("legacy", "legacy-nofold", "dynamo")


def export(net: nn.Module, example: torch.Tensor, exporter: str, path: Path) -> onnx.ModelProto:
    """Export ``net`` with one of :data:`EXPORTERS` to ``path``, check it and load it back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter in ("legacy", "legacy-nofold"):
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,
                opset_version=13,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                do_constant_folding=exporter == "legacy",
            )
        elif exporter == "dynamo":
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                verbose=False,
            )
            program.save(str(path))
        else:
            raise ValueError(exporter)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def op_types(model: onnx.ModelProto) -> list[str]:
    """The distinct op types of the main graph, sorted."""
    return sorted({node.op_type for node in model.graph.node})


# --- torch module -> ONNX tensor -----------------------------------------------------------------


def module_outputs(net: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The forward output of each named submodule of ``net`` on ``x``."""
    modules = dict(net.named_modules())
    captured: dict[str, np.ndarray] = {}
    hooks = []
    for name in names:

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            captured[name] = out.detach().numpy().copy()

        hooks.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in hooks:
            handle.remove()
    return captured


def all_tensor_values(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` with every projectable candidate tensor exposed as an output."""
    prepared = prepare(load_model(model))
    candidates = list(prepared.candidates)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    for name in candidates:
        exposed.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(candidates, {session.get_inputs()[0].name: x})
    return dict(zip(candidates, values, strict=True))


def map_modules_to_tensors(
    model: onnx.ModelProto, net: nn.Module, x: np.ndarray, names: Sequence[str]
) -> dict[str, str]:
    """Find, by value, the ONNX tensor that holds each named module's output.

    Exporters name tensors differently, so each module's forward-hook output is compared with the
    values of every candidate tensor; the first tensor in topological order with the same shape and
    allclose values wins.
    """
    wanted = module_outputs(net, torch.from_numpy(x), names)
    values = all_tensor_values(model, x)
    found = {}
    for name in names:
        ref = wanted[name]
        tol = 1e-4 * max(float(np.abs(ref).max()), 1e-6)
        matches = [
            tensor
            for tensor, value in values.items()
            if value.shape == ref.shape and np.allclose(value, ref, rtol=1e-4, atol=tol)
        ]
        if not matches:
            raise LookupError(f"no tensor of the ONNX model matches module '{name}'")
        found[name] = matches[0]
    return found


# --- oracle ------------------------------------------------------------------------------------


def captum_references(
    net: nn.Module,
    layer: str,
    rule: str,
    x: np.ndarray,
    selections: Sequence[Selection],
) -> np.ndarray:
    """captum's projection of each selected activation of ``layer``: ``[K, C, H, W]``.

    One attribution call covers all selections: row ``k`` of the batch is a copy of image
    ``selections[k].image`` and its neuron is ``(channel, *position)`` of that row (samples are
    independent in eval mode, so each row's gradient comes from its own neuron only). Each row is
    scaled by the activation's value.
    """
    module = dict(net.named_modules())[layer]
    method = CAPTUM_METHODS[rule](net, module)
    rows = torch.arange(len(selections))
    index = [
        torch.tensor([s.channel for s in selections]),
        *(torch.tensor(list(axis)) for axis in zip(*(s.position for s in selections), strict=True)),
    ]

    def neuron(output: torch.Tensor) -> torch.Tensor:
        return output[(rows, *index)]

    inputs = torch.from_numpy(x[[s.image for s in selections]].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attribution = method.attribute(inputs, neuron_selector=neuron)
    values = np.array([s.value for s in selections], np.float32).reshape(-1, 1, 1, 1)
    return attribution.detach().numpy() * values


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|``."""
    scale = float(np.abs(expected).max())
    return (
        float(np.abs(actual - expected).max()) / scale if scale > 0 else float(np.abs(actual).max())
    )


def path_op_types(model: onnx.ModelProto, input_name: str, target: str) -> list[str]:
    """Distinct op types of the nodes on a path from graph input ``input_name`` to ``target``."""
    reached = {input_name}
    on_input: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if any(name in reached for name in node.input):
            reached.update(node.output)
            on_input.append(node)
    needed = {target}
    ops: set[str] = set()
    for node in reversed(on_input):
        if any(name in needed for name in node.output):
            ops.add(node.op_type)
            needed.update(node.input)
    return sorted(ops)


__all__ = [
    "ARCHITECTURES",
    "CAPTUM_METHODS",
    "EXPORTERS",
    "build_net",
    "captum_references",
    "export",
    "make_input",
    "map_modules_to_tensors",
    "module_outputs",
    "op_types",
    "path_op_types",
    "relative_error",
]
