"""What the operator sees: a live progress display during the run and a summary table at the end.

On a terminal both use rich; otherwise (cron mail, CI logs, a pipe) they print plain lines without
colour or box drawing, so they stay greppable.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.report.output import redacted
from orchestrator.report.progress import LiveProgress
from orchestrator.results import NodeResult, RunResult

_OUTCOME_STYLE = {
    "done": "green",
    "failed": "bold red",
    "interrupted": "bold yellow",
    "not_started": "dim",
    "skipped": "dim",
}
_ROTATION_STYLE = {"in": "green", "out": "bold red", "unknown": "yellow"}
_SUMMARY_COLUMNS = ("node", "outcome", "failed phase", "error", "rotation", "duration", "reason")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _summary_row(node: NodeResult) -> tuple[str, ...]:
    phase = node.failed_phase
    error = phase.error if phase is not None else None
    reason = node.left_out_reason or (error.message if error is not None else "")
    return (
        node.name,
        node.outcome,
        phase.phase if phase is not None else "-",
        error.kind if error is not None else "-",
        node.rotation,
        _duration(node.duration_s),
        reason,
    )


def _totals_line(result: RunResult) -> str:
    totals = result.totals
    return (
        f"run {result.run_id}: {result.outcome} (exit {int(result.exit_code)}) - "
        f"{totals.nodes} nodes: {totals.done} done, {totals.failed} failed, "
        f"{totals.interrupted} interrupted, {totals.not_started} not started, {totals.skipped} skipped; "
        f"{totals.out_of_rotation} out of rotation, {totals.rotation_unknown} rotation unknown"
    )


def _stopped(result: RunResult) -> str:
    """Why the run ended where it did (the budget spent, the change window, a refusal), if it did."""
    reason = result.budget.get("stopped")
    return f"stopped: {reason}" if isinstance(reason, str) and reason else ""


def plain_table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """One row per node (outcome, failed phase, error kind, rotation, duration, reason) and totals."""
    out = console or Console(stderr=True)
    result = redacted(result)
    rows = [_summary_row(node) for node in result.nodes]
    if not out.is_terminal:
        for line in plain_table([_SUMMARY_COLUMNS, *rows]):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.print(_totals_line(result), markup=False, highlight=False, soft_wrap=True)
        if reason := _stopped(result):
            out.print(reason, markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=f"orchestrator run {result.run_id}", title_justify="left")
    for column in _SUMMARY_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        node_name, outcome, phase, kind, rotation, duration, reason = row
        # Text, not str: a node name or an error message must never be read as rich markup.
        table.add_row(
            Text(node_name),
            Text(outcome, style=_OUTCOME_STYLE[outcome]),
            Text(phase),
            Text(kind),
            Text(rotation, style=_ROTATION_STYLE[rotation]),
            Text(duration),
            Text(reason),
        )
    out.print(table)
    style = "green" if result.outcome == "succeeded" else "bold red"
    out.print(Text(_totals_line(result), style=style))
    if reason := _stopped(result):
        out.print(Text(reason, style=style))


__all__ = ["LiveProgress", "print_summary"]
