"""Every command that reads many images skips the unreadable ones, lists them, and goes on.

The folder holds two good digits and three bad files: bytes that are no image, a truncated JPEG,
and a float32 TIFF whose values are no pixel intensities (outside 0..1; one in 0..1 is read as
intensities). When no image is readable the command stops with one line and exit 2.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DIGITNET, ROOT
from helpers import run

from onnxdeconv.inputs import read_each, read_image, skip_reason

EXAMPLES = ROOT / "models" / "examples"
CHECKPOINTS = sorted((ROOT / "models" / "digitnet_checkpoints").glob("epoch_*.onnx"))
GOOD = ["digit_3.png", "digit_7.png"]
BAD = ["corrupt.png", "truncated.jpg", "float.tiff"]


def write_bad_images(folder: Path) -> None:
    """The three bad files of the module docstring, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.png").write_bytes(b"\x89PNG but not really" + bytes(range(256)))
    rng = np.random.default_rng(0)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), np.uint8))
    assert ok
    (folder / "truncated.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 3])
    assert cv2.imwrite(
        str(folder / "float.tiff"), (10 * rng.random((16, 16, 3)) - 5).astype(np.float32)
    )


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder of 2 good digits and the 3 bad files."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(EXAMPLES / name, folder / name)
    write_bad_images(folder)
    return folder


@pytest.fixture
def all_bad(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    write_bad_images(folder)
    return folder


def test_read_each_skips_every_kind_of_bad_file(mixed: Path) -> None:
    files = sorted(mixed.iterdir())
    done, skipped = read_each(files, read_image)
    assert [p.name for p, _ in done] == sorted(GOOD)
    assert sorted(p.name for p, _ in skipped) == sorted(BAD)
    assert all("\n" not in why and why for _, why in skipped)


def test_skip_reason_is_one_line() -> None:
    reason = skip_reason(cv2.error("OpenCV(5) loadsave.cpp:80: error: (-215) in 'f'\n\nmore"))
    assert (
        reason
        == "cannot read it as an image (error: OpenCV(5) loadsave.cpp:80: error: (-215) in 'f')"
    )


def listed(err: str, folder: Path) -> set[str]:
    """The bad files the command said it skipped."""
    return {
        name
        for name in BAD
        for line in err.splitlines()
        if line.startswith("skipped ") and str(folder / name) in line.split(": ")[0]
    }


def skipped_in(json_path: Path) -> set[str]:
    document = json.loads(json_path.read_text())
    return {Path(entry["image"]).name for entry in document["skipped_images"]}


def boxes_file(folder: Path) -> Path:
    images = {name: {"top": [6, 2, 22, 10], "bottom": [6, 18, 22, 26]} for name in GOOD + BAD}
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": images}))
    return path


#: Each command on a folder, as (arguments, JSON it writes or None); ``o`` is an output folder.
COMMANDS: dict[str, Callable[[Path, Path], tuple[list[object], Path | None]]] = {
    "check": lambda f, o: (
        ["check", DIGITNET, "--images", f, "--json", o / "c.json"],
        o / "c.json",
    ),
    "evolution": lambda f, o: (
        ["evolution", *CHECKPOINTS[:2], "--images", f, "-o", o / "e.png", "--json", o / "e.json"],
        o / "e.json",
    ),
    "filters": lambda f, o: (
        ["filters", DIGITNET, "--images", f, "-o", o / "f.png", "--json", o / "f.json"],
        o / "f.json",
    ),
    "report": lambda f, o: (["report", DIGITNET, "--images", f, "-o", o / "report"], None),
    "invariance": lambda f, o: (
        ["invariance", DIGITNET, f, "--transform", "translate", "--steps", "3", "-o", o / "i.png"],
        None,
    ),
    "correspondence": lambda f, o: (
        [
            "correspondence",
            DIGITNET,
            "--boxes",
            boxes_file(f),
            "--random",
            "0",
            "-o",
            o / "c.png",
            "--json",
            o / "c.json",
        ],
        o / "c.json",
    ),
    "preprocess": lambda f, o: (["preprocess", DIGITNET, f, "--json"], None),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_skips_and_lists_bad_images(
    command: str, mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, json_path = COMMANDS[command](mixed, tmp_path)
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    if command == "correspondence":
        # Listed by the boxes file's key, beside which the images are found.
        assert {name for name in BAD if f"skipped {name}:" in err} == set(BAD), err
    else:
        assert listed(err, mixed) == set(BAD), err
    if json_path is not None:
        assert skipped_in(json_path) == set(BAD)
    if command == "preprocess":
        document = json.loads(out)
        assert {Path(e["image"]).name for e in document["skipped_images"]} == set(BAD)
        assert [Path(i["image"]).name for i in document["candidates"][0]["images"]] == GOOD
    if command == "report":
        page = (tmp_path / "report" / "index.html").read_text()
        assert all(name in page for name in BAD)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_with_no_readable_image_exits_2_in_one_line(
    command: str, all_bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _ = COMMANDS[command](all_bad, tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "readable" in errors[0] or "could be read" in errors[0], err
