"""A self-contained HTML timeline of a run: one row per node, its phases as bars on a shared time axis.

Change reviews open it from a ticket or a CI artifact, often offline, so it carries its own styles and
loads nothing. Every piece of text from the run (node names, error messages) is escaped.

Phases of a few seconds in a run of minutes are slivers on the axis, so the bars carry no text:
each row lists its phases underneath, with their colour, outcome and duration, readable whatever the
scale. Colours tell the phase; a failed, cancelled or unfinished phase is marked on top of it
(outline and symbol), so the mark does not depend on telling two colours apart.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from orchestrator.report.output import budget_of, redacted, write_atomically
from orchestrator.results import PHASES, NodeResult, PhaseResult, RunResult

_TICKS = 6
_MIN_BAR_PERCENT = 0.6  # a phase of a few milliseconds must still be visible and hoverable

# One hue per phase, in the order they happen; chosen to stay apart for common colour blindness.
_PHASE_COLOUR = {
    "preflight": "#9e9e9e",
    "drain": "#0072b2",
    "stop": "#e69f00",
    "start": "#56b4e9",
    "verify": "#009e73",
    "undrain": "#cc79a7",
}
_OUTCOME_MARK = {"ok": "", "failed": "\u2716 ", "cancelled": "\u25a0 ", "skipped": "\u2013 "}
_NODE_OUTCOME_COLOUR = {
    "done": "#1b5e20",
    "failed": "#b71c1c",
    "interrupted": "#e65100",
    "not_started": "#616161",
    "skipped": "#616161",
}

_STYLE = (
    """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: .3em; }
