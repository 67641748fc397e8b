"""Tiny versions of the classic PyTorch model zoo, with random weights, and their ONNX exports.

Each net keeps the structure its family is known for (what exporters turn into the ops the rules
must handle) at a few channels and a 32x32 input, so that all of them export and project in
seconds. Every rectifier that captum must override is an ``nn.ReLU`` module, and sums and
concatenations that a test projects from are modules (see :mod:`oracle_nets`).

``RELU_ONLY`` lists the nets whose only nonlinearities are ReLU and max pooling (LRN and
BatchNorm being fixed at the forward point): captum's deconvnet and guided backpropagation are an
oracle for those; the others are compared under the ``gradient`` rule only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import torch
from oracle_nets import AddBlock, CatBlock, with_random_batch_norm
from oracle_nets import module_outputs as oracle_module_outputs
from torch import nn

from onnxdeconv import load_model, prepare

SIZE = 32


def _conv_bn(cin: int, cout: int, k: int, act: nn.Module | None, **kw: int) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=kw.pop("padding", k // 2), bias=False, **kw),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class MulBlock(nn.Module):
    """``x * gate`` as a module, so that the gated map is a layer captum can select."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return x * gate


# --- AlexNet -------------------------------------------------------------------------------------


class AlexNet(nn.Module):
    """AlexNet: large strided first conv, LRN after the first two ReLUs, overlapping 3x3/2 pools,
    a ``x.view(x.size(0), -1)`` flatten and a dropout/Linear/ReLU head.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)  # 32 -> 16
        self.relu1 = nn.ReLU()
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0)
        self.pool1 = nn.MaxPool2d(3, stride=2)  # 16 -> 7
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.lrn2 = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)
        self.pool2 = nn.MaxPool2d(3, stride=2)  # 7 -> 3
        self.conv3 = nn.Conv2d(12, 16, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu4 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(16 * 3 * 3, 24)
        self.relu5 = nn.ReLU()
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.lrn1(self.relu1(self.conv1(x))))
        x = self.pool2(self.lrn2(self.relu2(self.conv2(x))))
        x = self.relu4(self.conv4(self.relu3(self.conv3(x))))
        x = x.view(x.size(0), -1)
        return self.fc2(self.relu5(self.fc1(self.drop(x))))


# --- VGG with BN ---------------------------------------------------------------------------------


class VGG(nn.Module):
    """VGG: conv-BN-ReLU pairs, 2x2 max pools, ``torch.flatten`` and a two-layer head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 8, 3, nn.ReLU()),  # 0
            _conv_bn(8, 8, 3, nn.ReLU()),  # 1
            nn.MaxPool2d(2),  # 2: 32 -> 16
            _conv_bn(8, 16, 3, nn.ReLU()),  # 3
            nn.MaxPool2d(2),  # 4: 16 -> 8
            _conv_bn(16, 16, 3, nn.ReLU()),  # 5
            nn.MaxPool2d(2),  # 6: 8 -> 4
        )
        self.fc1 = nn.Linear(16 * 4 * 4, 24)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(self.relu(self.fc1(x)))


# --- ResNet --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Residual basic block with an identity or a strided 1x1 conv-BN downsample shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, nn.ReLU(), stride=stride)
        self.conv2 = _conv_bn(cout, cout, 3, None)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = _conv_bn(cin, cout, 1, None, stride=stride, padding=0)
        self.add = AddBlock()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.add(self.conv2(self.conv1(x)), self.downsample(x)))


