"""Where a resumed run picks a node up, from what the journal recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.journal import Before, Journal, NodeState
from orchestrator.plan import Plan
from orchestrator.results import ExitCode
from orchestrator.resume import remaining_plan, repair_state, resume_point, resume_state
from orchestrator.schedule import Done, Scheduler, Start, Wait, history_estimate
from tests.core.test_schedule import make, plans


@pytest.mark.parametrize(
    ("outcome", "phase", "status", "expected"),
    [
        ("done", "undrain", "ok", None),
        ("skipped", None, None, None),  # skipped by an earlier resume: it was done before that
        ("not_started", "preflight", "ok", "drain"),
        ("failed", "preflight", "failed", "drain"),  # nothing was touched; preflight runs again anyway
        (None, None, None, "drain"),
        ("failed", "stop", "failed", "stop"),
        ("interrupted", "start", "cancelled", "start"),
        (None, "verify", "started", "verify"),  # cut off mid-phase by a crash
        ("interrupted", "drain", "ok", "stop"),
        (None, "undrain", "ok", "undrain"),  # crashed before recording done: undrain again is harmless
    ],
)
def test_resume_point(
    outcome: str | None, phase: str | None, status: str | None, expected: str | None
) -> None:
    assert resume_point(outcome, phase, status) == expected  # type: ignore[arg-type]


def _state(name: str, outcome: str | None, phase: str | None, status: str | None) -> NodeState:
    before = Before({"W3SVC": "Running", "W3LOGSVC": "Running"}, {}, "in") if phase is not None else None
    return NodeState(
        name=name,
        host=name,
        group=None,
        last_phase=phase,  # type: ignore[arg-type]
        last_status=status,  # type: ignore[arg-type]
        rotation="out" if phase not in (None, "preflight") else "in",
        outcome=outcome,  # type: ignore[arg-type]
        reason=None,
        services={"W3LOGSVC": "Stopped"},
        before=before,
    )


DEAD_RUN = [
    _state("web-01", "done", "undrain", "ok"),
    _state("web-02", None, "stop", "started"),  # cut off while stopping
    _state("web-03", None, "preflight", "ok"),  # preflighted, never touched
    _state("web-04", None, None, None),
]


def test_resume_leaves_done_nodes_and_restores_the_earliest_record() -> None:
    state = resume_state("dead", DEAD_RUN)
    assert state.start_at == {"web-01": None, "web-02": "stop", "web-03": "drain", "web-04": "drain"}
    assert state.pending == ["web-02", "web-03", "web-04"]
    assert state.part_way == {"web-02": "stop"}
    # What ran before the dead run's first change, not what it left stopped.
    assert state.before["web-02"].services["W3LOGSVC"] == "Running"
    assert "web-01" not in state.before and not state.repair


def test_a_plain_run_after_a_dead_one_repairs_part_way_nodes_and_restarts_the_rest() -> None:
    state = repair_state("dead", DEAD_RUN)
    assert state.repair
    assert state.start_at == {"web-01": "drain", "web-02": "stop", "web-03": "drain", "web-04": "drain"}
    assert state.part_way == {"web-02": "stop"}
    assert state.before["web-02"].services["W3LOGSVC"] == "Running"


def test_a_run_that_never_got_to_the_nodes_it_took_over_passes_them_on() -> None:
    # A repair of DEAD_RUN was refused at preflight: web-02 only preflighted in it, yet it is still
    # where the dead run left it, and the record written ahead at that run's start says what ran.
    refused = [_state(s.name, "failed" if s.name == "web-02" else None, "preflight", "ok") for s in DEAD_RUN]
    state = repair_state("refused", refused, carried={"web-02": "stop"})
    assert state.start_at["web-02"] == "stop"
    assert state.part_way == {"web-02": "stop"}
    assert state.before["web-02"].services["W3LOGSVC"] == "Running"
    # Without what it carried, the same states look untouched.
    assert repair_state("refused", refused).part_way == {}


# --- a resume is a plan, not a replay ---------------------------------------------------------------


def test_finished_nodes_leave_the_plan_with_their_batches_and_the_bake_already_done() -> None:
    plan = make([["a"], ["b", "c"], ["d"]], canary=30, pause=10)
    rest = remaining_plan(plan, {"a", "b", "c"})
    assert rest.batches == (("d",),)
    assert rest.canary_bake_seconds is None  # the earlier run baked its canary
    # The canary still has work: it bakes after it, as in any run.
    assert remaining_plan(plan, {"b"}).batches == (("a",), ("c",), ("d",))
    assert remaining_plan(plan, {"b"}).canary_bake_seconds == 30


def test_a_resume_starts_at_once_no_bake_or_pause_for_batches_without_work() -> None:
    plan = make([["a"], ["b"], ["c"]], canary=300, pause=60)
    sched = Scheduler(remaining_plan(plan, {"a", "b"}), standing={"a", "b"})
    # The old replay fed a and b through as instant starts, then sat through the bake and a pause.
    assert [d for d in sched.next_actions(0.0)] == [Start("c")]


def test_finished_nodes_still_count_for_the_floor_and_their_health_is_fed() -> None:
    plan = make([["a", "b"], ["c"]], min_healthy=2, max_unavailable=1)
    sched = Scheduler(remaining_plan(plan, {"a", "b"}), standing={"a", "b"})
    assert sched.next_actions(0.0) == [Start("c")]  # a and b healthy: 2 stay in rotation
    sched = Scheduler(remaining_plan(plan, {"a", "b"}), standing={"a", "b"})
    assert sched.health_changed("a", healthy=False) is False  # not a canary: no node is failed
    (wait,) = sched.next_actions(0.0)
    assert isinstance(wait, Wait) and "capacity floor" in wait.reason


def test_a_resumed_run_decides_the_change_window_from_real_durations(tmp_path: Path) -> None:
    """History says a node takes 40 s; 30 s are left in the window: the last node is not started,
    although two nodes were finished by the run being resumed (once fed as 0 s starts)."""
    inventory = tmp_path / "farm.yaml"
    inventory.write_text("x")
    journal = Journal(tmp_path / "journal.sqlite")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for run in ("r1", "r2"):
        journal.begin_run(run, inventory, "d", {}, [("a", "h", None), ("b", "h", None)], started_at=t0)
        for node in ("a", "b"):
            journal.record_phase(run, node, "drain", "started", t0)
            journal.record_phase(run, node, "undrain", "ok", t0 + timedelta(seconds=40))
            journal.set_node_state(run, node, rotation="in", outcome="done")
        journal.finish_run(run, "succeeded", ExitCode.SUCCEEDED, t0 + timedelta(seconds=90))
    estimate = history_estimate(journal.node_durations(inventory))
    journal.close()
    assert estimate == 40.0

    plan = make([["a"], ["b"], ["c"]])
    sched = Scheduler(
        remaining_plan(plan, {"a", "b"}), finish_by=30.0, estimate=estimate, standing={"a", "b"}
    )
    assert sched.next_actions(0.0) == [Done("aborted_window")]
    assert sched.not_started == ("c",)
    # With room for it, the same node starts.
    roomy = Scheduler(
        remaining_plan(plan, {"a", "b"}), finish_by=60.0, estimate=estimate, standing={"a", "b"}
    )
    assert roomy.next_actions(0.0) == [Start("c")]


@settings(max_examples=150, deadline=None)
@given(plan=plans(), data=st.data())
def test_a_resumed_plan_starts_only_unfinished_nodes_and_waits_only_between_batches_with_work(
    plan: Plan, data: st.DataObject
) -> None:
    finished = data.draw(st.sets(st.sampled_from(plan.nodes)), label="finished")
    rest = remaining_plan(plan, finished)
    assert [n for n in plan.nodes if n not in finished] == list(rest.nodes)  # order kept
    sched = Scheduler(rest, standing=finished)
    started: list[str] = []
    durations: list[float] = []
    gates = 0
    now = 0.0
    in_flight: dict[str, float] = {}
    for _ in range(200):
        actions = sched.next_actions(now)
        if isinstance(actions[0], Done):
            break
        if isinstance(actions[0], Start):
            for action in actions:
                assert isinstance(action, Start)
                sched.node_started(action.name, now)
                started.append(action.name)
                in_flight[action.name] = now
            continue
        (wait,) = actions
        assert isinstance(wait, Wait)
        if in_flight:
            now += data.draw(st.floats(1, 50), label="time to the next finish")
            name = next(iter(in_flight))
            durations.append(now - in_flight.pop(name))
            sched.node_finished(name, now, ok=True)
            # The estimate is this run's real durations, never a zero-length pass of a finished node.
            assert sched.estimate(rest.nodes[0]) == pytest.approx(sum(durations) / len(durations))
        elif wait.until is not None:
            gates += wait.reason in ("canary bake", "pause between batches")
            now = max(now, wait.until)
        else:
            break  # held by the floor with nothing to run: the operator's move
    assert not set(started) & finished
    assert len(started) == len(set(started))
    assert gates <= max(0, len(rest.batches) - 1)