.meta { color: #333; margin-bottom: .8em; line-height: 1.5; }
.meta b { font-weight: 600; }
.facts { display: flex; flex-wrap: wrap; gap: .5em; margin-bottom: 1em; }
.fact { border: 1px solid #ccc; border-radius: 4px; padding: .25em .6em; background: #fafafa; }
.fact.bad { border-color: #b71c1c; background: #ffebee; }
.grid { display: grid; grid-template-columns: minmax(16em, max-content) 1fr; column-gap: 1em; }
.node { display: contents; }
.label { padding: .4em 0; border-top: 1px solid #eee; }
.label small { color: #555; display: block; max-width: 32em; }
.cell { padding: .4em 0; border-top: 1px solid #eee; }
.node.failed .label, .node.failed .cell { background: #fff5f5; }
.node.interrupted .label, .node.interrupted .cell { background: #fff8ee; }
.track { position: relative; height: 1.6em; background: #f1f1f1; border-radius: 3px; }
.bar { position: absolute; top: .2em; bottom: .2em; border-radius: 2px; box-sizing: border-box; }
.bar.failed { outline: 3px solid #b71c1c; z-index: 2; }
.bar.cancelled { outline: 3px dashed #e65100; z-index: 2; }
.bar.skipped { opacity: .45; }
.open { background-image:
  repeating-linear-gradient(45deg, transparent 0 6px, rgba(255,255,255,.5) 6px 12px); }
.phases { margin-top: .25em; font-size: 12px; color: #333; display: flex; flex-wrap: wrap; gap: .2em .9em; }
.phase-label { white-space: nowrap; }
.phase-label.failed { color: #b71c1c; font-weight: 600; }
.phase-label.cancelled { color: #e65100; font-weight: 600; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .3em;
          vertical-align: -1px; }
.axis { position: relative; height: 1.4em; color: #555; font-size: 11px; }
.axis span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.axis span:first-child { transform: none; } .axis span:last-child { transform: translateX(-100%); }
.outcome { font-weight: 700; padding: 0 .35em; border-radius: 3px; color: #fff; }
.legend { margin-bottom: 1em; display: flex; flex-wrap: wrap; gap: .3em 1em; }
"""
    + "".join(f".p-{phase} {{ background-color: {colour}; }}\n" for phase, colour in _PHASE_COLOUR.items())
    + "".join(
        f".o-{outcome} {{ background: {colour}; }}\n" for outcome, colour in _NODE_OUTCOME_COLOUR.items()
    )
)


class _Axis:
    """Maps times of the run onto 0-100 % of a track."""

    def __init__(self, result: RunResult) -> None:
        self.start = result.started_at
        moments = [result.ended_at] if result.ended_at else []
        for node in result.nodes:
            for phase in node.phases:
                moments.append(phase.ended_at or phase.started_at)
        self.end = max([self.start + timedelta(seconds=1), *moments])
        self.span = (self.end - self.start).total_seconds()

    def percent(self, moment: datetime) -> float:
        return max(0.0, min(100.0, (moment - self.start).total_seconds() / self.span * 100))


def human_duration(seconds: float) -> str:
    """0.4s, 12s, 3m05s, 1h02m: what a person reads at a glance."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def human_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _offset(seconds: float) -> str:
    return "+" + human_duration(seconds) if seconds else "0s"


def _phase_title(phase: PhaseResult) -> str:
    took = human_duration(phase.duration_s) if phase.duration_s is not None else "no end recorded"
    parts = [f"{phase.phase}: {phase.outcome}, {took}, {phase.attempts} attempt(s)"]
    parts.append(f"{human_time(phase.started_at)}")
    if phase.detail:
        parts.append(phase.detail)
    if phase.error is not None:
        code = f" ({phase.error.code})" if phase.error.code is not None else ""
        parts.append(f"{phase.error.kind}{code}: {phase.error.message}")
    return "\n".join(parts)


def _bar(axis: _Axis, phase: PhaseResult) -> str:
    left = axis.percent(phase.started_at)
    right = axis.percent(phase.ended_at or axis.end)
    width = max(right - left, _MIN_BAR_PERCENT)
    left = min(left, 100 - width)
    classes = f"p-{phase.phase} {phase.outcome}" + (" open" if phase.ended_at is None else "")
    return (
        f'<div class="bar {classes}" style="left:{left:.3f}%;width:{width:.3f}%" '
        f'title="{escape(_phase_title(phase))}"></div>'
    )


def _phase_label(phase: PhaseResult) -> str:
    took = human_duration(phase.duration_s) if phase.duration_s is not None else "no end"
    outcome = "" if phase.outcome == "ok" else f" {phase.outcome}"
    return (
        f'<span class="phase-label {escape(phase.outcome)}" title="{escape(_phase_title(phase))}">'
        f'<span class="swatch p-{escape(phase.phase)}"></span>{_OUTCOME_MARK[phase.outcome]}'
        f"{escape(phase.phase)}{escape(outcome)} {escape(took)}</span>"
    )


def _row(axis: _Axis, node: NodeResult) -> str:
    note = node.left_out_reason or ""
    failed = node.failed_phase
    if not note and failed is not None and failed.error is not None:
        note = f"{failed.phase}: {failed.error.message}"
    took = f", {human_duration(node.duration_s)}" if node.duration_s is not None else ""
    label = (
        f'<div class="label"><strong class="name">{escape(node.name)}</strong> {escape(node.host)}<br>'
        f'<span class="outcome o-{escape(node.outcome)}">{escape(node.outcome.replace("_", " "))}</span>'
        f" rotation {escape(node.rotation)}{escape(took)}"
        f"{f'<small>{escape(note)}</small>' if note else ''}</div>"
    )
    bars = "".join(_bar(axis, phase) for phase in node.phases)
    labels = "".join(_phase_label(phase) for phase in node.phases)
    return (
        f'<div class="node {escape(node.outcome)}" data-node="{escape(node.name)}">{label}'
        f'<div class="cell"><div class="track">{bars}</div><div class="phases">{labels}</div></div></div>'
    )


def _axis_row(axis: _Axis) -> str:
    ticks = "".join(
        f'<span style="left:{i * 100 / (_TICKS - 1):.3f}%">{_offset(axis.span * i / (_TICKS - 1))}</span>'
        for i in range(_TICKS)
    )
    return f'<div></div><div class="axis">{ticks}</div>'


def _facts(result: RunResult) -> str:
    plan: dict[str, Any] = dict(result.plan)
    limits = plan.get("limits") if isinstance(plan.get("limits"), dict) else {}
    assert isinstance(limits, dict)
    spent, tolerated = budget_of(result)
    facts: list[tuple[str, bool]] = [
        (f"failure budget: {spent} of {tolerated} tolerated used", spent > tolerated)
    ]
    if "min_healthy" in limits:
        facts.append((f"capacity floor: {limits['min_healthy']} healthy nodes", False))
    if "max_unavailable" in limits:
        facts.append((f"at most {limits['max_unavailable']} out of rotation at once", False))
    strategy = plan.get("strategy")
    if strategy == "window":
        facts.append((f"strategy window of {limits.get('window')}", False))
    elif strategy == "batch":
        facts.append((f"strategy batch, {len(plan.get('batches') or [])} batches", False))
    if plan.get("finish_by"):
        finish_by = datetime.fromisoformat(str(plan["finish_by"]))
        facts.append((f"change window ends {human_time(finish_by)}", False))
    if result.totals.out_of_rotation:
        facts.append((f"{result.totals.out_of_rotation} node(s) left out of rotation", True))
    return "".join(f'<span class="fact{" bad" if bad else ""}">{escape(text)}</span>' for text, bad in facts)


def html_timeline(result: RunResult) -> str:
    result = redacted(result)
    axis = _Axis(result)
    totals = result.totals
    if result.ended_at:
        when = (
            f"{human_time(result.started_at)} to {result.ended_at:%H:%M:%S} UTC "
            f"({human_duration((result.ended_at - result.started_at).total_seconds())})"
        )
    else:
        when = f"{human_time(result.started_at)}, no end recorded"
    meta = (
        f'<b class="run-outcome">{escape(result.outcome.replace("_", " "))}</b>'
        f" (exit {int(result.exit_code)})"
        f" &middot; {escape(when)} &middot; inventory {escape(result.inventory_path)}"
        f"<br>{totals.nodes} nodes: {totals.done} done, {totals.failed} failed, {totals.interrupted} "
        f"interrupted, {totals.not_started} not started, {totals.skipped} skipped; "
        f"{totals.out_of_rotation} out of rotation"
    )
    legend = "".join(f'<span><span class="swatch p-{phase}"></span>{phase}</span>' for phase in PHASES) + (
        "<span>\u2716 failed (red outline)</span><span>\u25a0 cancelled (dashed outline)</span>"
        '<span><span class="swatch p-stop open"></span>no end recorded</span>'
    )
    rows = "\n".join(_row(axis, node) for node in result.nodes)
    title = f"orchestrator run {escape(result.run_id)}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<div class="meta">{meta}</div>
<div class="facts">{_facts(result)}</div>
<div class="legend">{legend}</div>
<div class="grid">
{_axis_row(axis)}
{rows}
</div>
</body>
</html>
"""


def write_html(result: RunResult, path: str | os.PathLike[str]) -> Path:
    return write_atomically(path, html_timeline(result))
