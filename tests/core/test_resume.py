"""Where a resumed run picks a node up, from what the journal recorded."""

from __future__ import annotations

import pytest

from orchestrator.journal import Before, NodeState
from orchestrator.resume import repair_state, resume_point, resume_state


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