class ResNet(nn.Module):
    """ResNet: conv-BN-ReLU stem, padded 3x3/2 max pool, basic blocks, GAP, ``flatten``, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # 32 -> 16
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)  # 16 -> 8
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- MobileNetV2 ---------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise 3x3 (ReLU6), linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.conv = nn.Sequential(
            _conv_bn(cin, hidden, 1, nn.ReLU6()),
            _conv_bn(hidden, hidden, 3, nn.ReLU6(), stride=stride, groups=hidden),
            _conv_bn(hidden, cout, 1, None),
        )
        self.residual = stride == 1 and cin == cout
        self.add = AddBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.add(x, y) if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2: ReLU6 (exported as Clip), inverted residuals with depthwise convs, GAP, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 8, 3, nn.ReLU6(), stride=2),  # 32 -> 16
            InvertedResidual(8, 8, 1, 2),
            InvertedResidual(8, 12, 2, 3),  # 16 -> 8
            InvertedResidual(12, 12, 1, 3),
            _conv_bn(12, 24, 1, nn.ReLU6()),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(self.drop(torch.flatten(x, 1)))


# --- MobileNetV3 ---------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: GAP, 1x1 reduce, activation, 1x1 expand, gate, ``x * gate``."""

    def __init__(self, channels: int, squeeze: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate
        self.mul = MulBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mul(x, self.gate(self.fc2(self.act(self.fc1(self.pool(x))))))


class MobileNetV3(nn.Module):
    """MobileNetV3: Hardswish stem, a depthwise block with a Hardsigmoid SE gate, Hardswish head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, nn.Hardswish(), stride=2)  # 32 -> 16
        self.expand = _conv_bn(8, 16, 1, nn.Hardswish())
        self.dw = _conv_bn(16, 16, 3, nn.ReLU(), stride=2, groups=16)  # 16 -> 8
        self.se = SqueezeExcite(16, 4, nn.ReLU(), nn.Hardsigmoid())
        self.project = _conv_bn(16, 12, 1, None)
        self.last = _conv_bn(12, 24, 1, nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(24, 32)
        self.act = nn.Hardswish()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(self.se(self.dw(self.expand(self.stem(x)))))
        x = torch.flatten(self.pool(self.last(x)), 1)
        return self.fc2(self.act(self.fc1(x)))


# --- EfficientNet --------------------------------------------------------------------------------


class MBConv(nn.Module):
    """EfficientNet MBConv: SiLU expand, SiLU depthwise, SE (SiLU, Sigmoid), linear projection."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        hidden = cin * 2
        self.expand = _conv_bn(cin, hidden, 1, nn.SiLU())
        self.dw = _conv_bn(hidden, hidden, 3, nn.SiLU(), stride=stride, groups=hidden)
        self.se = SqueezeExcite(hidden, 4, nn.SiLU(), nn.Sigmoid())
        self.project = _conv_bn(hidden, cout, 1, None)
        self.residual = stride == 1 and cin == cout
        self.add = AddBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return self.add(x, y) if self.residual else y


class EfficientNet(nn.Module):
    """EfficientNet-style: SiLU stem, MBConv blocks with SE and a residual, SiLU head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, nn.SiLU(), stride=2)  # 32 -> 16
        self.block1 = MBConv(8, 8, 1)
        self.block2 = MBConv(8, 16, 2)  # 16 -> 8
        self.head = _conv_bn(16, 24, 1, nn.SiLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# --- SqueezeNet ----------------------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return self.cat(self.expand1(s), self.expand3(s))


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1: ceil-mode 3x3/2 pools, fire modules, conv classifier, GAP, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),  # 0: 32 -> 15
            nn.ReLU(),  # 1
            nn.MaxPool2d(3, stride=2, ceil_mode=True),  # 2: 15 -> 7
            Fire(8, 4, 6),  # 3
            Fire(12, 4, 6),  # 4
            nn.MaxPool2d(3, stride=2, ceil_mode=True),  # 5: 7 -> 3
            Fire(12, 6, 8),  # 6
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(16, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- GoogLeNet -----------------------------------------------------------------------------------


class InceptionBlock(nn.Module):
    """Inception: 1x1, 1x1-3x3, 1x1-3x3-3x3 branches, and a 3x3/1 pool then 1x1, concatenated.

    ``avg`` picks a ``count_include_pad`` average pool (Inception v3) instead of GoogLeNet's
    ceil-mode max pool for the pool branch.
    """

    def __init__(self, cin: int, avg: bool) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU())
        self.b2 = nn.Sequential(
            nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        )
        self.b3 = nn.Sequential(
            nn.Conv2d(cin, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
        )
        pool: nn.Module = (
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
            if avg
            else nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        )
        self.b4 = nn.Sequential(pool, nn.Conv2d(cin, 4, 1), nn.ReLU())
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cat(self.b1(x), self.b2(x), self.b3(x), self.b4(x))


class GoogLeNet(nn.Module):
    """GoogLeNet/Inception: stem, ceil-mode pool, two inception blocks, GAP, dropout, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())  # 32 -> 15
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 15 -> 7
        self.inc1 = InceptionBlock(8, avg=False)
        self.inc2 = InceptionBlock(18, avg=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(18, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc2(self.inc1(self.pool1(self.stem(x))))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


# --- DenseNet ------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, concatenated to its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, 2 * growth, 1, bias=False),
            nn.BatchNorm2d(2 * growth),
            nn.ReLU(),
            nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False),
        )
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cat(x, self.body(x))


