from __future__ import annotations

from conftest import ROOT

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


def test_every_rule_has_a_row_in_the_readme_table() -> None:
    import re

    from onnxdeconv.deconv.rules import TRANSPOSE_RULES

    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("### Transpose rules"), readme.index("#### Activation functions")
    section = readme[start:end]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| op ", "| ---")):
            named.update(re.findall(r"\b[A-Z][A-Za-z]+\b", line.split("|")[1]))
    assert sorted(set(TRANSPOSE_RULES) - named) == []
