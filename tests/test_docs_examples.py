"""Run the code examples of README.md and docs/**/*.md, so that they stay true.

A marker is an HTML comment on the line before a fenced block; it does not show when rendered:

- ``<!-- docs-test: run -->`` before a ``bash`` block: run it with ``bash -euo pipefail``.
- ``<!-- docs-test: skip REASON -->`` before a ``python`` block: do not run it, for REASON.
- ``<!-- docs-test: needs-shared -->`` before a ``python`` or ``bash`` block: run it only where the
  shared SqueezeNet and photos are (``$ONNXDECONV_SHARED``, default ``../shared``), skip it
  elsewhere (fail it under CI).
- ``<!-- docs-test: check-config -->`` before a ``toml`` block: it must load as the configuration of
  ``onnxdeconv check`` and equal the defaults.

Every ``python`` block runs unless it carries ``skip`` or ``needs-shared``. ``bash`` blocks run only
when marked: the others install packages or name placeholder files (``my_model.onnx``).

Each example runs in its own temporary folder, which links ``models``, ``docs``, ``examples`` and
``tests`` from the repository: paths read as from the repository root, files are written to the
temporary folder. Shell examples call ``onnxdeconv`` through a shim that runs this checkout's code.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, shared_missing

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINKED = ("models", "docs", "examples", "tests")
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*([\w-]+)\s*(.*?)\s*-->$")
# Which markers each language may carry.
MARKERS = {
    "python": {"skip", "needs-shared"},
    "bash": {"run", "needs-shared"},
    "toml": {"check-config"},
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document, and the marker on the line before it."""

    path: Path
    line: int
    language: str
    code: str
    marker: str | None
    reason: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks that start at column 0 (blocks indented in lists are data, not code)."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before].strip()) if before >= 0 else None
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                language=fence.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                marker=marker.group(1) if marker else None,
                reason=marker.group(2) if marker else "",
            )
        )
        index = end + 1
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in read_blocks(path)]
PYTHON = [block for block in BLOCKS if block.language == "python"]
BASH = [block for block in BLOCKS if block.language == "bash" and block.marker]
CONFIGS = [block for block in BLOCKS if block.marker == "check-config"]


def ids(blocks: list[Block]) -> list[str]:
    return [block.name for block in blocks]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def skip_unless_runnable(block: Block) -> None:
    if block.marker == "skip":
        pytest.skip(f"{block.name} opts out: {block.reason or 'no reason given'}")
    if block.marker == "needs-shared" and not SHARED.is_dir():
        shared_missing(f"the shared data that {block.name} needs", SHARED)


def test_markers_fit_their_blocks() -> None:
    wrong = [
        f"{block.name}: '{block.marker}' on a {block.language or 'plain'} block"
        for block in BLOCKS
        if block.marker and block.marker not in MARKERS.get(block.language, set())
    ]
    assert wrong == []
    assert all(block.reason for block in PYTHON if block.marker == "skip"), "skip needs a reason"


def test_every_marker_precedes_a_block() -> None:
    stray = []
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if MARKER.match(line.strip()):
                following = next((text for text in lines[number + 1 :] if text.strip()), "")
                if not FENCE.match(following):
                    stray.append(f"{path.relative_to(ROOT)}:{number + 1}")
    assert stray == []


def test_the_documents_have_examples() -> None:
    # Guards the parser: a change of fence style would silently leave nothing to run.
    assert len(PYTHON) >= 4 and len(BASH) >= 10 and len(CONFIGS) == 1


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_example(block: Block, workspace: Path) -> None:
    skip_unless_runnable(block)
    code = compile(block.code, block.name, "exec")
    exec(code, {"__name__": "__docs_example__"})


@pytest.mark.parametrize("block", BASH, ids=ids(BASH))
def test_shell_example(block: Block, workspace: Path) -> None:
    skip_unless_runnable(block)
    shims = workspace / ".bin"
    shims.mkdir()
    shim = shims / "onnxdeconv"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m onnxdeconv "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{shims}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{block.code}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", CONFIGS, ids=ids(CONFIGS))
def test_check_config_example_shows_the_defaults(block: Block, workspace: Path) -> None:
    from onnxdeconv.check.config import CheckConfig, load_config

    path = workspace / "check.toml"
    path.write_text(block.code)
    assert load_config(path) == CheckConfig()