class DenseNet(nn.Module):
    """DenseNet: dense layers, a BN-ReLU-Conv-AvgPool transition, final BN-ReLU, GAP, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)  # 32 -> 16
        self.block1 = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4))
        self.transition = nn.Sequential(
            nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2)
        )  # 16 -> 8
        self.block2 = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4))
        self.norm = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        x = nn.functional.adaptive_avg_pool2d(self.relu(self.norm(x)), 1)
        return self.fc(torch.flatten(x, 1))


# --- ShuffleNetV2 --------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Torchvision's shuffle: ``view`` to groups, ``transpose``, ``view`` back, by ``x.size()``."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: ``chunk`` in two (stride 1) or two strided branches, concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _conv_bn(cin, cin, 3, None, stride=stride, groups=cin),
                _conv_bn(cin, half, 1, nn.ReLU()),
            )
        branch_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            _conv_bn(branch_in, half, 1, nn.ReLU()),
            _conv_bn(half, half, 3, None, stride=stride, groups=half),
            _conv_bn(half, half, 1, nn.ReLU()),
        )
        self.cat = CatBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = self.cat(x1, self.branch2(x2))
        else:
            out = self.cat(self.branch1(x), self.branch2(x))
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: stem and max pool, strided and chunked units, 1x1 conv, mean pool, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, nn.ReLU(), stride=2)  # 32 -> 16
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # 16 -> 8
        self.stage = nn.Sequential(ShuffleBlock(8, 16, 2), ShuffleBlock(16, 16, 1))  # 8 -> 4
        self.last = _conv_bn(16, 24, 1, nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.stage(self.maxpool(self.stem(x))))
        return self.fc(x.mean([2, 3]))


# --- YOLO-like detector --------------------------------------------------------------------------


class Decode(nn.Module):
    """YOLO output decoding: sigmoid on the box centres and on objectness and classes."""

    def __init__(self, anchors: int) -> None:
        super().__init__()
        self.anchors = anchors
        self.sigmoid_xy = nn.Sigmoid()
        self.sigmoid_rest = nn.Sigmoid()

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        xy = raw[:, : 2 * self.anchors]
        wh = raw[:, 2 * self.anchors : 4 * self.anchors]
        rest = raw[:, 4 * self.anchors :]
        return torch.cat([self.sigmoid_xy(xy), wh, self.sigmoid_rest(rest)], 1)


class Yolo(nn.Module):
    """A small YOLO-style detector: LeakyReLU backbone, a CSP-like ``split``, an FPN with
    nearest ``Upsample`` and ``Concat``, a channel ``Slice`` and a ``Sigmoid`` head per scale.
    """

    def __init__(self, anchors: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.anchors, self.outputs = anchors, 5 + classes
        act = nn.LeakyReLU(0.1)
        self.stem = _conv_bn(3, 8, 3, act, stride=2)  # 32 -> 16
        self.down1 = _conv_bn(8, 16, 3, nn.LeakyReLU(0.1), stride=2)  # 16 -> 8
        self.csp = _conv_bn(8, 8, 3, nn.LeakyReLU(0.1))
        self.down2 = _conv_bn(16, 16, 3, nn.LeakyReLU(0.1), stride=2)  # 8 -> 4
        self.lateral = _conv_bn(16, 8, 1, nn.LeakyReLU(0.1))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")  # 4 -> 8
        self.fuse = _conv_bn(24, 16, 3, nn.LeakyReLU(0.1))
        self.head_small = nn.Conv2d(16, anchors * self.outputs, 1)
        self.head_large = nn.Conv2d(16, anchors * self.outputs, 1)
        self.decode_small = Decode(anchors)
        self.decode_large = Decode(anchors)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.down1(self.stem(x))
        part1, part2 = torch.split(x, [8, 8], dim=1)
        c3 = torch.cat([part1, self.csp(part2)], 1)
        c4 = self.down2(c3)
        fused = self.fuse(torch.cat([self.up(self.lateral(c4)), c3], 1))
        return self.decode_large(self.head_large(c4)), self.decode_small(self.head_small(fused))


# --- U-Net decoder -------------------------------------------------------------------------------


class UNet(nn.Module):
    """U-Net-like: two-level encoder, ``ConvTranspose2d`` upsampling, skip ``Concat``, 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)  # 32 -> 16
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)  # 16 -> 32
        self.relu_up = nn.ReLU()
        self.cat = CatBlock()
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        deep = self.enc2(self.pool(skip))
        up = self.relu_up(self.up(deep))
        return self.head(self.dec(self.cat(up, skip)))


