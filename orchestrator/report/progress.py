"""Live progress during a run: a header and one row per node in flight on a terminal, plain lines
otherwise.

On a terminal the live region is redrawn in place, so anything else written to the terminal while it
is up (the log, a warning) must go *above* it, through the same console: written straight to stderr
it would be overwritten by the next redraw and leave fragments of old frames behind. While the
display is up, stdout, stderr and the orchestrator's log handler are routed through the live console,
and the region is erased when the run ends so the summary is never mixed with a stale frame.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.control import strip_control_codes
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.budget import FailureBudget
from orchestrator.inventory import FailureBudgetPolicy
from orchestrator.log import scrub
from orchestrator.report.events import NodeFinished, PhaseEvent, RunStarted

_FINISHED = ("done", "failed", "interrupted", "not_started", "skipped")
_STATUS_STYLE = {"started": "cyan", "ok": "green", "failed": "red", "cancelled": "yellow"}
_LOG_HANDLER = "orchestrator"  # the handler orchestrator.log installs


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def estimate_remaining(
    durations: Sequence[float], waiting: int, in_flight: Sequence[float], parallel: int
) -> float | None:
    """Seconds until the last node should finish, from the nodes finished so far in this run.

    `durations`: how long each finished node took; `waiting`: nodes not started yet; `in_flight`: how
    long each node in flight has been going; `parallel`: nodes the plan runs at once. None until a
    node has finished (there is nothing observed to go on).
    """
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    # The nodes in flight finish first (each needs what is left of a typical node), then the waiting
    # ones go through in waves of `parallel`.
    current = max((max(mean - elapsed, 0.0) for elapsed in in_flight), default=0.0)
    return current + math.ceil(waiting / max(parallel, 1)) * mean


@dataclass
class _Node:
    phase: str = "-"
    status: str = "waiting"
    detail: str = ""
    phase_since: float | None = None  # monotonic
    started: float | None = None  # first phase after preflight, monotonic
    outcome: str | None = None


@dataclass(frozen=True)
class _RunInfo:
    run_id: str
    started: float  # monotonic
    tolerated: int
    floor: int
    parallel: int
    window_end: datetime | None


def _run_info(event: RunStarted, now: float) -> _RunInfo:
    plan: dict[str, Any] = dict(event.plan)
    limits: dict[str, Any] = plan.get("limits") or {}
    policy = FailureBudgetPolicy.model_validate(plan.get("failure_budget") or {})
    batches: list[list[str]] = plan.get("batches") or [[]]
    parallel = limits.get("window") or max((len(b) for b in batches), default=1)
    finish_by = plan.get("finish_by")
    return _RunInfo(
        run_id=event.run_id,
        started=now,
        tolerated=FailureBudget(policy, len(event.nodes)).tolerated,
        floor=int(limits.get("min_healthy") or 0),
        parallel=int(parallel or 1),
        window_end=datetime.fromisoformat(finish_by) if isinstance(finish_by, str) else None,
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _ConsoleWriter:
    """A text stream that prints whole lines through a console (above its live region)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._console.print(Text.from_ansi(rest), soft_wrap=True)

    def isatty(self) -> bool:
        return True


