"""The run as Prometheus metrics: a textfile for node_exporter's textfile collector.

node_exporter reads every `*.prom` file of its directory on each scrape, so the file is replaced
whole (written beside it, then renamed) and made readable by others: the exporter usually runs as
its own user. Alerting rules can then fire on `orchestrator_run_exit_code > 0`, on nodes left out of
rotation, or on a run that has not finished for too long (`time() - orchestrator_run_end_timestamp_seconds`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import get_args

from orchestrator.report.output import budget_of, redacted, write_atomically
from orchestrator.results import NodeOutcome, RunOutcome, RunResult

_PREFIX = "orchestrator"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Families:
    def __init__(self, common: Mapping[str, str]) -> None:
        self._common = dict(common)
        self._lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        full = f"{_PREFIX}_{name}"
        self._lines.append(f"# HELP {full} {help_text}")
        self._lines.append(f"# TYPE {full} gauge")
        for labels, value in samples:
            self._lines.append(f"{full}{_labels(self._common | dict(labels))} {_number(value)}")

    def one(self, name: str, help_text: str, value: float) -> None:
        self.gauge(name, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def prometheus_text(result: RunResult) -> str:
    """The metrics of one run, in the Prometheus text exposition format."""
    result = redacted(result)
    totals = result.totals
    out = _Families({"inventory": result.inventory_path})
    out.gauge(
        "run_info",
        "The run these metrics describe.",
        [({"run_id": result.run_id, "version": result.tool_version}, 1)],
    )
    out.gauge(
        "run_outcome",
        "1 for the run's outcome, 0 for the others (incomplete: no end recorded).",
        [({"outcome": outcome}, int(outcome == result.outcome)) for outcome in get_args(RunOutcome)],
    )
    out.one("run_exit_code", "The process exit code the run's outcome maps to.", int(result.exit_code))
    out.one("run_start_timestamp_seconds", "When the run started (Unix time).", result.started_at.timestamp())
    if result.ended_at is not None:
        out.one("run_end_timestamp_seconds", "When the run ended (Unix time).", result.ended_at.timestamp())
        out.one(
            "run_duration_seconds",
            "How long the run took.",
            (result.ended_at - result.started_at).total_seconds(),
        )
    counts = {
        "done": totals.done,
        "failed": totals.failed,
        "interrupted": totals.interrupted,
        "not_started": totals.not_started,
        "skipped": totals.skipped,
    }
    out.gauge(
        "run_nodes",
        "Nodes of the run by outcome.",
        [({"outcome": outcome}, counts[outcome]) for outcome in get_args(NodeOutcome)],
    )
    out.one("run_nodes_out_of_rotation", "Nodes the run left out of rotation.", totals.out_of_rotation)
    out.one(
        "run_nodes_rotation_unknown",
        "Nodes whose rotation the run did not see confirmed.",
        totals.rotation_unknown,
    )
    spent, tolerated = budget_of(result)
    out.one("run_failure_budget_spent", "Node failures in the run.", spent)
    out.one("run_failure_budget_tolerated", "Node failures the run's budget tolerates.", tolerated)
    out.gauge(
        "node_duration_seconds",
        "How long each node took, from its first phase after preflight (nodes that started).",
        [({"node": node.name}, node.duration_s) for node in result.nodes if node.duration_s is not None],
    )
    out.gauge(
        "node_out_of_rotation",
        "1 when the run left the node out of rotation.",
        [({"node": node.name}, int(node.rotation == "out")) for node in result.nodes],
    )
    return out.text()


def write_prometheus(result: RunResult, path: str | os.PathLike[str]) -> Path:
    # Readable by the exporter's own user; nothing in it is secret (the text is redacted anyway).
    return write_atomically(path, prometheus_text(result), mode=0o644)