ZOO: dict[str, type[nn.Module]] = {
    "alexnet": AlexNet,
    "vgg": VGG,
    "resnet": ResNet,
    "mobilenetv2": MobileNetV2,
    "mobilenetv3": MobileNetV3,
    "efficientnet": EfficientNet,
    "squeezenet": SqueezeNet,
    "googlenet": GoogLeNet,
    "densenet": DenseNet,
    "shufflenet": ShuffleNetV2,
    "yolo": Yolo,
    "unet": UNet,
}

#: Nets whose only nonlinearities are ReLU and max pooling: captum's deconvnet and guided
#: backpropagation override exactly those, so all three rules have an oracle.
RELU_ONLY = (
    "alexnet",
    "vgg",
    "resnet",
    "squeezenet",
    "googlenet",
    "densenet",
    "shufflenet",
    "unet",
)


def build(name: str, seed: int = 0) -> nn.Module:
    """The net with random weights from ``seed`` and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    return with_random_batch_norm(ZOO[name]())


def make_input(batch: int = 2, size: int = SIZE, seed: int = 1) -> np.ndarray:
    """Random normal images ``[batch, 3, size, size]`` float32."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


# --- export --------------------------------------------------------------------------------------

#: Export variants: exporter, whether the batch and spatial axes are dynamic, opset. The dynamic
#: legacy exports are at opsets 11 and 9, where ``x.size()`` arithmetic stays in the graph as
#: Shape chains (and opset 9 has Upsample, attribute pads and slices); the static one at opset 17,
#: where the exporter folds it.
VARIANTS: dict[str, tuple[str, bool, int]] = {
    "legacy": ("legacy", False, 17),
    "legacy-dynamic": ("legacy", True, 11),
    "legacy-dynamic-opset9": ("legacy", True, 9),
    "dynamo": ("dynamo", False, 18),
    "dynamo-dynamic": ("dynamo", True, 18),
}
#: Nets the TorchScript exporter refuses at opset 9 with dynamic sizes: ceil-mode pools
#: ("get_pool_ceil_padding, input size not accessible") and ``chunk`` ("prim::ConstantChunk,
#: unknown dimension size").
OPSET9_UNEXPORTABLE = ("squeezenet", "googlenet", "shufflenet")


def exports(name: str) -> list[str]:
    """The export variants of net ``name``."""
    return [v for v in VARIANTS if not (v.endswith("opset9") and name in OPSET9_UNEXPORTABLE)]


#: Variants whose exports are stored in ``tests/data/zoo`` (the dynamo exporter is slow).
DYNAMO_VARIANTS = ("dynamo", "dynamo-dynamic")


