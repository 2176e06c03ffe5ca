"""Reports of a run: JSON (with its schema), a JSONL event stream, JUnit XML, an HTML timeline,
Prometheus metrics, the console summary and live progress. Every one scrubs registered secrets
before writing."""

from orchestrator.report.console import LiveProgress, print_summary
from orchestrator.report.events import (
    Event,
    EventStream,
    NodeFinished,
    PhaseEvent,
    RunFinished,
    RunStarted,
    read_events,
)
from orchestrator.report.html import html_timeline, write_html
from orchestrator.report.json_report import read_json_report, report_json, result_schema, write_json_report
from orchestrator.report.junit import junit_xml, write_junit
from orchestrator.report.prometheus import prometheus_text, write_prometheus

__all__ = [
    "Event",
    "EventStream",
    "LiveProgress",
    "NodeFinished",
    "PhaseEvent",
    "RunFinished",
    "RunStarted",
    "html_timeline",
    "junit_xml",
    "print_summary",
    "prometheus_text",
    "read_events",
    "read_json_report",
    "report_json",
    "result_schema",
    "write_html",
    "write_json_report",
    "write_junit",
    "write_prometheus",
]
