"""The scheduler as a state machine: feed events, read decisions."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.inventory import FailureBudgetPolicy
from orchestrator.plan import Limits, Plan
from orchestrator.schedule import Done, Scheduler, Start, Wait


def make(
    batches: list[list[str]],
    *,
    strategy: str = "batch",
    max_unavailable: int | None = None,
    min_healthy: int = 0,
    window: int | None = None,
    groups: dict[str, int] | None = None,
    node_groups: dict[str, str] | None = None,
    canary: float | None = None,
    pause: float = 0.0,
    budget: dict[str, Any] | None = None,
    unhealthy: set[str] | None = None,
    deadline: float = 100.0,
) -> Plan:
    names = [name for batch in batches for name in batch]
    return Plan(
        strategy=strategy,  # type: ignore[arg-type]
        order="inventory",
        seed=None,
        batches=tuple(tuple(batch) for batch in batches),
        limits=Limits(
            max_unavailable=max_unavailable or len(names),
            min_healthy=min_healthy,
            groups=groups or {},
            window=window,
        ),
        canary_bake_seconds=canary,
        pause_seconds=pause,
        failure_budget=FailureBudgetPolicy(**(budget or {})),
        finish_by=None,
        node_groups={name: (node_groups or {}).get(name) for name in names},
        deadlines=dict.fromkeys(names, deadline),
        unhealthy=frozenset(unhealthy or ()),
    )


def starts(actions: list[Any]) -> list[str]:
    assert all(isinstance(a, Start) for a in actions), actions
    return [a.name for a in actions]


def start_all(s: Scheduler, now: float) -> list[str]:
    names = starts(s.next_actions(now))
    for name in names:
        s.node_started(name, now)
    return names


# --- batches, pauses, canary ---------------------------------------------------------------------------


def test_a_batch_starts_only_when_the_previous_one_has_finished() -> None:
    s = Scheduler(make([["a", "b"], ["c"]]))
    assert start_all(s, 0) == ["a", "b"]
    assert s.next_actions(1) == [Wait(None, "waiting for 2 nodes in flight to finish")]
    s.node_finished("a", 5, ok=True)
    assert s.next_actions(5) == [Wait(None, "waiting for 1 node in flight to finish")]
    s.node_finished("b", 6, ok=True)
    assert start_all(s, 6) == ["c"]
    s.node_finished("c", 9, ok=True)
    assert s.next_actions(9) == [Done("succeeded")]
    assert (s.succeeded, s.failed, s.not_started) == (("a", "b", "c"), (), ())


def test_next_actions_only_decides() -> None:
    s = Scheduler(make([["a", "b"]]))
    assert s.next_actions(0) == s.next_actions(0) == [Start("a"), Start("b")]
    assert s.not_started == ("a", "b")


def test_pause_between_batches() -> None:
    s = Scheduler(make([["a"], ["b"]], pause=30))
    start_all(s, 0)
    s.node_finished("a", 10, ok=True)
    assert s.next_actions(10) == [Wait(40, "pause between batches")]
    assert s.next_actions(39.9) == [Wait(40, "pause between batches")]
    assert start_all(s, 40) == ["b"]


def test_canary_bakes_after_the_first_batch_and_pauses_after_the_others() -> None:
    s = Scheduler(make([["a"], ["b"], ["c"]], canary=120, pause=5))
    start_all(s, 0)
    s.node_finished("a", 10, ok=True)
    assert s.next_actions(10) == [Wait(130, "canary bake")]
    start_all(s, 130)
    s.node_finished("b", 140, ok=True)
    assert s.next_actions(140) == [Wait(145, "pause between batches")]


def test_a_failed_canary_stops_the_run_whatever_the_budget() -> None:
    s = Scheduler(make([["a"], ["b"]], canary=60, budget={"max_failures": 5}))
    start_all(s, 0)
    s.node_finished("a", 10, ok=False)
    assert s.next_actions(100) == [Done("aborted_budget")]
    assert s.budget.spent == "the canary batch failed"
    assert s.not_started == ("b",)


def test_canary_health_must_hold_during_the_bake() -> None:
    s = Scheduler(make([["a"], ["b"]], canary=60, budget={"max_failures": 5}))
    start_all(s, 0)
    s.node_finished("a", 10, ok=True)
    s.health_changed("a", healthy=False)
    assert (s.succeeded, s.failed) == ((), ("a",))
    assert s.next_actions(100) == [Done("aborted_budget")]


def test_health_loss_after_the_bake_is_not_a_canary_failure() -> None:
    s = Scheduler(make([["a"], ["b", "c"]], canary=60, budget={"max_failures": 5}))
    start_all(s, 0)
    s.node_finished("a", 10, ok=True)
    assert start_all(s, 70) == ["b", "c"]
    s.health_changed("a", healthy=False)
    assert s.failed == () and s.budget.failures == 0


# --- window and limits ---------------------------------------------------------------------------------


def test_window_starts_the_next_node_as_soon_as_one_finishes() -> None:
    s = Scheduler(make([["a", "b", "c", "d"]], strategy="window", window=2))
    assert start_all(s, 0) == ["a", "b"]
    s.node_finished("b", 3, ok=True)
    assert start_all(s, 3) == ["c"]


def test_group_limit_skips_ahead_to_a_node_of_another_group() -> None:
    plan = make(
        [["a1", "a2", "b1"]],
        strategy="window",
        window=3,
        groups={"a": 1},
        node_groups={"a1": "a", "a2": "a", "b1": "b"},
    )
    s = Scheduler(plan)
    assert start_all(s, 0) == ["a1", "b1"]
    s.node_finished("a1", 4, ok=True)
    assert start_all(s, 4) == ["a2"]


def test_max_unavailable_caps_a_batch_larger_than_it() -> None:
    s = Scheduler(make([["a", "b", "c"]], max_unavailable=2))
    assert start_all(s, 0) == ["a", "b"]
    s.node_finished("a", 1, ok=True)
    assert start_all(s, 1) == ["c"]


def test_the_floor_counts_nodes_that_became_unhealthy_during_the_run() -> None:
    s = Scheduler(
        make([["a", "b", "c", "d"]], strategy="window", window=4, min_healthy=2, budget={"max_failures": 3})
    )
    s.health_changed("d", healthy=False)
    # 3 healthy, floor 2: one healthy node may go out; d is already out and may ride along.
    assert start_all(s, 0) == ["a", "d"]
    s.node_finished("a", 5, ok=False)  # a failed node stays out of rotation
    s.node_finished("d", 6, ok=True)
    assert s.next_actions(6) == [Start("b")]


def test_a_blocked_floor_waits_for_recovery() -> None:
    s = Scheduler(make([["a", "b", "c"]], min_healthy=2, budget={"max_failures": 3}))
    assert start_all(s, 0) == ["a"]  # 3 healthy, floor 2
    s.node_finished("a", 5, ok=False)
    [wait] = s.next_actions(5)
    assert wait == Wait(
        None, "capacity floor: 2 healthy, at least 2 must stay in rotation; waiting for nodes to recover"
    )
    s.health_changed("a", healthy=True)  # an operator fixed it
    assert s.next_actions(6) == [Start("b")]


def test_a_floor_that_blocks_too_long_gives_up_instead_of_waiting_forever() -> None:
    s = Scheduler(make([["a", "b", "c"]], min_healthy=2, budget={"max_failures": 3}), stall_limit=30, now=0)
    assert start_all(s, 0) == ["a"]
    s.node_finished("a", 5, ok=False)
    [wait] = s.next_actions(6)
    assert isinstance(wait, Wait) and wait.until == 35  # idle since 5, limit 30
    assert s.next_actions(34.9) == [wait]
    assert s.next_actions(35) == [Done("aborted_capacity")]
    assert s.not_started == ("b", "c")


def test_the_stall_clock_restarts_when_a_node_runs() -> None:
    s = Scheduler(make([["a", "b", "c"]], min_healthy=2, budget={"max_failures": 3}), stall_limit=10, now=0)
    start_all(s, 0)
    s.node_finished("a", 5, ok=False)
    s.health_changed("a", healthy=True)
    assert start_all(s, 20) == ["b"]  # started after the first idle stretch would have run out
    s.node_finished("b", 22, ok=False)
    [wait] = s.next_actions(23)
    assert isinstance(wait, Wait) and wait.until == 32


def test_health_reports_about_nodes_in_flight_are_ignored() -> None:
    s = Scheduler(make([["a", "b"]], max_unavailable=1, min_healthy=1))
    start_all(s, 0)
    s.health_changed("a", healthy=False)  # drained by us: of course it is out
    s.node_finished("a", 3, ok=True)
    assert s.next_actions(3) == [Start("b")]


# --- failure budget ------------------------------------------------------------------------------------


def test_failures_within_budget_end_partial() -> None:
    s = Scheduler(make([["a"], ["b"]], budget={"max_failures": 1}))
    start_all(s, 0)
    s.node_finished("a", 1, ok=False)
    start_all(s, 1)
    s.node_finished("b", 2, ok=True)
    assert s.next_actions(2) == [Done("partial")]


def test_once_the_budget_is_spent_nothing_starts_and_in_flight_nodes_finish() -> None:
    s = Scheduler(make([["a", "b", "c"], ["d"]], budget={"max_failures": 1}))
    start_all(s, 0)
    s.node_finished("a", 1, ok=False)
    s.node_finished("b", 2, ok=False)
    assert s.budget.spent == "2 failures exceed the 1 tolerated"
    assert s.next_actions(2) == [Wait(None, "aborted_budget: waiting for 1 node in flight to finish")]
    s.node_finished("c", 3, ok=True)
    assert s.next_actions(3) == [Done("aborted_budget")]
    assert s.not_started == ("d",)


def test_no_failure_is_tolerated_by_default() -> None:
    s = Scheduler(make([["a"], ["b"]]))
    start_all(s, 0)
    s.node_finished("a", 1, ok=False)
    assert s.next_actions(1) == [Done("aborted_budget")]


def test_per_batch_budget() -> None:
    s = Scheduler(make([["a", "b"], ["c"]], budget={"max_failures": 5, "per_batch": 1}))
    start_all(s, 0)
    s.node_finished("a", 1, ok=False)
    assert s.budget.spent is None
    s.node_finished("b", 1, ok=False)
    assert s.budget.spent == "2 failures in batch 1 exceed the 1 tolerated per batch"
    assert s.next_actions(1) == [Done("aborted_budget")]


# --- change window and signals ---------------------------------------------------------------------------


def test_without_measurements_the_node_deadline_is_the_estimate() -> None:
    s = Scheduler(make([["a"]], deadline=900), finish_by=600)
    assert s.next_actions(0) == [Done("aborted_window")]
    assert s.not_started == ("a",)


def test_an_estimate_from_the_caller_comes_before_the_deadline() -> None:
    s = Scheduler(make([["a"]], deadline=900), finish_by=600, estimate=120)
    assert s.next_actions(400) == [Start("a")]
    assert s.next_actions(480) == [Done("aborted_window")]


def test_durations_measured_in_this_run_replace_the_estimate() -> None:
    s = Scheduler(make([["a"], ["b"], ["c"]]), finish_by=1000, estimate=100)
    start_all(s, 0)
    s.node_finished("a", 300, ok=True)
    start_all(s, 300)
    s.node_finished("b", 700, ok=True)  # mean 350: c would end at 1050
    assert s.estimate("c") == 350
    assert s.next_actions(700) == [Done("aborted_window")]


def test_the_window_closing_while_the_floor_blocks_ends_the_run() -> None:
    s = Scheduler(make([["a", "b"]], min_healthy=1, budget={"max_failures": 1}), finish_by=1000, estimate=100)
    s.health_changed("b", healthy=False)
    assert s.next_actions(0) == [Start("b")]  # a would break the floor, b is already out
    s.node_started("b", 0)
    s.node_finished("b", 50, ok=False)
    s.health_changed("b", healthy=False)
    # Failed nodes say nothing about how long a restart takes: the estimate stays 100.
    assert s.next_actions(60) == [
        Wait(900, "capacity floor: 1 healthy, at least 1 must stay in rotation; waiting for nodes to recover")
    ]
    assert s.next_actions(900) == [Done("aborted_window")]
    assert s.not_started == ("a",)


def test_stop_requested_lets_in_flight_nodes_finish() -> None:
    s = Scheduler(make([["a", "b"], ["c"]]))
    start_all(s, 0)
    s.stop_requested()
    s.node_finished("a", 1, ok=True)
    assert s.next_actions(1) == [Wait(None, "aborted_signal: waiting for 1 node in flight to finish")]
    s.node_finished("b", 2, ok=True)
    assert s.next_actions(2) == [Done("aborted_signal")]
    assert s.not_started == ("c",)


def test_the_first_abort_reason_is_kept() -> None:
    s = Scheduler(make([["a", "b"]]))
    start_all(s, 0)
    s.stop_requested()
    s.node_finished("a", 1, ok=False)
    s.node_finished("b", 1, ok=False)
    assert s.next_actions(1) == [Done("aborted_signal")]


def test_events_that_contradict_the_state_are_refused() -> None:
    s = Scheduler(make([["a"], ["b"]]))
    with pytest.raises(ValueError, match="not in flight"):
        s.node_finished("a", 0, ok=True)
    s.node_started("a", 0)
    with pytest.raises(ValueError, match="not waiting to start"):
        s.node_started("a", 0)
    with pytest.raises(ValueError, match="not in the plan"):
        s.health_changed("zz", healthy=False)


# --- properties ----------------------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(1, 12))
    names = [f"n{i}" for i in range(count)]
    cuts = sorted(draw(st.sets(st.integers(1, count - 1), max_size=count - 1)) if count > 1 else set())
    edges = [0, *cuts, count]
    batches = [names[a:b] for a, b in itertools.pairwise(edges)]
    node_groups = {n: draw(st.sampled_from(["g1", "g2", "g3"])) for n in names}
    strategy = draw(st.sampled_from(["batch", "window"]))
    return make(
        batches,
        strategy=strategy,
        max_unavailable=draw(st.integers(1, count)),
        min_healthy=draw(st.integers(0, count - 1)),
        window=draw(st.integers(1, count)) if strategy == "window" else None,
        groups={g: draw(st.integers(1, 3)) for g in draw(st.sets(st.sampled_from(["g1", "g2", "g3"])))},
        node_groups=node_groups,
        canary=draw(st.sampled_from([None, 0.0, 30.0])),
        pause=draw(st.sampled_from([0.0, 10.0])),
        budget={
            "max_failures": draw(st.none() | st.integers(0, 3)),
            "max_failure_percent": draw(st.none() | st.floats(0, 100)),
            "per_batch": draw(st.none() | st.integers(0, 2)),
        },
        unhealthy=draw(st.sets(st.sampled_from(names))),
        deadline=draw(st.sampled_from([50.0, 500.0])),
    )


class Farm:
    """The test's own account of the pool, to check every Start against the limits."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.unhealthy = set(plan.unhealthy)
        self.in_flight: set[str] = set()
        self.finished: set[str] = set()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []  # of the nodes that finished well, in order

    def estimate(self, name: str) -> float:
        """What a node should be expected to take, worked out here, not asked of the scheduler: the
        mean of this run's good durations, else (no history given) the node's deadline."""
        if self.durations:
            return statistics.fmean(self.durations)
        return self.plan.deadlines[name]

    def healthy(self) -> int:
        return sum(1 for n in self.plan.nodes if n not in self.unhealthy and n not in self.in_flight)

    def check_start(self, name: str, now: float, finish_by: float | None) -> None:
        limits = self.plan.limits
        assert len(self.in_flight) + 1 <= (limits.window or limits.max_unavailable)
        assert len(self.in_flight) + 1 <= limits.max_unavailable
        group = self.plan.node_groups[name]
        if group is not None and group in limits.groups:
            assert sum(self.plan.node_groups[n] == group for n in self.in_flight) + 1 <= limits.groups[group]
        if name not in self.unhealthy:
            assert self.healthy() - 1 >= limits.min_healthy
        if finish_by is not None:
            assert now + self.estimate(name) < finish_by
        batch = next(i for i, b in enumerate(self.plan.batches) if name in b)
        assert all(n in self.finished for b in self.plan.batches[:batch] for n in b)


