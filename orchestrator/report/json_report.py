"""The JSON report: the RunResult as automation reads it, and the JSON Schema that describes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.report.output import redacted, write_atomically
from orchestrator.results import SCHEMA_VERSION, RunResult

SCHEMA_ID = f"https://orchestrator.invalid/schemas/run-result/v{SCHEMA_VERSION}.json"


def report_json(result: RunResult) -> str:
    """The report text: the result with any registered secret scrubbed, indented for humans."""
    return redacted(result).model_dump_json(indent=2) + "\n"


def write_json_report(result: RunResult, path: str | os.PathLike[str]) -> Path:
    return write_atomically(path, report_json(result))


def read_json_report(path: str | os.PathLike[str]) -> RunResult:
    """A report written by `write_json_report`, validated (for `orchestrator report --from FILE`)."""
    return RunResult.model_validate_json(Path(path).read_text(encoding="utf-8"))


def result_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the report as written, `totals` included."""
    schema = RunResult.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }
