"""The failure budget on its own: count, percentage, per batch, canary."""

from __future__ import annotations

from orchestrator.budget import FailureBudget
from orchestrator.inventory import FailureBudgetPolicy


def budget(total: int = 10, canary: bool = False, **policy: object) -> FailureBudget:
    return FailureBudget(FailureBudgetPolicy.model_validate(policy), total, canary_batch=canary)


def fail(b: FailureBudget, *batches: int) -> FailureBudget:
    for batch in batches:
        b = b.record_failure(batch)
    return b


def test_nothing_is_tolerated_unless_configured() -> None:
    assert budget().tolerated == 0
    assert fail(budget(), 0).spent == "1 failures exceed the 0 tolerated"


def test_an_absolute_budget_is_spent_by_one_failure_more() -> None:
    b = budget(max_failures=2)
    assert fail(b, 0, 1).spent is None
    assert fail(b, 0, 1, 2).spent is not None


def test_a_percentage_of_all_nodes_rounds_down_exactly() -> None:
    assert budget(total=30, max_failure_percent=10).tolerated == 3
    assert budget(total=9, max_failure_percent=10).tolerated == 0
    assert budget(total=10, max_failure_percent=33.3).tolerated == 3


def test_with_both_limits_the_stricter_applies() -> None:
    assert budget(total=100, max_failures=5, max_failure_percent=2).tolerated == 2
    assert budget(total=100, max_failures=1, max_failure_percent=20).tolerated == 1


def test_per_batch_limit_counts_each_batch_on_its_own() -> None:
    b = budget(max_failures=10, per_batch=1)
    assert fail(b, 0, 1, 2).spent is None
    assert fail(b, 0, 1, 1).spent == "2 failures in batch 2 exceed the 1 tolerated per batch"
    assert fail(b, 0, 1, 1).failures_in(1) == 2


def test_a_canary_batch_tolerates_no_failure() -> None:
    assert fail(budget(max_failures=5, canary=True), 0).spent == "the canary batch failed"
    assert fail(budget(max_failures=5, canary=True), 1).spent is None


def test_recording_returns_a_new_budget() -> None:
    b = budget(max_failures=1)
    after = b.record_failure(0)
    assert (b.failures, after.failures) == (0, 1)
    assert after.to_json() == {
        "max_failures": 1,
        "max_failure_percent": None,
        "per_batch": None,
        "tolerated": 1,
        "failures": 1,
        "spent": None,
    }
