"""Ways to show a check report: a table, JSON, JUnit XML and GitHub Actions annotations."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from onnxdeconv.check.run import CheckReport
from onnxdeconv.outputs import write_json, write_text

SYMBOLS = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}


def summary_table(report: CheckReport, verbose: bool = False) -> str:
    """A human summary: one line per check group and subject that did not pass (all if verbose)."""
    lines = []
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    order = ("pass", "fail", "warn", "skip")
    for finding in report.findings:
        groups[finding.check][order.index(finding.status)] += 1
    width = max((len(c) for c in groups), default=5)
    lines.append(f"{'check'.ljust(width)}  pass  fail  warn  skip")
    for check, tally in groups.items():
        lines.append(check.ljust(width) + "".join(f"{n:>6}" for n in tally))
    shown = [f for f in report.findings if verbose or f.status in ("fail", "warn")]
    if shown:
        lines.append("")
    for finding in shown:
        lines.append(
            f"{SYMBOLS[finding.status]:<4}  {finding.check}  {finding.subject}: {finding.message}"
        )
    counts = report.counts()
    lines.append("")
    lines.append(
        f"{report.model}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['warn']} warnings, {counts['skip']} skipped"
    )
    return "\n".join(lines)


def junit_xml(report: CheckReport) -> str:
    """JUnit XML: one test case per finding, failures for failed findings."""
    counts = report.counts()
    suites = ET.Element("testsuites", name="onnxdeconv check")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"onnxdeconv check {report.model}",
        tests=str(len(report.findings)),
        failures=str(counts["fail"]),
        skipped=str(counts["skip"]),
        errors="0",
    )
    for finding in report.findings:
        case = ET.SubElement(
            suite, "testcase", classname=f"onnxdeconv.{finding.check}", name=finding.subject
        )
        if finding.status == "fail":
            ET.SubElement(case, "failure", message=finding.message).text = finding.message
        elif finding.status == "skip":
            ET.SubElement(case, "skipped", message=finding.message)
        elif finding.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {finding.message}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(report: CheckReport) -> list[str]:
    """``::error``/``::warning`` workflow commands for failed and warned findings."""
    lines = []
    for finding in report.findings:
        if finding.status not in ("fail", "warn"):
            continue
        level = "error" if finding.status == "fail" else "warning"
        title = _escape(f"onnxdeconv {finding.check}").replace(",", "%2C").replace(":", "%3A")
        lines.append(f"::{level} title={title}::{_escape(f'{finding.subject}: {finding.message}')}")
    return lines


def write_check_files(
    report: CheckReport,
    *,
    json_path: Path | None = None,
    junit: Path | None = None,
    baseline: Path | None = None,
) -> None:
    """Write the files asked for: the report as JSON and as JUnit XML, and a baseline.

    A baseline holds the run's statistics and top-k projections, to compare a later run with.
    """
    if json_path is not None:
        write_json(json_path, report.to_json())
    if junit is not None:
        write_text(junit, junit_xml(report))
    if baseline is not None:
        write_json(baseline, report.baseline, indent=1)