class LiveProgress:
    """Progress fed by run, phase and node events: a live view on a terminal, plain lines otherwise.

    Use as a context manager around the run; `enabled=False` prints nothing (quiet mode).
    """

    def __init__(
        self,
        nodes: Sequence[str],
        console: Console | None = None,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console or Console(stderr=True)
        self._enabled = enabled
        self._clock = clock
        self._nodes = {name: _Node() for name in nodes}
        self._run: _RunInfo | None = None
        self._durations: list[float] = []
        self._lock = threading.Lock()
        self._live = (
            Live(
                console=self._console,
                get_renderable=self._render,
                refresh_per_second=2,  # the times in the header and rows move on their own
                transient=True,  # erased at the end: the summary follows on a clean screen
                redirect_stdout=True,
                # stderr sent elsewhere (`2>run.log`) stays there; only a terminal's goes above the region.
                redirect_stderr=_is_terminal(sys.stderr),
            )
            if enabled and self._console.is_terminal
            else None
        )
        self._log_streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.start(refresh=True)
            # The log handler holds the stderr it was configured with, not sys.stderr as it is now.
            writer: Any = _ConsoleWriter(self._live.console)
            for handler in logging.getLogger().handlers:
                if (
                    handler.get_name() == _LOG_HANDLER
                    and isinstance(handler, logging.StreamHandler)
                    and _is_terminal(handler.stream)
                ):
                    try:
                        previous = handler.setStream(writer)
                    except ValueError:  # its stream was closed: nothing to route
                        continue
                    if previous is not None:
                        self._log_streams.append((handler, previous))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            for handler, stream in self._log_streams:
                handler.flush()
                handler.setStream(stream)
            self._log_streams.clear()
            self._live.stop()
            sys.stdout.flush()

    def started(self, event: RunStarted) -> None:
        """The run passed its lock and has an id: the header can say which run and what it may spend."""
        if not self._enabled:
            return
        with self._lock:
            self._run = _run_info(event, self._clock())
        self._say(f"{event.at:%H:%M:%SZ} run {event.run_id} started: {len(event.nodes)} nodes")

    def update(self, event: PhaseEvent | NodeFinished) -> None:
        if not self._enabled:
            return
        # Only the texts shown are scrubbed of secrets (as redacted_event would): one event per phase
        # change, so its cost per node counts (docs/benchmarks.md).
        now = self._clock()
        at = event.at.strftime("%H:%M:%SZ")
        with self._lock:
            node = self._nodes.setdefault(event.node, _Node())
            if isinstance(event, PhaseEvent):
                if (node.phase, node.status) != (event.phase, event.status) and event.status == "started":
                    node.phase_since = now
                if event.phase != "preflight" and node.started is None:
                    node.started = now
                node.phase, node.status, node.detail = event.phase, event.status, scrub(event.detail)
                if (event.phase, event.status) == ("preflight", "ok"):
                    # Preflighted, not yet started: say what the operator is looking at.
                    node.detail = "waiting for its turn"
                if event.error is not None:
                    node.detail = scrub(f"{event.error.kind}: {event.error.message}")
                line = f"{at} {event.node} {event.phase} {event.status}"
            else:
                node.outcome = event.outcome
                node.detail = scrub(event.reason or "")
                if node.started is not None and event.outcome in ("done", "failed"):
                    self._durations.append(now - node.started)
                line = f"{at} {event.node} {event.outcome} (rotation {event.rotation})"
            if node.detail:
                line += f": {node.detail}"
            line = scrub(line)
        if self._live is None:
            self._say(line)
        elif isinstance(event, NodeFinished):
            # What happened to a node stays on screen, above the live region.
            self._say(line, style="red" if event.outcome in ("failed", "interrupted") else "green")
        else:
            self._live.refresh()

    def _say(self, line: str, style: str = "") -> None:
        if self._live is not None:
            self._live.console.print(Text(line, style=style), soft_wrap=True)
            self._live.refresh()
        elif not self._console.quiet:
            # Off a terminal a line is written as it is, control characters removed as rich would:
            # rendering it through the console cost more than the rest of the event's bookkeeping.
            self._console.file.write(strip_control_codes(line) + "\n")
            self._console.file.flush()

    # --- the live view ------------------------------------------------------------------------------

    def header(self) -> str:
        """One line: run id, elapsed, estimated finish, counts, budget left, floor, window end."""
        now = self._clock()
        with self._lock:
            run = self._run
            finished = [n for n in self._nodes.values() if n.outcome is not None]
            flying = [n for n in self._nodes.values() if n.outcome is None and n.started is not None]
            waiting = len(self._nodes) - len(finished) - len(flying)
            durations = list(self._durations)
        done = sum(n.outcome == "done" for n in finished)
        failed = sum(n.outcome in ("failed", "interrupted") for n in finished)
        parts = [f"run {run.run_id}" if run else "starting"]
        if run is not None:
            parts.append(f"elapsed {_duration(now - run.started)}")
            remaining = estimate_remaining(
                durations, waiting, [now - (n.started or now) for n in flying], run.parallel
            )
            wall = time.time() + remaining if remaining is not None else None
            parts.append(f"est. finish {time.strftime('%H:%M:%SZ', time.gmtime(wall))}" if wall else "est. -")
        parts.append(f"{done}/{len(self._nodes)} done, {failed} failed, {len(flying)} in flight")
        if run is not None:
            parts.append(f"budget left {max(run.tolerated - failed, 0)}/{run.tolerated}")
            parts.append(f"floor {run.floor} healthy")
            if run.window_end is not None:
                parts.append(f"window ends {run.window_end:%H:%M}Z")
        return " | ".join(parts)

    def _render(self) -> Group:
        now = self._clock()
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("node", "phase", "status", "in phase", "detail"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        with self._lock:
            flying = [
                (name, n) for name, n in self._nodes.items() if n.outcome is None and n.started is not None
            ]
            rows = [
                (
                    Text(name),
                    Text(n.phase),
                    Text(n.status, style=_STATUS_STYLE.get(n.status, "")),
                    Text(_duration(now - n.phase_since) if n.phase_since is not None else "-"),
                    Text(n.detail),
                )
                for name, n in flying
            ]
        for row in rows:
            table.add_row(*row)
        return Group(Text(self.header(), style="bold"), table)
