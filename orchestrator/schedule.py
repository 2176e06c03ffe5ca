"""The rollout scheduler: a pure state machine that decides which node starts when.

In the style of h11: the coordinator feeds events (a node started or finished, a node's health
changed outside our control, a stop was requested) and asks `next_actions(now)` what to do. The
scheduler does no I/O and has no clock of its own; `now` is monotonic seconds from the caller.

`next_actions` returns one or more `Start`, or a single `Wait`, or a single `Done`. It changes no
state: the caller reports each node it actually started with `node_started`, then asks again.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.budget import FailureBudget
from orchestrator.plan import Plan

Outcome = Literal[
    "succeeded", "partial", "aborted_budget", "aborted_window", "aborted_signal", "aborted_capacity"
]


def history_estimate(durations: Sequence[float]) -> float | None:
    """A node's expected duration from earlier runs, for the change window: cautious (the 90th
    percentile, or the longest when there are few), since overrunning a window is the worse error."""
    if not durations:
        return None
    if len(durations) < 10:
        return max(durations)
    return statistics.quantiles(durations, n=10)[-1]


@dataclass(frozen=True)
class Start:
    name: str


@dataclass(frozen=True)
class Wait:
    """Nothing to start now: ask again at `until`, or when the next event arrives (None)."""

    until: float | None
    reason: str


@dataclass(frozen=True)
class Done:
    """Nothing is in flight and nothing more will start."""

    outcome: Outcome


Decision = Start | Wait | Done


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        *,
        finish_by: float | None = None,
        estimate: float | None = None,
        stall_limit: float | None = None,
        now: float = 0.0,
        standing: Iterable[str] = (),
    ) -> None:
        """`finish_by`: the change window's end on the caller's monotonic clock. `estimate`: seconds one
        node is expected to take (e.g. from earlier runs) until this run has its own measurements.
        `stall_limit`: how long the capacity floor may hold every remaining node back, with nothing in
        flight, before the run gives up (`aborted_capacity`) instead of waiting forever; `now` is when
        that clock starts if nothing ever runs. `standing`: nodes outside the batches that still count
        for the capacity floor (finished by the run being resumed); they are never started, and their
        health is fed like any other's."""
        self._plan = plan
        self._finish_by = finish_by
        self._estimate = estimate
        self._batch_of = {name: index for index, batch in enumerate(plan.batches) for name in batch}
        self._standing = frozenset(standing) - self._batch_of.keys()
        self._pending: list[list[str]] = [list(batch) for batch in plan.batches]
        self._in_flight: dict[str, float] = {}
        self._succeeded: list[str] = []
        self._failed: list[str] = []
        self._durations: list[float] = []
        self._unhealthy = set(plan.unhealthy)
        self._batch_finished_at: dict[int, float] = {}
        self._budget = FailureBudget(
            plan.failure_budget,
            len(self._batch_of) + len(self._standing),
            canary_batch=plan.canary_bake_seconds is not None,
        )
        self._abort: Outcome | None = None
        self._stall_limit = stall_limit
        self._idle_since: float | None = now

    # --- events ---------------------------------------------------------------------------------

    def node_started(self, name: str, now: float) -> None:
        batch = self._batch_of.get(name)
        if batch is None or name not in self._pending[batch]:
            raise ValueError(f"node {name!r} is not waiting to start")
        self._pending[batch].remove(name)
        self._in_flight[name] = now
        self._idle_since = None

    def node_finished(self, name: str, now: float, ok: bool) -> None:
        started = self._in_flight.pop(name, None)
        if started is None:
            raise ValueError(f"node {name!r} is not in flight")
        if ok:
            # Only a verified, healthy node goes back in rotation.
            self._succeeded.append(name)
            self._durations.append(now - started)
            self._unhealthy.discard(name)
        else:
            # A failed node stays out of rotation: it no longer counts toward the capacity floor.
            self._failed.append(name)
            self._unhealthy.add(name)
            self._record_failure(name)
        if not self._in_flight:
            self._idle_since = now
        batch = self._batch_of[name]
        if not self._pending[batch] and not any(self._batch_of[n] == batch for n in self._in_flight):
            self._batch_finished_at[batch] = now

    def health_changed(self, name: str, healthy: bool) -> bool:
        """A node became unhealthy or left rotation (or came back) outside the run's control.
        True when this fails a canary during its bake (the caller tells the node's lifecycle)."""
        if name not in self._batch_of and name not in self._standing:
            raise ValueError(f"node {name!r} is not in the plan")
        if name in self._in_flight:
            return False  # the run has it out of rotation; its workflow decides how it ends
        if healthy:
            self._unhealthy.discard(name)
            return False
        self._unhealthy.add(name)
        if self._baking_canary() and name in self._succeeded:
            # The bake exists to catch exactly this: the canary's health did not hold.
            self._succeeded.remove(name)
            self._failed.append(name)
            self._record_failure(name)
            return True
        return False

    def stop_requested(self) -> None:
        """First SIGINT/SIGTERM: start nothing more; nodes in flight finish."""
        if self._abort is None:
            self._abort = "aborted_signal"

    # --- decisions ------------------------------------------------------------------------------

    def next_actions(self, now: float) -> list[Decision]:
        if self._abort is not None:
            if self._in_flight:
                return [Wait(None, f"{self._abort}: waiting for {self._in_flight_text()} to finish")]
            return [Done(self._abort)]
        batch = self._current_batch()
        if batch is None:
            return [Done("partial" if self._failed else "succeeded")]
        gate = self._gate(batch)
        if gate is not None and now < gate[0]:
            return [Wait(gate[0], gate[1])]
        starts, floor_blocked, window_blocked = self._startable(batch, now)
        if starts:
            return [Start(name) for name in starts]
        if self._in_flight:
            return [Wait(None, f"waiting for {self._in_flight_text()} to finish")]
        if floor_blocked:
            # Nothing runs, so only a health change (or the change window closing) can move us on.
            closes = [self._latest_start(name) for name in floor_blocked]
            if self._stall_limit is not None and self._idle_since is not None:
                gives_up = self._idle_since + self._stall_limit
                if now >= gives_up:
                    return [Done("aborted_capacity")]
                closes.append(gives_up)
            until = min((t for t in closes if t is not None), default=None)
            return [
                Wait(
                    until,
                    f"capacity floor: {self._healthy_count()} healthy, at least "
                    f"{self._plan.limits.min_healthy} must stay in rotation; waiting for nodes to recover",
                )
            ]
        assert window_blocked  # every other limit leaves room once nothing is in flight
        return [Done("aborted_window")]

    # --- what the coordinator and the report read -------------------------------------------------

    @property
    def not_started(self) -> tuple[str, ...]:
        return tuple(name for batch in self._pending for name in batch)

    @property
    def in_flight(self) -> tuple[str, ...]:
        return tuple(self._in_flight)

    @property
    def succeeded(self) -> tuple[str, ...]:
        return tuple(self._succeeded)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(self._failed)

    @property
    def canary_baking(self) -> tuple[str, ...]:
        """The canary nodes whose health must hold now (the bake is on); feed `health_changed`."""
        if not self._baking_canary():
            return ()
        return tuple(name for name in self._plan.batches[0] if name in self._succeeded)

    @property
    def budget(self) -> FailureBudget:
        return self._budget

    def estimate(self, name: str) -> float:
        """Expected seconds for `name`: this run's mean, else the given estimate (earlier runs),
        else its deadline."""
        if self._durations:
            return statistics.fmean(self._durations)
        if self._estimate is not None:
            return self._estimate
        return self._plan.deadlines[name]

    # --- internals ------------------------------------------------------------------------------

    def _record_failure(self, name: str) -> None:
        self._budget = self._budget.record_failure(self._batch_of[name])
        if self._budget.spent is not None and self._abort is None:
            self._abort = "aborted_budget"

    def _current_batch(self) -> int | None:
        for index, pending in enumerate(self._pending):
            if pending or index not in self._batch_finished_at:
                return index
        return None

    def _gate(self, batch: int) -> tuple[float, str] | None:
        """When `batch` may begin: after the previous batch, its canary bake or the pause."""
        if batch == 0:
            return None
        finished = self._batch_finished_at[batch - 1]
        if batch == 1 and self._plan.canary_bake_seconds is not None:
            return finished + self._plan.canary_bake_seconds, "canary bake"
        return finished + self._plan.pause_seconds, "pause between batches"

    def _baking_canary(self) -> bool:
        plan = self._plan
        if plan.canary_bake_seconds is None or len(plan.batches) < 2:
            return False
        return 0 in self._batch_finished_at and len(self._pending[1]) == len(plan.batches[1])

    def _startable(self, batch: int, now: float) -> tuple[list[str], list[str], list[str]]:
        """Nodes of `batch` that may start now, and those held back by the floor or the window."""
        limits = self._plan.limits
        cap = limits.max_unavailable if limits.window is None else min(limits.window, limits.max_unavailable)
        slots = cap - len(self._in_flight)
        per_group = Counter(self._plan.node_groups[name] for name in self._in_flight)
        healthy = self._healthy_count()
        starts: list[str] = []
        floor_blocked: list[str] = []
        window_blocked: list[str] = []
        for name in self._pending[batch]:
            if len(starts) >= slots:
                break
            group = self._plan.node_groups[name]
            if group is not None and group in limits.groups and per_group[group] >= limits.groups[group]:
                continue
            latest = self._latest_start(name)
            if latest is not None and now >= latest:
                window_blocked.append(name)
                continue
            takes_capacity = name not in self._unhealthy
            if takes_capacity and healthy - 1 < limits.min_healthy:
                floor_blocked.append(name)
                continue
            starts.append(name)
            per_group[group] += 1
            healthy -= takes_capacity
        return starts, floor_blocked, window_blocked

    def _latest_start(self, name: str) -> float | None:
        return None if self._finish_by is None else self._finish_by - self.estimate(name)

    def _healthy_count(self) -> int:
        return sum(
            1
            for name in (*self._batch_of, *self._standing)
            if name not in self._unhealthy and name not in self._in_flight
        )

    def _in_flight_text(self) -> str:
        count = len(self._in_flight)
        return f"{count} node{'s' if count != 1 else ''} in flight"
