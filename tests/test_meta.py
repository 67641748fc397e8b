from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED

TEST_COMMAND = 'pip install -e ".[test]" && pytest'


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme
    assert any(line.strip() == TEST_COMMAND for line in ci.splitlines())


def test_cli_package_lives_under_the_namespace() -> None:
    import onnxdeconv.cli.main as entry

    assert entry.__name__ == "onnxdeconv.cli.main"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'onnxdeconv = "onnxdeconv.cli.main:main"' in pyproject
    assert 'include = ["onnxdeconv*"]' in pyproject


def test_every_rule_has_a_row_in_the_rules_page() -> None:
    from onnxdeconv.deconv.rules import TRANSPOSE_RULES

    page = (ROOT / "docs" / "rules.md").read_text()
    start, end = page.index("# Transpose rules"), page.index("## Activation functions")
    section = page[start:end]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| op ", "| ---")):
            named.update(re.findall(r"\b[A-Z][A-Za-z]+\b", line.split("|")[1]))
    assert sorted(set(TRANSPOSE_RULES) - named) == []


# --- every command: help, a docs page in the site's nav, a row in the README's table ---------

# Commands documented on another command's page.
DOCS_PAGES = {"merge": "commands/features.md"}


def commands() -> list[str]:
    import click

    from onnxdeconv.cli.main import cli

    return cli.list_commands(click.Context(cli))


def nav_pages() -> set[str]:
    # mkdocs.yml holds a !!python/name tag that yaml.safe_load refuses: read the nav as text.
    lines = (ROOT / "mkdocs.yml").read_text().splitlines()
    start = lines.index("nav:") + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"^\S", lines[i])), len(lines))
    return {m.group(1) for line in lines[start:end] if (m := re.search(r":\s*(\S+\.md)$", line))}


@pytest.mark.parametrize("name", commands())
def test_command_has_help_and_a_docs_page_in_the_nav(name: str) -> None:
    from click.testing import CliRunner

    from onnxdeconv.cli.main import cli

    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    page = DOCS_PAGES.get(name, f"commands/{name}.md")
    assert (ROOT / "docs" / page).is_file()
    assert page in nav_pages(), f"docs/{page} is not in the nav of mkdocs.yml"
    assert f"onnxdeconv {name}" in (ROOT / "docs" / page).read_text()


def test_readme_command_table_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[`onnxdeconv (\w+)`\]\(([^)#]+)[^)]*\) \|", readme, re.MULTILINE)
    assert sorted(name for name, _ in rows) == commands()
    for name, link in rows:
        assert (ROOT / link).is_file(), f"the README links {name} to a missing {link}"


def test_every_nav_page_exists() -> None:
    missing = sorted(page for page in nav_pages() if not (ROOT / "docs" / page).is_file())
    assert missing == []


def test_analysis_package_exports_every_entry_point_and_result() -> None:
    import inspect

    import onnxdeconv.analysis as analysis

    assert sorted(analysis.__all__) == sorted(analysis._MODULES)
    for name in analysis.__all__:
        value = getattr(analysis, name)
        # Results are dataclasses that serialise themselves; entry points take `prepared` first.
        if isinstance(value, type) and name.endswith(("Result", "Report", "Curves", "State")):
            assert callable(getattr(value, "to_json", None)), name
        elif not isinstance(value, type):
            first = next(iter(inspect.signature(value).parameters))
            assert first in ("prepared", "checkpoints"), (name, first)


def test_library_errors_do_not_name_command_line_options() -> None:
    """Messages raised below cli/ speak the library's words; the CLI adds the option as a hint."""
    import ast
    import re

    flag = re.compile(r"(^|[\s(])--[a-z]")
    offenders = []
    for path in sorted((ROOT / "onnxdeconv").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "onnxdeconv").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for part in ast.walk(node.exc):
                text = part.value if isinstance(part, ast.Constant) else None
                if isinstance(text, str) and flag.search(text):
                    offenders.append(f"{path.name}:{node.lineno}: {text}")
    assert offenders == []


def test_shared_data_comes_from_onnxdeconv_shared_and_its_absence_fails_under_ci(
    tmp_path: Path,
) -> None:
    """ONNXDECONV_SHARED names the shared data; without it a test skips saying how to give it."""
    needs_shared = "tests/test_cli.py::test_layers_reports_unprojectable_with_reason"

    def pytest_with(shared: Path, ci: bool) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env |= {"ONNXDECONV_SHARED": str(shared), **({"CI": "true"} if ci else {})}
        command = [
            sys.executable,
            "-m",
            "pytest",
            needs_shared,
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)

    missing = tmp_path / "nowhere"
    skipped = pytest_with(missing, ci=False)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "set ONNXDECONV_SHARED to a folder with models/squeezenet1.1-fp16" in skipped.stdout
    failed = pytest_with(missing, ci=True)
    assert failed.returncode == 1 and "CI is set, so this fails" in failed.stdout, failed.stdout
    if SHARED.is_dir():  # the variable is what the tests read: another path to the same data
        (tmp_path / "elsewhere").symlink_to(SHARED.resolve(), target_is_directory=True)
        found = pytest_with(tmp_path / "elsewhere", ci=True)
        assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout


def test_the_shared_data_variable_is_documented() -> None:
    for page in ("README.md", "docs/getting-started.md"):
        assert "ONNXDECONV_SHARED" in (ROOT / page).read_text(), page
