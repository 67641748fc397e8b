"""Shared test paths and fixtures.

The real SqueezeNet and the photos are not in the repository: the tests read them from the folder
that ``ONNXDECONV_SHARED`` names (default: ``../shared`` beside the repository), which holds
``models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx`` and ``images/``. Without them the tests that
need them skip, except under CI (the ``CI`` environment variable set), where they must run and so
fail.

The graph cache (``onnxdeconv.cache``) lives in a temporary folder for the session, so that
tests neither read nor fill the user's cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDECONV_SHARED") or ROOT.parent / "shared").expanduser()
DIGITNET = ROOT / "models" / "digitnet.onnx"
DIGIT_7 = ROOT / "models" / "examples" / "digit_7.png"
SQUEEZENET = SHARED / "models" / "squeezenet1.1-fp16" / "SqueezeNet_fp16.onnx"
IMAGES = SHARED / "images"
#: How to provide the shared data, for the skip messages.
HOW_TO_SHARE = (
    "set ONNXDECONV_SHARED to a folder with models/squeezenet1.1-fp16/SqueezeNet_fp16.onnx "
    "and images/"
)


_CACHE_DIR = tempfile.mkdtemp(prefix="onnxdeconv-test-cache-")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ONNXDECONV_CACHE_DIR"] = _CACHE_DIR
    os.environ.pop("ONNXDECONV_NO_CACHE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose data is missing; under CI, where every test must run, fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def shared_missing(what: str, path: Path) -> NoReturn:
    """Skip (fail under CI) a test that needs the shared ``what`` at ``path``, saying how to."""
    unavailable(f"{what} not found at {path}: {HOW_TO_SHARE}")


@pytest.fixture(scope="session")
def squeezenet_path() -> Path:
    if not SQUEEZENET.is_file():
        shared_missing("the shared SqueezeNet", SQUEEZENET)
    return SQUEEZENET


@pytest.fixture(scope="session")
def images_dir() -> Path:
    if not IMAGES.is_dir():
        shared_missing("the shared images", IMAGES)
    return IMAGES
