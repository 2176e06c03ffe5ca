"""The event stream: one JSON line per run, node and phase event, written as it happens.

Operators `tail -f` it during a change window and log shippers pick it up, so every event is one
complete line, written with a single call and flushed before the writer returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from orchestrator.log import redact
from orchestrator.results import (
    ErrorInfo,
    ExitCode,
    NodeOutcome,
    Phase,
    PhaseStatus,
    Rotation,
    RunOutcome,
    Totals,
    UtcDatetime,
)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: UtcDatetime
    run_id: str


class RunStarted(_Event):
    event: Literal["run_started"] = "run_started"
    inventory_path: str
    nodes: list[str]
    plan: dict[str, JsonValue] = Field(default_factory=dict)


class PhaseEvent(_Event):
    event: Literal["phase"] = "phase"
    node: str
    phase: Phase
    status: PhaseStatus
    detail: str = ""
    error: ErrorInfo | None = None


class NodeFinished(_Event):
    event: Literal["node_finished"] = "node_finished"
    node: str
    outcome: NodeOutcome
    rotation: Rotation
    reason: str | None = None


class RunFinished(_Event):
    event: Literal["run_finished"] = "run_finished"
    outcome: RunOutcome
    exit_code: ExitCode
    totals: Totals


Event = Annotated[RunStarted | PhaseEvent | NodeFinished | RunFinished, Field(discriminator="event")]
_EVENT = TypeAdapter(Event)


_E = TypeVar("_E", bound=_Event)


def redacted_event(event: _E) -> _E:
    """`event` with registered secrets scrubbed (and secret-looking plan keys dropped)."""
    data = redact(event.model_dump(mode="json"), by_key=False)
    if "plan" in data:
        data["plan"] = redact(data["plan"])
    return type(event).model_validate(data)


def event_line(event: Event) -> str:
    """The event as one JSON line, safe to write."""
    return redacted_event(event).model_dump_json() + "\n"


class EventStream:
    """Appends events to a JSONL file; safe to share between the coordinator's threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Append, so a resumed run continues the same stream instead of truncating what tail shows.
        fd = os.open(self.path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, event: Event) -> None:
        line = event_line(event)
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_events(path: str | os.PathLike[str]) -> Iterator[Event]:
    """Parse a stream back, validating each line; a torn last line (writer killed) is ignored."""
    with Path(path).open(encoding="utf-8") as stream:
        for line in stream:
            if line.endswith("\n"):
                yield _EVENT.validate_json(line)
