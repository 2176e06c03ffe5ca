"""Where a resumed run picks each node up. Pure: the caller reads the journal.

A resumed run is a new run over the whole inventory, so the capacity floor still counts every node:
nodes that the earlier run finished are skipped, the others re-enter at the phase that did not
complete. Every phase observes before it acts, so re-entering a phase that was cut short is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.journal import NodeState
from orchestrator.results import PHASES, NodeOutcome, Phase, PhaseStatus, RunResult


@dataclass(frozen=True)
class ResumeState:
    run_id: str  # the run being resumed
    start_at: dict[str, Phase | None]  # None: done earlier, nothing to do
    services_before: dict[str, dict[str, str]] = field(default_factory=dict)
    # Nodes the resumed run got past preflight with: a drain found at the balancer may be its own.
    touched: frozenset[str] = frozenset()

    @property
    def pending(self) -> list[str]:
        return [name for name, phase in self.start_at.items() if phase is not None]


def resume_point(
    outcome: NodeOutcome | None, last_phase: Phase | None, last_status: PhaseStatus | None
) -> Phase | None:
    """The phase to start a node at, or None when it is done."""
    if outcome in ("done", "skipped"):
        # A node skipped by a resume was itself done before.
        return None
    if last_phase is None or last_phase == "preflight":
        # Never touched: every run preflights anyway, so start with the first phase that acts.
        return "drain"
    if last_status == "ok":
        index = PHASES.index(last_phase)
        # Past undrain's ok nothing was left to do but record it; undrain again is harmless.
        return PHASES[min(index + 1, len(PHASES) - 1)]
    # failed, cancelled or cut off while started: do that phase again.
    return last_phase


def resume_state(previous: RunResult, states: list[NodeState]) -> ResumeState:
    """What a resume of `previous` does with each node, from its journalled states."""
    start_at = {s.name: resume_point(s.outcome, s.last_phase, s.last_status) for s in states}
    before = {n.name: dict(n.services_before) for n in previous.nodes if n.services_before}
    touched = frozenset(s.name for s in states if s.last_phase not in (None, "preflight"))
    return ResumeState(run_id=previous.run_id, start_at=start_at, services_before=before, touched=touched)
