"""Where a run picks up the nodes an earlier, unfinished run left. Pure: the caller reads the journal.

Two callers: `resume` finishes that run (its done nodes are left alone), and a plain `run` that finds
the latest run incomplete repairs first (the nodes it left part-way re-enter where they stopped, the
others are restarted as usual). Either way what must run again is what ran before the earlier run's
first change to the node, never a state that run produced. Every phase observes before it acts, so
re-entering a phase that was cut short is safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from orchestrator.journal import Before, NodeState
from orchestrator.plan import Plan
from orchestrator.results import PHASES, NodeOutcome, Phase, PhaseStatus


@dataclass(frozen=True)
class ResumeState:
    run_id: str  # the earlier run
    start_at: dict[str, Phase | None]  # None: done earlier, nothing to do
    before: dict[str, Before] = field(default_factory=dict)  # the earliest record, per node left part-way
    # Nodes the earlier run changed and did not finish (stopped, drained or unknown), and the phase
    # each re-enters at.
    part_way: dict[str, Phase] = field(default_factory=dict)
    repair: bool = False  # a plain run repairing first, not a resume

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


def resume_state(
    run_id: str, states: list[NodeState], carried: Mapping[str, Phase] | None = None
) -> ResumeState:
    """What a resume of `run_id` does with each node, from its journalled states. `carried`: the
    nodes `run_id` had itself picked up part-way from an earlier run; one it did not get to touch
    (refused, stopped, or killed first) is still where that earlier run left it."""
    carried = carried or {}
    start_at: dict[str, Phase | None] = {}
    for s in states:
        untouched = s.outcome != "done" and s.last_phase in (None, "preflight")
        if untouched and s.name in carried:
            start_at[s.name] = carried[s.name]
        else:
            start_at[s.name] = resume_point(s.outcome, s.last_phase, s.last_status)
    before = {s.name: s.before for s in states if s.before is not None and start_at[s.name] is not None}
    part_way = {
        s.name: phase
        for s in states
        if (phase := start_at[s.name]) is not None
        and (s.last_phase not in (None, "preflight") or s.name in carried)
    }
    return ResumeState(run_id=run_id, start_at=start_at, before=before, part_way=part_way)


def repair_state(
    run_id: str, states: list[NodeState], carried: Mapping[str, Phase] | None = None
) -> ResumeState:
    """What a plain run does after `run_id` died: nodes it left part-way re-enter where they stopped
    (restoring the earliest record); every other node, done or not, is restarted from the start."""
    resumed = resume_state(run_id, states, carried)
    start_at: dict[str, Phase | None] = {n: p or "drain" for n, p in resumed.start_at.items()}
    return ResumeState(
        run_id=run_id, start_at=start_at, before=resumed.before, part_way=resumed.part_way, repair=True
    )


def remaining_plan(plan: Plan, finished: Iterable[str]) -> Plan:
    """The plan without the nodes an earlier run finished: a resume is a plan, not a replay. Batches
    left empty go, with their pauses; the canary bake only if the canary batch still has work (the
    earlier run baked it). The finished nodes still count for the floor (`Scheduler(standing=...)`)."""
    done = set(finished)
    batches = [tuple(n for n in batch if n not in done) for batch in plan.batches]
    canary = plan.canary_bake_seconds if batches and batches[0] else None
    return replace(plan, batches=tuple(b for b in batches if b), canary_bake_seconds=canary)