def export(net: nn.Module, name: str, variant: str, path: Path) -> onnx.ModelProto:
    """Export ``net`` in ``variant`` (see :data:`VARIANTS`) to ``path`` and load it back."""
    exporter, dynamic, opset = VARIANTS[variant]
    example = (torch.from_numpy(make_input(batch=2)),)
    outputs = ["out0", "out1"] if name == "yolo" else ["out0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            axes = {"input": {0: "N", 2: "H", 3: "W"}} if dynamic else None
            torch.onnx.export(
                net,
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=outputs,
                dynamic_axes=axes,
            )
        else:
            shapes = None
            if dynamic:
                dim = torch.export.Dim
                shapes = {
                    "x": {
                        0: dim("N", min=1, max=64),
                        2: dim("H", min=16, max=512),
                        3: dim("W", min=16, max=512),
                    }
                }
            program = torch.onnx.export(
                net,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=outputs,
                dynamic_shapes=shapes,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


# --- torch module -> ONNX tensor -----------------------------------------------------------------


def module_outputs(net: nn.Module, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The forward output of each named submodule of ``net`` on the array ``x``."""
    return oracle_module_outputs(net, torch.from_numpy(x), names)


def candidate_values(
    model: onnx.ModelProto, x: np.ndarray, input_shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Every candidate layer of ``model`` (prepared for ``input_shape``) evaluated on ``x``."""
    prepared = prepare(load_model(model), input_shape)
    names = list(prepared.candidates)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(prepared.loaded.model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, prepared.info[n].elem_type, None) for n in names
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = session.run(names, {prepared.loaded.input_name: x})
    return dict(zip(names, values, strict=True))


def match_modules(values: dict[str, np.ndarray], wanted: dict[str, np.ndarray]) -> dict[str, str]:
    """Module name -> the first candidate tensor (graph order) whose value equals its output."""
    found = {}
    for module, ref in wanted.items():
        tol = 1e-4 * max(float(np.abs(ref).max()), 1e-6)
        for tensor, value in values.items():
            if value.shape == ref.shape and np.allclose(value, ref, rtol=1e-4, atol=tol):
                found[module] = tensor
                break
        else:
            raise LookupError(f"no tensor of the ONNX model matches module '{module}'")
    return found


# --- the override oracle -------------------------------------------------------------------------

#: The activation modules of the zoo; under ``deconvnet`` and ``guided`` each passes the rectified
#: signal, guided also masked where its derivative is not positive.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid)


class _Override(torch.autograd.Function):
    """An activation whose backward pass applies the deconvnet or guided rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: nn.Module, guided: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.module, ctx.guided = module, guided
        with torch.no_grad():
            return type(module).forward(module, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        passed = grad.clamp(min=0)
        if ctx.guided:
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                probe = x.detach().requires_grad_()
                # Elementwise, so the gradient of the sum is the local derivative f'(x).
                (slope,) = torch.autograd.grad(
                    type(ctx.module).forward(ctx.module, probe).sum(), probe
                )
            passed = passed * (slope > 0)
        return passed, None, None


@contextmanager
def overridden(net: nn.Module, rule: str) -> Iterator[None]:
    """Give ``net`` the backward pass of ``rule`` (deconvnet or guided), written independently of
    the library: every activation module rectifies the signal (guided: also masks it where its
    derivative is not positive), and every gated product ``MulBlock(x, gate)`` scales the signal
    by the forward gate value and sends nothing into the gate branch.
    """
    guided = rule == "guided"
    patched: list[nn.Module] = []
    for module in net.modules():
        if isinstance(module, ACTIVATIONS):

            def act(x: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
                return cast(torch.Tensor, _Override.apply(x, module, guided))

            module.forward = act  # type: ignore[method-assign,assignment]
            patched.append(module)
        elif isinstance(module, MulBlock):

            def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
                return x * gate.detach()

            module.forward = gated  # type: ignore[method-assign,assignment]
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def override_references(
    net: nn.Module, layer: str, rule: str, x: np.ndarray, picks: Sequence[Any]
) -> np.ndarray:
    """The projection of each pick of ``layer`` under ``rule`` by torch autograd with
    :func:`overridden` activations and gates, times the activation: ``[K, C, H, W]``.

    Row ``k`` is a copy of image ``picks[k].image``; samples are independent in eval mode, so the
    gradient of the sum of each row's own neuron gives every row its own projection.
    """
    module = dict(net.named_modules())[layer]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    inputs = torch.from_numpy(x[[p.image for p in picks]].copy()).requires_grad_()
    try:
        with overridden(net, rule):
            net(inputs)
    finally:
        handle.remove()
    out = captured[0]
    rows = torch.arange(len(picks))
    index = [torch.tensor([p.channel for p in picks])]
    index += [torch.tensor(list(axis)) for axis in zip(*(p.position for p in picks), strict=True)]
    (grad,) = torch.autograd.grad(out[(rows, *index)].sum(), inputs)
    values = np.array([p.value for p in picks], np.float32).reshape(-1, 1, 1, 1)
    return grad.detach().numpy() * values
