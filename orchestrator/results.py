"""What a run did, node by node: the typed result every report and the journal speak.

The model is the contract with operators and their automation (CI parsing the JSON, cron wrappers
reading the exit code), so it is versioned (`schema_version`) and strict: unknown fields are refused,
times must carry a timezone and are normalised to UTC, and what can be derived (exit code, totals) is
derived, never stored twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    computed_field,
    model_validator,
)

SCHEMA_VERSION: Literal["1"] = "1"

ErrorKind = Literal[
    "not_found",
    "dependent_services",
    "cannot_accept_control",
    "access_denied",
    "disabled",
    "timed_out",
    "transport",
    "auth",
    "quota",
    "health",
    "lb",
    "deadline",
    "internal",
    "cancelled",
    # A remote error whose record matched none of the kinds above; `message` and `fqid` say more.
    "remote",
    # Preflight refused the action on this node (e.g. its stop set would take down WinRM).
    "refused",
]
Phase = Literal["preflight", "drain", "stop", "start", "verify", "undrain"]
PHASES: tuple[Phase, ...] = ("preflight", "drain", "stop", "start", "verify", "undrain")
# What the journal and the event stream record as a phase progresses; `started` may repeat (retries).
PhaseStatus = Literal["started", "ok", "failed", "cancelled", "skipped"]
PhaseOutcome = Literal["ok", "failed", "skipped", "cancelled"]
NodeOutcome = Literal["done", "failed", "not_started", "skipped", "interrupted"]
Rotation = Literal["in", "out", "unknown"]
RunOutcome = Literal[
    "succeeded",
    "partial",
    "aborted_budget",
    "aborted_window",
    "aborted_signal",
    # The capacity floor held every remaining node back for longer than the stall limit.
    "aborted_capacity",
    "preflight_refused",
    "invalid_input",
    # The orchestrator itself failed (a bug, or a journal it cannot write) and stopped the run.
    "internal_error",
    # Only ever rebuilt from a journal: no end was recorded, so the run is still going or its process
    # died. `orchestrator status` tells which from the inventory lock.
    "incomplete",
]


class ExitCode(IntEnum):
    """The process exit status; cron wrappers and CI branch on these, so the values never change."""

    SUCCEEDED = 0  # every node done
    INTERNAL = 1  # the orchestrator failed (unexpected error); the journal says what was touched
    INVALID_INPUT = 2  # inventory or command line refused before anything was touched
    PREFLIGHT_REFUSED = 3  # preflight found a reason not to start; nothing was drained
    PARTIAL = 4  # the run finished, some nodes failed within the failure budget
    ABORTED_BUDGET = 5  # the failure budget was spent; no new node was started after that
    ABORTED_WINDOW = 6  # the change window would have been overrun; remaining nodes not started
    ABORTED_SIGNAL = 7  # stopped by SIGINT/SIGTERM
    LOCKED = 8  # another run holds the lease on the farm's hosts; nothing was touched
    ABORTED_CAPACITY = 9  # too few healthy nodes to go on for too long; remaining nodes not started


_EXIT_CODES: Mapping[RunOutcome, ExitCode] = {
    "succeeded": ExitCode.SUCCEEDED,
    "partial": ExitCode.PARTIAL,
    "aborted_budget": ExitCode.ABORTED_BUDGET,
    "aborted_window": ExitCode.ABORTED_WINDOW,
    "aborted_signal": ExitCode.ABORTED_SIGNAL,
    "aborted_capacity": ExitCode.ABORTED_CAPACITY,
    "preflight_refused": ExitCode.PREFLIGHT_REFUSED,
    "invalid_input": ExitCode.INVALID_INPUT,
    "internal_error": ExitCode.INTERNAL,
    "incomplete": ExitCode.INTERNAL,
}


def exit_code_for(outcome: RunOutcome) -> ExitCode:
    """The one place that maps a run's outcome to the process exit code."""
    return _EXIT_CODES[outcome]


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Aware datetimes only: a naive time in a report read at another site is a trap.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ErrorInfo(_Model):
    """A classified error: `kind` drives decisions, the rest helps the operator find the cause."""

    kind: ErrorKind
    message: str
    code: int | None = None  # Win32 / HRESULT code when the remote side gave one (1061, 5, ...)
    fqid: str | None = None  # PowerShell FullyQualifiedErrorId
    target: str | None = None  # the service, URL or LB backend the error was about


