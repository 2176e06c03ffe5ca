"""The rollout plan: nodes and policy in, ordered batches and effective limits out.

Pure: no I/O, no clock. The plan is what `orchestrator plan` shows and what the scheduler follows;
the scheduler re-checks every limit live, because node health changes while a run goes on.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from orchestrator.inventory import FailureBudgetPolicy, Inventory, Share
from orchestrator.yamlsource import PathKey, format_path


class PlanError(Exception):
    """The rollout policy cannot be honoured; `path` is the inventory field to blame."""

    def __init__(self, path: PathKey, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{format_path(path)}: {message}")


@dataclass(frozen=True)
class Limits:
    max_unavailable: int
    """Nodes the run may have out of rotation at once."""
    min_healthy: int
    """Capacity floor: healthy in-rotation nodes never drop below this."""
    groups: Mapping[str, int]
    """Per group: nodes of that group the run may have out of rotation at once."""
    window: int | None
    """Strategy window: nodes in flight at once (already capped by max_unavailable)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "max_unavailable": self.max_unavailable,
            "min_healthy": self.min_healthy,
            "groups": dict(self.groups),
            "window": self.window,
        }


@dataclass(frozen=True)
class Plan:
    strategy: Literal["batch", "window"]
    order: Literal["inventory", "sorted", "reverse", "shuffle"]
    seed: int | None
    """The shuffle seed (order shuffle only), so the same order can be planned again."""
    batches: tuple[tuple[str, ...], ...]
    """Node names; a batch starts when the previous one has finished. With strategy window, nodes
    within a batch start as soon as a slot frees up."""
    limits: Limits
    canary_bake_seconds: float | None
    """None without a canary; otherwise the first batch runs alone and this bake follows it."""
    pause_seconds: float
    failure_budget: FailureBudgetPolicy
    finish_by: datetime | None
    node_groups: Mapping[str, str | None]
    deadlines: Mapping[str, float]
    """Per node: the overall deadline in seconds (the fallback duration estimate)."""
    unhealthy: frozenset[str]
    """Nodes already unhealthy or out of rotation when the plan was made."""

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(name for batch in self.batches for name in batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "order": self.order,
            "seed": self.seed,
            "nodes": len(self.nodes),
            "batches": [list(batch) for batch in self.batches],
            "limits": self.limits.to_json(),
            "canary": None
            if self.canary_bake_seconds is None
            else {"bake_seconds": self.canary_bake_seconds},
            "pause_seconds": self.pause_seconds,
            "failure_budget": self.failure_budget.model_dump(),
            "finish_by": None if self.finish_by is None else self.finish_by.isoformat(),
            "unhealthy": sorted(self.unhealthy),
        }


def make_plan(inv: Inventory, *, healthy: set[str] | None = None) -> Plan:
    """Plan the rollout. `healthy`: nodes known healthy and in rotation (None: assume all are)."""
    rollout = inv.rollout
    names = [node.name for node in inv.nodes]
    total = len(names)
    unhealthy = frozenset(names) - healthy if healthy is not None else frozenset[str]()
    node_groups = {node.name: node.group for node in inv.nodes}
    group_sizes = Counter(node_groups.values())
    limits = Limits(
        max_unavailable=total
        if rollout.max_unavailable is None
        else _at_least_one(rollout.max_unavailable, total),
        min_healthy=_rounded_up(rollout.min_healthy, total),
        groups={
            name: _at_least_one(group.max_unavailable, group_sizes[name])
            for name, group in inv.groups.items()
            if group.max_unavailable is not None
        },
        window=None,
    )
    room = _room(limits.min_healthy, total, unhealthy)
    # Nodes already out go first: they cost no capacity, and restarting them is often the very fix
    # that gives the floor room for the rest.
    ordered = sorted(_ordered(names, rollout.order, rollout.seed), key=lambda n: n not in unhealthy)
    if rollout.strategy == "window":
        limits = replace(limits, window=min(rollout.window, limits.max_unavailable))
        head = 1 if rollout.canary is not None else 0
        batches = [b for b in (ordered[:head], ordered[head:]) if b]
    else:
        steps = rollout.batch if isinstance(rollout.batch, list) else [rollout.batch]
        batches = [
            part
            for batch in _ramp(ordered, [_at_least_one(step, total) for step in steps])
            for part in _split(batch, limits, node_groups, unhealthy, room)
        ]
    return Plan(
        strategy=rollout.strategy,
        order=rollout.order,
        seed=rollout.seed if rollout.order == "shuffle" else None,
        batches=tuple(tuple(batch) for batch in batches),
        limits=limits,
        canary_bake_seconds=None if rollout.canary is None else rollout.canary.bake_seconds,
        pause_seconds=rollout.pause_seconds,
        failure_budget=rollout.failure_budget,
        finish_by=rollout.change_window.finish_by,
        node_groups=node_groups,
        deadlines={node.name: node.timeouts.node for node in inv.nodes},
        unhealthy=unhealthy,
    )


