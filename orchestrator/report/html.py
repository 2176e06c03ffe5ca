"""A self-contained HTML timeline of a run: one row per node, its phases as bars on a shared time axis.

Change reviews open it from a ticket or a CI artifact, often offline, so it carries its own styles and
loads nothing. Every piece of text from the run (node names, error messages) is escaped.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

from orchestrator.report.output import redacted, write_atomically
from orchestrator.results import NodeResult, PhaseResult, RunResult

_TICKS = 6
_MIN_BAR_PERCENT = 0.4  # a phase of a few milliseconds must still be visible and hoverable

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: .2em; }
.meta { color: #555; margin-bottom: 1em; }
.grid { display: grid; grid-template-columns: minmax(14em, max-content) 1fr; row-gap: 4px; }
.label { padding-right: 1em; white-space: nowrap; }
.label small { color: #666; display: block; white-space: normal; max-width: 28em; }
.track { position: relative; height: 2.2em; background: #f4f4f4; border-radius: 3px; }
.bar { position: absolute; top: .3em; bottom: .3em; border-radius: 2px; overflow: hidden;
       color: #fff; font-size: 11px; line-height: 1.6em; padding-left: 2px; box-sizing: border-box; }
.ok { background: #2e7d32; } .failed { background: #c62828; } .cancelled { background: #ef6c00; }
.skipped { background: #9e9e9e; }
.open { background-image:
  repeating-linear-gradient(45deg, transparent 0 6px, rgba(255,255,255,.35) 6px 12px); }
.axis { position: relative; height: 1.4em; color: #666; font-size: 11px; }
.axis span { position: absolute; transform: translateX(-50%); }
.outcome { font-weight: 600; } .o-done { color: #2e7d32; } .o-failed { color: #c62828; }
.o-interrupted { color: #ef6c00; } .o-not_started, .o-skipped { color: #777; }
.legend span { display: inline-block; padding: 0 .5em; margin-right: .5em; color: #fff; border-radius: 2px; }
"""


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


def _offset(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"+{minutes}m{secs:02d}s" if minutes else f"+{seconds:.1f}s"


def _phase_title(phase: PhaseResult) -> str:
    took = f"{phase.duration_s:.1f}s" if phase.duration_s is not None else "no end recorded"
    parts = [f"{phase.phase}: {phase.outcome}, {took}, {phase.attempts} attempt(s)"]
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
    classes = phase.outcome + (" open" if phase.ended_at is None else "")
    return (
        f'<div class="bar {classes}" style="left:{left:.3f}%;width:{width:.3f}%" '
        f'title="{escape(_phase_title(phase))}">{escape(phase.phase)}</div>'
    )


def _row(axis: _Axis, node: NodeResult) -> str:
    note = node.left_out_reason or ""
    label = (
        f'<div class="label"><strong>{escape(node.name)}</strong> {escape(node.host)}<br>'
        f'<span class="outcome o-{escape(node.outcome)}">{escape(node.outcome.replace("_", " "))}</span>'
        f", rotation {escape(node.rotation)}"
        f"{f'<small>{escape(note)}</small>' if note else ''}</div>"
    )
    bars = "".join(_bar(axis, phase) for phase in node.phases)
    return f'{label}<div class="track">{bars}</div>'


def _axis_row(axis: _Axis) -> str:
    ticks = "".join(
        f'<span style="left:{i * 100 / (_TICKS - 1):.3f}%">{_offset(axis.span * i / (_TICKS - 1))}</span>'
        for i in range(_TICKS)
    )
    return f'<div></div><div class="axis">{ticks}</div>'


def html_timeline(result: RunResult) -> str:
    result = redacted(result)
    axis = _Axis(result)
    totals = result.totals
    ended = result.ended_at.isoformat() if result.ended_at else "not recorded"
    meta = (
        f"{escape(result.outcome)} (exit {int(result.exit_code)}) &middot; inventory "
        f"{escape(result.inventory_path)} &middot; {escape(result.started_at.isoformat())} to {escape(ended)}"
        f"<br>{totals.nodes} nodes: {totals.done} done, {totals.failed} failed, {totals.interrupted} "
        f"interrupted, {totals.not_started} not started, {totals.skipped} skipped; "
        f"{totals.out_of_rotation} out of rotation"
    )
    legend = "".join(
        f'<span class="{outcome}">{outcome}</span>' for outcome in ("ok", "failed", "cancelled", "skipped")
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
<div class="legend">{legend}<span class="ok open">no end recorded</span></div>
<div class="grid">
{_axis_row(axis)}
{rows}
</div>
</body>
</html>
"""


def write_html(result: RunResult, path: str | os.PathLike[str]) -> Path:
    return write_atomically(path, html_timeline(result))
