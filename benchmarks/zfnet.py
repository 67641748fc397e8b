"""A ZFNet-sized convnet (Zeiler & Fergus 2014, table 1 / fig. 3) for benchmarks.

Shapes at 224x224 follow the paper exactly: conv1 110x110, pool1 55x55, conv2 26x26, pool2 13x13,
conv3..conv5 13x13, pool5 6x6 -> 9216 -> 4096 -> 4096 -> 1000. The rectifiers are ``nn.ReLU``
modules so that captum can hook them; the weights are random (seeded Kaiming init), not trained.

Everything this module writes goes into a work directory given by the caller, never into the repo.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

#: The ReLU module after conv5; its output is the layer the benchmark projects from.
LAYER_MODULE = "relu5"
#: The ONNX tensor name the legacy exporter gives that module's output.
LAYER_TENSOR = "/relu5/Relu_output_0"
INPUT_SIZE = 224
ONNX_NAME = "zfnet.onnx"
STATE_NAME = "zfnet.pt"


def _layers() -> OrderedDict[str, nn.Module]:
    return OrderedDict(
        conv1=nn.Conv2d(3, 96, 7, stride=2, padding=1),  # 224 -> 110
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(3, stride=2, padding=1),  # 110 -> 55 (overlapping)
        conv2=nn.Conv2d(96, 256, 5, stride=2),  # 55 -> 26
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(3, stride=2, padding=1),  # 26 -> 13
        conv3=nn.Conv2d(256, 384, 3, padding=1),
        relu3=nn.ReLU(),
        conv4=nn.Conv2d(384, 384, 3, padding=1),
        relu4=nn.ReLU(),
        conv5=nn.Conv2d(384, 256, 3, padding=1),
        relu5=nn.ReLU(),
        pool5=nn.MaxPool2d(3, stride=2),  # 13 -> 6
        flatten=nn.Flatten(),
        fc6=nn.Linear(256 * 6 * 6, 4096),
        relu6=nn.ReLU(),
        drop6=nn.Dropout(0.5),
        fc7=nn.Linear(4096, 4096),
        relu7=nn.ReLU(),
        drop7=nn.Dropout(0.5),
        fc8=nn.Linear(4096, 1000),
    )


def build(seed: int = 0, init: bool = True) -> nn.Sequential:
    """Build the ZFNet-sized model in eval mode.

    Args:
        seed: Seed of the Kaiming initialisation.
        init: Initialise the weights; with False the parameters are created on the ``meta``
            device (no memory, no init) and must be filled with ``load_state_dict(assign=True)``.
    """
    if not init:
        with torch.device("meta"):
            return nn.Sequential(_layers()).eval()
    torch.manual_seed(seed)
    model = nn.Sequential(_layers())
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.normal_(module.bias, std=0.01)
    return model.eval()


def load(state_path: str | Path) -> nn.Sequential:
    """Build the model without initialising it and load the saved state dict (memory-mapped)."""
    model = build(init=False)
    state = torch.load(state_path, mmap=True, weights_only=True)
    model.load_state_dict(state, assign=True)
    return model.eval()


def export(workdir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Build the model, export it to ONNX (legacy exporter) and save its state dict.

    Returns:
        The paths of the ``.onnx`` file and of the state dict, both inside ``workdir``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = build(seed)
    onnx_path, state_path = workdir / ONNX_NAME, workdir / STATE_NAME
    torch.save(model.state_dict(), state_path)
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(
        model,
        (dummy,),
        str(onnx_path),
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    return onnx_path, state_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="directory for zfnet.onnx and zfnet.pt (not the repo)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    onnx_path, state_path = export(args.workdir, args.seed)
    print(onnx_path, state_path)


if __name__ == "__main__":
    main()