@settings(max_examples=200, deadline=None)
@given(plan=plans(), data=st.data())
def test_any_sequence_of_events_respects_every_limit(plan: Plan, data: st.DataObject) -> None:
    finish_by = data.draw(st.none() | st.floats(100, 3000), label="finish_by")
    s = Scheduler(plan, finish_by=finish_by)
    farm = Farm(plan)
    now = 0.0
    stopped = False
    for step in range(400):
        calm = step > 150  # later on, only events that move the run forward
        actions = s.next_actions(now)
        if isinstance(actions[0], Done):
            assert len(actions) == 1 and not farm.in_flight
            outcome = actions[0].outcome
            break
        if isinstance(actions[0], Start):
            assert s.budget.spent is None and not stopped
            for action in actions:
                assert isinstance(action, Start)
                farm.check_start(action.name, now, finish_by)
                s.node_started(action.name, now)
                farm.in_flight.add(action.name)
                farm.started[action.name] = now
            continue
        [wait] = actions
        assert isinstance(wait, Wait)
        event = data.draw(
            st.sampled_from(["finish", "time"] if calm else ["finish", "finish", "health", "time", "stop"]),
            label="event",
        )
        if event == "finish" and farm.in_flight:
            name = data.draw(st.sampled_from(sorted(farm.in_flight)), label="node")
            now += data.draw(st.floats(1, 100), label="duration")
            ok = data.draw(st.booleans(), label="ok") or calm
            s.node_finished(name, now, ok=ok)
            farm.in_flight.discard(name)
            farm.finished.add(name)
            if ok:
                farm.durations.append(now - farm.started[name])
            (farm.unhealthy.discard if ok else farm.unhealthy.add)(name)
        elif event == "health":
            name = data.draw(st.sampled_from(plan.nodes), label="node")
            healthy = data.draw(st.booleans(), label="healthy")
            s.health_changed(name, healthy)
            if name not in farm.in_flight:
                (farm.unhealthy.discard if healthy else farm.unhealthy.add)(name)
        elif event == "stop":
            s.stop_requested()
            stopped = True
        elif wait.until is not None:
            now = max(now, wait.until)
        elif not farm.in_flight:
            # Blocked by the floor with nothing running: the operator brings a node back.
            name = sorted(farm.unhealthy)[0]
            s.health_changed(name, healthy=True)
            farm.unhealthy.discard(name)
    else:
        raise AssertionError("the run never ended")

    assert Counter([*s.succeeded, *s.failed, *s.not_started]) == Counter(plan.nodes)
    if outcome == "aborted_budget":
        assert s.budget.spent is not None
    if outcome in ("succeeded", "partial"):
        assert not s.not_started and not stopped and s.budget.spent is None
        assert (outcome == "succeeded") == (not s.failed)
    if outcome == "aborted_window":
        assert finish_by is not None and s.not_started


