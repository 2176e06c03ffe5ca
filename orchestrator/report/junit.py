"""JUnit XML, so CI systems show a run as a test suite: one test case per node.

A failed or interrupted node is a failure naming the phase and the error; a node that was not
started or was skipped is a skipped test case. Done nodes pass.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.report.output import redacted, write_atomically
from orchestrator.results import NodeResult, RunResult

# Remote output can carry control characters (console escapes) that XML 1.0 cannot hold at all.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(tree: ET.Element) -> None:
    for element in tree.iter():
        if element.text:
            element.text = _NOT_XML.sub("\ufffd", element.text)
        for name, value in element.attrib.items():
            element.set(name, _NOT_XML.sub("\ufffd", value))


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _phase_lines(node: NodeResult) -> str:
    lines = []
    for phase in node.phases:
        took = f"{phase.duration_s:.3f}s" if phase.duration_s is not None else "no end"
        line = f"{phase.phase}: {phase.outcome} after {phase.attempts} attempt(s), {took}"
        if phase.detail:
            line += f" - {phase.detail}"
        lines.append(line)
    lines.append(f"rotation: {node.rotation}")
    if node.left_out_reason:
        lines.append(f"left out: {node.left_out_reason}")
    return "\n".join(lines)


def _failure(node: NodeResult) -> ET.Element:
    phase = node.failed_phase
    error = phase.error if phase is not None else None
    kind = error.kind if error is not None else node.outcome
    where = phase.phase if phase is not None else "no phase"
    message = f"{node.outcome} in {where}: {error.message if error else (node.left_out_reason or kind)}"
    failure = ET.Element("failure", {"type": kind, "message": message})
    details = [message]
    if error is not None:
        details.extend(
            f"{label}: {value}"
            for label, value in (("code", error.code), ("fqid", error.fqid), ("target", error.target))
            if value is not None
        )
    failure.text = "\n".join(details)
    return failure


def _testcase(result: RunResult, node: NodeResult) -> ET.Element:
    case = ET.Element(
        "testcase",
        {
            "name": node.name,
            "classname": f"orchestrator.{node.group or 'ungrouped'}",
            "time": _seconds(node.duration_s),
        },
    )
    if node.outcome in ("failed", "interrupted"):
        case.append(_failure(node))
    elif node.outcome in ("not_started", "skipped"):
        reason = node.left_out_reason or f"{node.outcome.replace('_', ' ')} (run {result.outcome})"
        ET.SubElement(case, "skipped", {"message": reason})
    ET.SubElement(case, "system-out").text = _phase_lines(node)
    return case


def junit_xml(result: RunResult) -> str:
    result = redacted(result)
    totals = result.totals
    duration = (result.ended_at - result.started_at).total_seconds() if result.ended_at else None
    suite = ET.Element(
        "testsuite",
        {
            "name": f"orchestrator run {result.run_id}",
            "tests": str(totals.nodes),
            "failures": str(totals.failed + totals.interrupted),
            "errors": "0",
            "skipped": str(totals.not_started + totals.skipped),
            "time": _seconds(duration),
            "timestamp": result.started_at.isoformat(),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", result.run_id),
        ("inventory", result.inventory_path),
        ("outcome", result.outcome),
        ("exit_code", str(int(result.exit_code))),
        ("tool_version", result.tool_version),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    suite.extend(_testcase(result, node) for node in result.nodes)
    suites = ET.Element("testsuites", {k: suite.attrib[k] for k in ("tests", "failures", "errors", "time")})
    suites.append(suite)
    _xml_safe(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: RunResult, path: str | os.PathLike[str]) -> Path:
    return write_atomically(path, junit_xml(result))
