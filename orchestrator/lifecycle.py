"""One node's lifecycle: a sans-IO state machine that owns every legal transition of a node.

In the style of h11 and psrpcore: the workflow, the coordinator, the health watch and resume feed
events (`send`); the machine moves to its next state and returns the effects to perform (run a
phase, record the node). It does no I/O and reads no clock. An event that is not legal in the
current state raises `IllegalTransition`, so a node's fate cannot be written from two places.

`TRANSITIONS` is the whole table, (state, event, next state); the diagram in docs/architecture.md is
checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from orchestrator.results import PHASES, NodeOutcome, Phase, Rotation

State = Literal[
    "queued",
    "preflighted",
    "draining",
    "stopping",
    "starting",
    "verifying",
    "undraining",
    "done",
    "failed",
    "left_out",
    "interrupted",
    "skipped",
    "not_started",
]
STATES: tuple[State, ...] = get_args(State)

# The phases that change a node, and the state a node is in while each runs.
ACTING: tuple[Phase, ...] = PHASES[1:]
_IN_PHASE: dict[Phase, State] = {
    "drain": "draining",
    "stop": "stopping",
    "start": "starting",
    "verify": "verifying",
    "undrain": "undraining",
}
_PHASE_OF: dict[State, Phase] = {state: phase for phase, state in _IN_PHASE.items()}
FINAL: frozenset[State] = frozenset({"done", "failed", "left_out", "interrupted", "skipped", "not_started"})


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightPassed:
    """Every read-only check passed: the node may be changed when its turn comes."""

    name: Literal["preflight_passed"] = "preflight_passed"


@dataclass(frozen=True)
class PreflightFailed:
    """A read-only check failed: the run is refused, this node was never changed."""

    name: Literal["preflight_failed"] = "preflight_failed"


@dataclass(frozen=True)
class Begin:
    """The scheduler started the node, at `phase` (a resumed node may begin past drain)."""

    phase: Phase = "drain"
    name: Literal["begin"] = "begin"


@dataclass(frozen=True)
class PhaseFinished:
    phase: Phase
    name: Literal["phase_finished"] = "phase_finished"


@dataclass(frozen=True)
class PhaseFailed:
    """The phase failed or timed out (`timed_out`); `rotation` is what the node was left in."""

    phase: Phase
    message: str
    rotation: Rotation
    timed_out: bool = False
    name: Literal["phase_failed"] = "phase_failed"


@dataclass(frozen=True)
class Signal:
    """The run was stopped at once while the node was in a phase; `rotation` as it was left."""

    rotation: Rotation = "unknown"
    name: Literal["signal"] = "signal"


@dataclass(frozen=True)
class BakeFailed:
    """A canary's health did not hold during the bake: not done after all."""

    detail: str
    name: Literal["bake_failed"] = "bake_failed"


@dataclass(frozen=True)
class Skip:
    """Not touched: an earlier run finished the node (resuming), or the operator had it out of
    rotation before the run (`reason` says so)."""

    reason: str | None = None
    name: Literal["skip"] = "skip"


@dataclass(frozen=True)
class NotStarted:
    """The run ended (refused, budget, window, signal, capacity) before the node's turn."""

    name: Literal["not_started"] = "not_started"


Event = (
    PreflightPassed
    | PreflightFailed
    | Begin
    | PhaseFinished
    | PhaseFailed
    | Signal
    | BakeFailed
    | Skip
    | NotStarted
)
EVENT_NAMES: tuple[str, ...] = (
    "preflight_passed",
    "preflight_failed",
    "begin",
    "phase_finished",
    "phase_failed",
    "signal",
    "bake_failed",
    "skip",
    "not_started",
)


# --- effects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPhase:
    phase: Phase


@dataclass(frozen=True)
class Record:
    """Record the node's outcome (after reading its services once more when `observe`)."""

    outcome: NodeOutcome
    reason: str | None
    observe: bool


Effect = RunPhase | Record


# --- the table ----------------------------------------------------------------------------------