def test_history_estimate_is_cautious() -> None:
    from orchestrator.schedule import history_estimate

    assert history_estimate([]) is None
    assert history_estimate([3.0, 9.0, 4.0]) == 9.0  # few samples: the longest
    many = [float(n) for n in range(1, 21)]
    assert 18.0 <= history_estimate(many) <= 20.0  # type: ignore[operator]


def test_a_history_estimate_lets_nodes_start_inside_a_short_window() -> None:
    plan = make([["a", "b"]], deadline=900.0)
    without = Scheduler(plan, finish_by=120.0)
    assert without.next_actions(0.0) == [Done("aborted_window")]  # 900 s per node would overrun
    with_history = Scheduler(plan, finish_by=120.0, estimate=30.0)
    assert starts(with_history.next_actions(0.0)) == ["a", "b"]


def test_a_node_that_would_overrun_the_window_by_this_runs_durations_is_not_started() -> None:
    plan = make([["a"], ["b"]], deadline=10.0)
    s = Scheduler(plan, finish_by=100.0)
    assert starts(s.next_actions(0.0)) == ["a"]  # expected 10 s (its deadline): ends by 10
    s.node_started("a", 0.0)
    s.node_finished("a", 60.0, ok=True)
    # a took 60 s, so b is expected to take 60 s too: starting at 60 it would end at 120, past 100.
    assert s.next_actions(60.0) == [Done("aborted_window")]
    assert s.not_started == ("b",)
