"""Ways to show a check report: a table, JSON, JUnit XML and GitHub Actions annotations."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from onnxdeconv.check.run import CheckReport
from onnxdeconv.outputs import write_json, write_text

SYMBOLS = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
#: Characters XML 1.0 cannot hold, even escaped (most C0 controls, surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Control characters, which a terminal may act on; shown as escapes in the summary.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def xml_text(text: str) -> str:
    """``text`` with each character XML 1.0 cannot hold replaced by U+FFFD.

    ElementTree escapes the rest (``]]>`` included).
    """
    return _NOT_XML.sub("\ufffd", text)


def _shown(text: str) -> str:
    r"""``text`` for a terminal: control characters as escapes (``\x1b`` for ESC)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def layers_line(report: CheckReport) -> str:
    """Which layers the adjoint test ran on, and whether they are a sample."""
    tested, total = report.tested_layers, report.projectable_layers
    if not report.sampled:
        return f"adjoint test on all {total} projectable layers"
    return (
        f"adjoint test on a sample of {len(tested)} of {total} projectable layers, spread over "
        f"depth: {', '.join(tested)}"
    )


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
            _shown(
                f"{SYMBOLS[finding.status]:<4}  {finding.check}  {finding.subject}: "
                f"{finding.message}"
            )
        )
    counts = report.counts()
    lines.append("")
    lines.append(_shown(layers_line(report)))
    if report.skipped_images:
        lines.append(f"{len(report.skipped_images)} unreadable images left out")
    lines.append(
        _shown(f"{report.model}: ") + f"{counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['warn']} warnings, {counts['skip']} skipped"
    )
    return "\n".join(lines)


def junit_xml(report: CheckReport) -> str:
    """JUnit XML: one test case per finding, failures for failed findings.

    The suite's properties say which layers the adjoint test ran on (``tested_layers``, a
    comma-separated list), of how many (``projectable_layers``) and whether that was a sample,
    and list the images left out. Characters XML cannot hold become U+FFFD, so the file always
    parses.
    """
    counts = report.counts()
    suites = ET.Element("testsuites", name="onnxdeconv check")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=xml_text(f"onnxdeconv check {report.model}"),
        tests=str(len(report.findings)),
        failures=str(counts["fail"]),
        skipped=str(counts["skip"]),
        errors="0",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("tested_layers", ",".join(report.tested_layers)),
        ("projectable_layers", str(report.projectable_layers)),
        ("sample", str(report.sampled).lower()),
        *(("skipped_image", f"{image}: {why}") for image, why in report.skipped_images),
    ):
        ET.SubElement(properties, "property", name=key, value=xml_text(value))
    for finding in report.findings:
        message = xml_text(finding.message)
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"onnxdeconv.{finding.check}",
            name=xml_text(finding.subject),
        )
        if finding.status == "fail":
            ET.SubElement(case, "failure", message=message).text = message
        elif finding.status == "skip":
            ET.SubElement(case, "skipped", message=message)
        elif finding.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {message}"
    ET.SubElement(suite, "system-out").text = xml_text(layers_line(report))
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