def _at_least_one(share: Share, total: int) -> int:
    # Ansible's rule for serial percentages: round down, but a batch is never empty.
    return max(1, share.of(total))


def _rounded_up(share: Share, total: int) -> int:
    # A floor is a safety limit: 50% of 5 nodes keeps 3 healthy, not 2.
    return math.ceil(total * share.value / 100) if share.percent else share.value


def _room(floor: int, total: int, unhealthy: frozenset[str]) -> int:
    """How many healthy nodes a batch may take out; PlanError if the floor leaves none to restart.

    When unhealthy nodes already use up the floor, healthy nodes still get batches of one: the
    scheduler holds them back live until the restarted nodes are healthy again (or gives up).
    """
    if floor >= total:
        raise PlanError(
            ("rollout", "min_healthy"),
            f"the capacity floor ({floor}) is not below the node count ({total}): "
            "no node could ever be restarted",
        )
    return max(1, total - len(unhealthy) - floor)


def _natural_key(name: str) -> tuple[list[str | int], str]:
    # web-2 before web-10, as an operator reads them.
    parts: list[str | int] = [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]
    return parts, name


def _ordered(names: list[str], order: str, seed: int) -> list[str]:
    if order == "sorted":
        return sorted(names, key=_natural_key)
    if order == "reverse":
        return names[::-1]
    if order == "shuffle":
        shuffled = list(names)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    return list(names)


def _ramp(nodes: list[str], sizes: Sequence[int]) -> list[list[str]]:
    """Ansible `serial`: consecutive batches of the given sizes, the last size repeating."""
    batches: list[list[str]] = []
    start = 0
    while start < len(nodes):
        size = sizes[min(len(batches), len(sizes) - 1)]
        batches.append(nodes[start : start + size])
        start += size
    return batches


def _split(
    batch: list[str],
    limits: Limits,
    node_groups: Mapping[str, str | None],
    unhealthy: frozenset[str],
    room: int,
) -> list[list[str]]:
    """Cut a batch, keeping its order, so no part exceeds max_unavailable, the floor or a group limit.

    An already unhealthy node does not lower the healthy count when taken out, so only healthy
    nodes count against the floor.
    """
    parts: list[list[str]] = []
    current: list[str] = []
    healthy = 0
    per_group: Counter[str | None] = Counter()
    for name in batch:
        group = node_groups[name]
        takes_capacity = name not in unhealthy
        group_limit = limits.groups.get(group) if group is not None else None
        fits = (
            len(current) < limits.max_unavailable
            and (not takes_capacity or healthy < room)
            and (group_limit is None or per_group[group] < group_limit)
        )
        if not fits:
            parts.append(current)
            current, healthy, per_group = [], 0, Counter()
        current.append(name)
        healthy += takes_capacity
        per_group[group] += 1
    if current:
        parts.append(current)
    return parts
