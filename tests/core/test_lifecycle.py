"""The node lifecycle, tested by feeding events and reading states and effects (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.lifecycle import (
    ACTING,
    FINAL,
    STATES,
    TRANSITIONS,
    BakeFailed,
    Begin,
    Event,
    IllegalTransition,
    Lifecycle,
    NotStarted,
    PhaseFailed,
    PhaseFinished,
    PreflightFailed,
    PreflightPassed,
    Record,
    RunPhase,
    Signal,
    Skip,
)
from orchestrator.results import PHASES


def _ready() -> Lifecycle:
    life = Lifecycle("web-01")
    assert life.send(PreflightPassed()) == []
    return life


def test_a_clean_restart_runs_every_phase_in_order_then_records_done() -> None:
    life = _ready()
    effects = life.send(Begin())
    ran = []
    while effects and isinstance(effects[0], RunPhase):
        ran.append(effects[0].phase)
        assert life.phase == effects[0].phase and life.outcome == "interrupted"  # in flight
        effects = life.send(PhaseFinished(effects[0].phase))
    assert ran == ["drain", "stop", "start", "verify", "undrain"]
    assert effects == [Record("done", None, observe=True)]
    assert (life.state, life.outcome, life.reason) == ("done", "done", None)


def test_a_resumed_node_begins_at_its_phase() -> None:
    life = _ready()
    assert life.send(Begin("stop")) == [RunPhase("stop")]
    assert life.state == "stopping"


def test_a_failure_out_of_rotation_leaves_the_node_out_with_the_reason() -> None:
    life = _ready()
    life.send(Begin())
    life.send(PhaseFinished("drain"))
    effects = life.send(PhaseFailed("stop", "W3SVC did not stop within 5s", "out", timed_out=True))
    assert life.state == "left_out" and life.outcome == "failed"
    assert effects == [Record("failed", "stop failed: W3SVC did not stop within 5s", observe=True)]


def test_a_drain_that_never_took_effect_fails_the_node_in_rotation() -> None:
    life = _ready()
    life.send(Begin())
    assert life.send(PhaseFailed("drain", "balancer refused", "in")) == [Record("failed", None, observe=True)]
    assert (life.state, life.reason) == ("failed", None)


def test_a_signal_interrupts_the_node_where_it_is() -> None:
    life = _ready()
    life.send(Begin())
    life.send(PhaseFinished("drain"))
    (record,) = life.send(Signal("out"))
    assert life.state == "interrupted"
    assert record == Record("interrupted", "stop interrupted: the run was stopped", observe=True)


def test_a_canary_whose_health_breaks_during_the_bake_is_failed() -> None:
    life = _ready()
    life.send(Begin())
    for phase in ACTING:
        life.send(PhaseFinished(phase))
    assert life.outcome == "done"
    (record,) = life.send(BakeFailed("connection refused"))
    assert record == Record(
        "failed", "health did not hold during the canary bake: connection refused", observe=False
    )
    assert life.state == "failed"


def test_a_node_refused_at_preflight_was_never_touched() -> None:
    life = Lifecycle("web-01")
    assert life.send(PreflightFailed()) == [Record("not_started", None, observe=False)]
    assert life.outcome == "not_started"


@pytest.mark.parametrize(
    ("setup", "event"),
    [
        ([], Begin()),  # never preflighted
        ([PreflightPassed()], PhaseFinished("drain")),  # not started
        ([PreflightPassed(), Begin()], PhaseFinished("stop")),  # not the phase in progress
        ([PreflightPassed(), Begin()], BakeFailed("x")),  # only a done canary can fail its bake
        ([PreflightPassed(), Begin()], NotStarted()),
        ([PreflightPassed()], Signal()),  # nothing in progress to interrupt
        ([PreflightPassed()], Begin("preflight")),
        ([PreflightFailed()], PreflightPassed()),
        ([Skip()], Begin()),
    ],
)
def test_illegal_events_raise_and_change_nothing(setup: list[Event], event: Event) -> None:
    life = Lifecycle("web-01")
    for e in setup:
        life.send(e)
    state = life.state
    with pytest.raises(IllegalTransition, match=event.name):
        life.send(event)
    assert life.state == state


def test_every_state_is_reachable_and_every_final_state_is_a_sink() -> None:
    sources = {s for s, _, _ in TRANSITIONS}
    targets = {t for _, _, t in TRANSITIONS}
    assert targets | {"queued"} == set(STATES)
    assert FINAL - {"done"} <= set(STATES) - sources  # only `done` can still move (a failed bake)


_EVENTS = st.one_of(
    st.just(PreflightPassed()),
    st.just(PreflightFailed()),
    st.builds(Begin, st.sampled_from(PHASES)),
    st.builds(PhaseFinished, st.sampled_from(PHASES)),
    st.builds(
        PhaseFailed, st.sampled_from(PHASES), st.just("boom"), st.sampled_from(["in", "out", "unknown"])
    ),
    st.builds(Signal, st.sampled_from(["in", "out", "unknown"])),
    st.builds(BakeFailed, st.just("down")),
    st.just(Skip()),
    st.just(NotStarted()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENTS, max_size=14))
def test_any_event_sequence_follows_the_table(events: list[Event]) -> None:
    life = Lifecycle("web-01")
    phases_run: list[str] = []
    for event in events:
        before = life.state
        try:
            effects = life.send(event)
        except IllegalTransition:
            assert life.state == before  # refused events leave no trace
            continue
        assert (before, event.name, life.state) in TRANSITIONS
        phases_run += [e.phase for e in effects if isinstance(e, RunPhase)]
        records = [e for e in effects if isinstance(e, Record)]
        # A node's fate is recorded exactly when it reaches a final state, and says that fate.
        assert bool(records) == (life.state in FINAL)
        for record in records:
            assert record.outcome == life.outcome
            assert record.reason == life.reason
        # Out of rotation (left out) is never without a reason.
        if life.state == "left_out":
            assert life.reason
    # Phases are asked for in the workflow's order, never backwards within one start.
    assert phases_run == sorted(phases_run, key=PHASES.index)