class PhaseResult(_Model):
    phase: Phase
    started_at: UtcDatetime
    ended_at: UtcDatetime | None = None  # None: the run stopped while this phase was in flight
    outcome: PhaseOutcome
    attempts: int = Field(default=1, ge=0)
    detail: str = ""
    error: ErrorInfo | None = None

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class NodeResult(_Model):
    name: str
    host: str
    group: str | None = None
    outcome: NodeOutcome
    phases: list[PhaseResult] = Field(default_factory=list)
    services_before: dict[str, str] = Field(default_factory=dict)
    services_after: dict[str, str] = Field(default_factory=dict)
    rotation: Rotation = "unknown"
    left_out_reason: str | None = None  # why the node is not back in rotation, for the operator
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None

    @property
    def failed_phase(self) -> PhaseResult | None:
        """The phase that stopped the node: the last one that did not end well."""
        for phase in reversed(self.phases):
            if phase.outcome in ("failed", "cancelled"):
                return phase
        return None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class Totals(_Model):
    nodes: int
    done: int
    failed: int
    not_started: int
    skipped: int
    interrupted: int
    out_of_rotation: int
    rotation_unknown: int


def compute_totals(nodes: Iterable[NodeResult]) -> Totals:
    node_list = list(nodes)
    outcomes = Counter(node.outcome for node in node_list)
    rotations = Counter(node.rotation for node in node_list)
    return Totals(
        nodes=len(node_list),
        done=outcomes["done"],
        failed=outcomes["failed"],
        not_started=outcomes["not_started"],
        skipped=outcomes["skipped"],
        interrupted=outcomes["interrupted"],
        out_of_rotation=rotations["out"],
        rotation_unknown=rotations["unknown"],
    )


class StaleLock(_Model):
    """The lock of a run whose process was gone, taken over by this run."""

    run_id: str
    pid: int
    host: str
    since: UtcDatetime
    controller: str | None = None  # the controller that held it
    last_beat: UtcDatetime | None = None  # its lease's last heartbeat
    taken_by: str | None = None  # the controller that took it over (this run's)
    why: str = "its process is gone"


class Recovery(_Model):
    """What this run found before touching anything: an earlier run that never finished."""

    run_id: str  # the incomplete run
    lock_takeover: StaleLock | None = None  # its lock, when its process died holding it
    # Nodes it left part-way (stopped, drained or unknown) and the phase this run picked each up at,
    # restoring what ran before that run's first change.
    repaired: dict[str, Phase] = Field(default_factory=dict)


class RunResult(_Model):
    schema_version: Literal["1"] = SCHEMA_VERSION
    run_id: str
    tool_version: str
    inventory_path: str
    started_at: UtcDatetime
    ended_at: UtcDatetime | None = None
    outcome: RunOutcome
    plan: dict[str, JsonValue] = Field(default_factory=dict)
    budget: dict[str, JsonValue] = Field(default_factory=dict)
    nodes: list[NodeResult] = Field(default_factory=list)
    recovery: Recovery | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_fields(cls, data: Any) -> Any:
        # `totals` and `exit_code` are written out for readers of the JSON but always derived, so a
        # report read back cannot carry counts or a code that disagree with its nodes and outcome.
        if not isinstance(data, dict):
            return data
        written_code = data.get("exit_code")
        outcome = data.get("outcome")
        expected = _EXIT_CODES.get(outcome) if isinstance(outcome, str) else None  # type: ignore[call-overload]
        if written_code is not None and expected is not None and written_code != expected:
            raise ValueError(f"exit_code {written_code} does not match outcome {outcome!r} ({int(expected)})")
        return {key: value for key, value in data.items() if key not in ("totals", "exit_code")}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.outcome)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> Totals:
        return compute_totals(self.nodes)
