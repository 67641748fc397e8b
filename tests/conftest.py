from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DIGITNET = ROOT / "models" / "digitnet.onnx"
DIGIT_7 = ROOT / "models" / "examples" / "digit_7.png"
SQUEEZENET = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"
IMAGES = SHARED / "images"


@pytest.fixture(scope="session")
def squeezenet_path() -> Path:
    if not SQUEEZENET.exists():
        pytest.skip(f"shared SqueezeNet not found at {SQUEEZENET}")
    return SQUEEZENET


@pytest.fixture(scope="session")
def images_dir() -> Path:
    if not IMAGES.exists():
        pytest.skip(f"shared images not found at {IMAGES}")
    return IMAGES