def _table() -> frozenset[tuple[State, str, State]]:
    rows: set[tuple[State, str, State]] = {
        ("queued", "preflight_passed", "preflighted"),
        ("queued", "preflight_failed", "not_started"),
        ("queued", "not_started", "not_started"),
        ("queued", "skip", "skipped"),
        ("preflighted", "not_started", "not_started"),
        ("done", "bake_failed", "failed"),
    }
    for phase in ACTING:
        state = _IN_PHASE[phase]
        rows.add(("preflighted", "begin", state))
        index = ACTING.index(phase)
        rows.add(
            (state, "phase_finished", _IN_PHASE[ACTING[index + 1]] if index + 1 < len(ACTING) else "done")
        )
        # Still in rotation (a drain that never took effect): failed; out or unknown: left out.
        rows.add((state, "phase_failed", "failed"))
        rows.add((state, "phase_failed", "left_out"))
        rows.add((state, "signal", "interrupted"))
    return frozenset(rows)


TRANSITIONS: frozenset[tuple[State, str, State]] = _table()

_OUTCOME: dict[State, NodeOutcome] = {
    "queued": "not_started",
    "preflighted": "not_started",
    "done": "done",
    "failed": "failed",
    "left_out": "failed",
    "interrupted": "interrupted",
    "skipped": "skipped",
    "not_started": "not_started",
    **dict.fromkeys(_PHASE_OF, "interrupted"),  # in flight: if the run ends now, it was cut off
}


class IllegalTransition(Exception):
    def __init__(self, node: str, state: State, event: Event) -> None:
        super().__init__(f"node {node!r}: {event.name} is not legal in state {state!r}")
        self.state = state
        self.event = event


class Lifecycle:
    """One node's state. `send` an event, perform the effects it returns, feed back the result."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.state: State = "queued"
        self.reason: str | None = None  # why the node is not back in rotation, when it is not

    @property
    def outcome(self) -> NodeOutcome:
        return _OUTCOME[self.state]

    @property
    def phase(self) -> Phase | None:
        """The phase in progress, if any."""
        return _PHASE_OF.get(self.state)

    def send(self, event: Event) -> list[Effect]:
        target, effects, reason = self._next(event)
        if (self.state, event.name, target) not in TRANSITIONS:
            raise IllegalTransition(self.node, self.state, event)
        self.state = target
        self.reason = reason
        return effects

    def _next(self, event: Event) -> tuple[State, list[Effect], str | None]:
        match event:
            case PreflightPassed():
                return "preflighted", [], None
            case PreflightFailed():
                # Preflight only reads: the node was never changed, so it is not failed, just not started.
                return "not_started", [Record("not_started", None, observe=False)], None
            case Begin(phase=phase):
                if phase not in _IN_PHASE:
                    raise IllegalTransition(self.node, self.state, event)
                return _IN_PHASE[phase], [RunPhase(phase)], None
            case PhaseFinished(phase=phase):
                self._require_phase(phase, event)
                index = ACTING.index(phase)
                if index + 1 < len(ACTING):
                    following = ACTING[index + 1]
                    return _IN_PHASE[following], [RunPhase(following)], None
                return "done", [Record("done", None, observe=True)], None
            case PhaseFailed(phase=phase, message=message, rotation=rotation):
                self._require_phase(phase, event)
                if rotation == "in":
                    return "failed", [Record("failed", None, observe=True)], None
                left = f"{phase} failed: {message}"
                return "left_out", [Record("failed", left, observe=True)], left
            case Signal(rotation=rotation) if self.phase is not None:
                cut = None if rotation == "in" else f"{self.phase} interrupted: the run was stopped"
                return "interrupted", [Record("interrupted", cut, observe=True)], cut
            case BakeFailed(detail=detail):
                baked = f"health did not hold during the canary bake: {detail}"
                return "failed", [Record("failed", baked, observe=False)], baked
            case Skip(reason=reason):
                return "skipped", [Record("skipped", reason, observe=False)], reason
            case NotStarted():
                return "not_started", [Record("not_started", None, observe=False)], None
        raise IllegalTransition(self.node, self.state, event)  # pragma: no cover - exhaustive

    def _require_phase(self, phase: Phase, event: Event) -> None:
        if self.phase != phase:
            raise IllegalTransition(self.node, self.state, event)
