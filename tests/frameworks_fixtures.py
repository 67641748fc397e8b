"""Fixtures for tests/test_frameworks.py: the committed framework exports and the PaddleOCR models.

The three PaddlePaddle models ship inside the ``rapidocr-onnxruntime`` wheel (third-party, 16 MB,
so not committed). The wheel is fetched once with ``pip download --no-deps`` (installing it would
pull a second onnxruntime) into ``~/.cache/onnxdeconv-tests`` (or ``$ONNXDECONV_TEST_CACHE``),
and the models are read out of it. Without network the tests that need them skip, except under
CI (the ``CI`` environment variable set), where they must run and so fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import unavailable

from onnxdeconv import Layer, PreparedModel, Projector

DATA = Path(__file__).resolve().parent / "data"
RAPIDOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
RAPIDOCR_MODELS = {
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
}


def cache_dir() -> Path:
    """Where downloaded test models are kept between runs."""
    default = Path.home() / ".cache" / "onnxdeconv-tests"
    return Path(os.environ.get("ONNXDECONV_TEST_CACHE", default))


def fetch_rapidocr_models(folder: Path) -> dict[str, Path]:
    """Download the wheel into ``folder`` unless it is there, and extract the three models."""
    target = folder / "rapidocr"
    paths = {key: target / name for key, name in RAPIDOCR_MODELS.items()}
    if all(path.is_file() for path in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", RAPIDOCR_WHEEL]
        try:
            subprocess.run(
                [*command, "-d", str(folder)], check=True, capture_output=True, timeout=300
            )
        except (subprocess.SubprocessError, OSError) as exc:
            unavailable(f"cannot download {RAPIDOCR_WHEEL}: {exc}")
        wheels = sorted(folder.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
        if not wheels:
            unavailable(f"pip download of {RAPIDOCR_WHEEL} left no wheel in {folder}")
    target.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for key, name in RAPIDOCR_MODELS.items():
            member = f"rapidocr_onnxruntime/models/{name}"
            partial = paths[key].with_suffix(".part")
            partial.write_bytes(wheel.read(member))
            partial.replace(paths[key])  # a run that stops half-way leaves no truncated model
    return paths


@pytest.fixture(scope="session")
def rapidocr_models() -> dict[str, Path]:
    """``{"cls", "det", "rec"}`` -> path of the PaddleOCR model read out of the wheel."""
    return fetch_rapidocr_models(cache_dir())


#: Set to 1 to project from every projectable layer of the PaddleOCR models, not an even spread
#: (about 2 minutes for the three models on 2 cores; .ci/run sets it).
ALL_LAYERS = os.environ.get("ONNXDECONV_ALL_LAYERS") == "1"
UNSUPPORTED = re.compile(r"cannot project through node '[^']+' \((\w+)\)")


def spread(items: list[Layer], count: int) -> list[Layer]:
    """``count`` items evenly spread over ``items``, first and last included (all of them when
    :data:`ALL_LAYERS` is set)."""
    if ALL_LAYERS or len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def project_each(prepared: PreparedModel, layers: list[Layer], seed: int = 0) -> None:
    """Project the strongest activation of each layer for one random input in [-1, 1]."""
    shape = prepared.input_shape
    x = np.random.default_rng(seed).uniform(-1, 1, (1, *shape)).astype(np.float32)
    for layer in layers:
        projector = Projector(prepared, layer=layer.name, device="cpu")
        forward = projector.forward(x)
        projection = projector.project(forward, projector.strongest(forward, top=1))
        assert projection.shape == (1, *shape), layer.alias
        assert projection.dtype == np.float32, layer.alias
        assert np.isfinite(projection).all(), layer.alias


def refused_op(layer: Layer) -> str:
    """The op type that the reason of an unprojectable layer names (and it must name one)."""
    match = UNSUPPORTED.search(layer.reason)
    assert match, f"{layer.alias}: the reason does not name the node and op: {layer.reason}"
    return match.group(1)
