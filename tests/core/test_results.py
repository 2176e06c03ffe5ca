from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from orchestrator.results import (
    ErrorInfo,
    ExitCode,
    NodeOutcome,
    NodeResult,
    PhaseResult,
    Rotation,
    RunOutcome,
    RunResult,
    compute_totals,
    exit_code_for,
)

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def node(
    name: str,
    outcome: NodeOutcome = "done",
    rotation: Rotation = "in",
    phases: list[PhaseResult] | None = None,
) -> NodeResult:
    return NodeResult(name=name, host=f"{name}.corp", outcome=outcome, rotation=rotation, phases=phases or [])


def run(outcome: RunOutcome = "succeeded", nodes: list[NodeResult] | None = None, **extra: Any) -> RunResult:
    return RunResult(
        run_id="r1",
        tool_version="0.1.0",
        inventory_path="/etc/farm.yaml",
        started_at=T0,
        outcome=outcome,
        nodes=nodes or [],
        **extra,
    )


def test_exit_codes_are_the_documented_values() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "SUCCEEDED": 0,
        "INTERNAL": 1,
        "INVALID_INPUT": 2,
        "PREFLIGHT_REFUSED": 3,
        "PARTIAL": 4,
        "ABORTED_BUDGET": 5,
        "ABORTED_WINDOW": 6,
        "ABORTED_SIGNAL": 7,
        "LOCKED": 8,
        "ABORTED_CAPACITY": 9,
    }


def test_every_outcome_has_an_exit_code_and_only_failures_of_the_tool_share_one() -> None:
    codes = {outcome: exit_code_for(outcome) for outcome in get_args(RunOutcome)}
    assert codes["succeeded"] is ExitCode.SUCCEEDED
    assert codes["partial"] is ExitCode.PARTIAL
    assert codes["aborted_signal"] is ExitCode.ABORTED_SIGNAL
    shared = [outcome for outcome, code in codes.items() if list(codes.values()).count(code) > 1]
    assert sorted(shared) == ["incomplete", "internal_error"]
    assert ExitCode.LOCKED not in codes.values()  # a locked run never starts, so it has no outcome


def test_exit_code_is_derived_from_the_outcome_and_a_contradiction_is_refused() -> None:
    assert run("aborted_budget").exit_code is ExitCode.ABORTED_BUDGET
    with pytest.raises(ValidationError, match="does not match outcome"):
        run("partial", exit_code=0)


def test_times_must_be_aware_and_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    phase = PhaseResult(phase="stop", started_at=datetime(2025, 3, 1, 3, 0, tzinfo=paris), outcome="ok")
    assert phase.started_at == T0
    assert phase.started_at.utcoffset() == timedelta(0)
    assert '"started_at":"2025-03-01T02:00:00Z"' in phase.model_dump_json()
    with pytest.raises(ValidationError, match="timezone"):
        PhaseResult(phase="stop", started_at=datetime(2025, 3, 1, 2, 0), outcome="ok")


def test_totals_are_counted_from_the_nodes() -> None:
    nodes = [
        node("a"),
        node("b", "failed", "out"),
        node("c", "interrupted", "unknown"),
        node("d", "not_started"),
        node("e", "skipped"),
    ]
    totals = run("partial", nodes).totals
    assert totals == compute_totals(nodes)
    assert totals.model_dump() == {
        "nodes": 5,
        "done": 1,
        "failed": 1,
        "not_started": 1,
        "skipped": 1,
        "interrupted": 1,
        "out_of_rotation": 1,
        "rotation_unknown": 1,
    }


def test_totals_read_back_from_json_are_recomputed_not_trusted() -> None:
    result = run("partial", [node("a"), node("b", "failed", "out")])
    tampered = result.model_dump(mode="json")
    assert tampered["totals"]["failed"] == 1
    tampered["totals"]["failed"] = 0
    again = RunResult.model_validate(tampered)
    assert again.totals.failed == 1
    assert again == result


def test_json_round_trip_keeps_every_field() -> None:
    error = ErrorInfo(kind="cannot_accept_control", message="1061", code=1061, fqid="x,y", target="W3SVC")
    phases = [
        PhaseResult(phase="drain", started_at=T0, ended_at=T0 + timedelta(seconds=3), outcome="ok"),
        PhaseResult(
            phase="stop", started_at=T0 + timedelta(seconds=3), outcome="failed", attempts=3, error=error
        ),
    ]
    result = run(
        "partial",
        [node("web01", "failed", "out", phases)],
        ended_at=T0 + timedelta(minutes=5),
        plan={"strategy": "batch", "batches": [["web01"]]},
        budget={"max_failures": 1},
    )
    assert RunResult.model_validate_json(result.model_dump_json()) == result


def test_unknown_fields_and_kinds_are_refused() -> None:
    with pytest.raises(ValidationError):
        ErrorInfo(kind="oops", message="x")
    with pytest.raises(ValidationError):
        NodeResult.model_validate({"name": "a", "host": "h", "outcome": "done", "colour": "red"})


def test_failed_phase_is_the_last_phase_that_did_not_end_well() -> None:
    ok = PhaseResult(phase="drain", started_at=T0, ended_at=T0, outcome="ok")
    failed = PhaseResult(phase="stop", started_at=T0, ended_at=T0, outcome="failed")
    cancelled = PhaseResult(phase="undrain", started_at=T0, outcome="cancelled")
    assert node("a", phases=[ok]).failed_phase is None
    assert node("a", phases=[ok, failed, ok]).failed_phase == failed
    assert node("a", phases=[failed, cancelled]).failed_phase == cancelled


def test_durations() -> None:
    phase = PhaseResult(phase="stop", started_at=T0, ended_at=T0 + timedelta(seconds=2.5), outcome="ok")
    assert phase.duration_s == 2.5
    assert PhaseResult(phase="stop", started_at=T0, outcome="cancelled").duration_s is None
    finished = NodeResult(
        name="a", host="h", outcome="done", started_at=T0, ended_at=T0 + timedelta(minutes=1)
    )
    assert finished.duration_s == 60.0
    assert node("b", "not_started").duration_s is None
