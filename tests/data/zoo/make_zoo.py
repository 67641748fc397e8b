"""Regenerate the dynamo (torch.export) exports of the zoo nets in this folder.

The legacy (TorchScript) exports take well under a second each, so tests/test_zoo.py makes them
itself; the dynamo exporter takes several seconds per net, so its exports are kept here. The nets
and their random weights come from ``tests/zoo_nets.py`` (seeded), and test_zoo.py checks that
each file still computes what its net computes.

    python tests/data/zoo/make_zoo.py          # all nets
    python tests/data/zoo/make_zoo.py vgg unet # some

Made with torch 2.13.0 (CPU), onnxscript 0.7, onnx 1.23: see VERSIONS.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import onnx  # noqa: E402
import onnxscript  # noqa: E402
import torch  # noqa: E402
from zoo_nets import DYNAMO_VARIANTS, ZOO, build, export  # noqa: E402


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names or list(ZOO):
        net = build(name)
        for variant in DYNAMO_VARIANTS:
            path = HERE / f"{name}-{variant}.onnx"
            export(net, name, variant, path)
            print(f"wrote {path.name} ({path.stat().st_size // 1024} KB)")
    versions = (
        f"torch {torch.__version__}\nonnxscript {onnxscript.__version__}\nonnx {onnx.__version__}\n"
    )
    (HERE / "VERSIONS.txt").write_text(versions)


if __name__ == "__main__":
    main(sys.argv[1:])
