"""Planning: Ansible `serial` ramps, sliding windows, order, and batches cut to every limit."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.inventory import Inventory, parse_inventory
from orchestrator.plan import PlanError, make_plan


def inventory(
    count: int,
    *,
    rollout: dict[str, Any] | None = None,
    groups: dict[str, Any] | None = None,
    assign: list[str | None] | None = None,
) -> Inventory:
    nodes = []
    for i in range(count):
        node: dict[str, Any] = {"name": f"web-{i + 1:02d}", "host": f"10.0.{i // 250}.{i % 250 + 1}"}
        if assign is not None and assign[i] is not None:
            node["group"] = assign[i]
        nodes.append(node)
    doc: dict[str, Any] = {
        "version": 1,
        "defaults": {
            "credentials": {"username_env": "U", "password_env": "P"},
            "health": {"url": "http://{host}/healthz"},
        },
        "nodes": nodes,
        "rollout": rollout or {},
    }
    if groups:
        doc["groups"] = groups
    return parse_inventory(yaml.safe_dump(doc, sort_keys=False), "farm.yaml")


def sizes(inv: Inventory, **kwargs: Any) -> list[int]:
    return [len(batch) for batch in make_plan(inv, **kwargs).batches]


def test_a_ramp_uses_percentages_of_all_nodes_and_repeats_its_last_step() -> None:
    assert sizes(inventory(20, rollout={"batch": [1, "10%", "25%"]})) == [1, 2, 5, 5, 5, 2]


def test_a_percentage_rounds_down_but_never_to_zero() -> None:
    assert sizes(inventory(5, rollout={"batch": "10%"})) == [1, 1, 1, 1, 1]
    assert sizes(inventory(7, rollout={"batch": "50%"})) == [3, 3, 1]


def test_the_default_is_one_node_at_a_time() -> None:
    plan = make_plan(inventory(3))
    assert plan.batches == (("web-01",), ("web-02",), ("web-03",))
    assert plan.limits.max_unavailable == 3 and plan.limits.min_healthy == 0


def test_batches_are_cut_to_max_unavailable() -> None:
    assert sizes(inventory(10, rollout={"batch": 5, "max_unavailable": "20%"})) == [2, 2, 1, 2, 2, 1]


def test_batches_are_cut_to_group_limits_keeping_order() -> None:
    inv = inventory(
        6,
        rollout={"batch": 3},
        groups={"a": {"max_unavailable": 1}, "b": {"max_unavailable": "50%"}},
        assign=["a", "a", "b", "b", "b", None],
    )
    plan = make_plan(inv)
    assert plan.limits.groups == {"a": 1, "b": 1}  # 50% of group b's 3 nodes rounds down to 1
    assert plan.batches == (("web-01",), ("web-02", "web-03"), ("web-04",), ("web-05", "web-06"))


def test_the_capacity_floor_cuts_batches_and_rounds_up() -> None:
    inv = inventory(5, rollout={"batch": 5, "min_healthy": "50%"})
    plan = make_plan(inv)
    assert plan.limits.min_healthy == 3
    assert [len(b) for b in plan.batches] == [2, 2, 1]


def test_nodes_already_unhealthy_do_not_use_up_the_floor() -> None:
    inv = inventory(6, rollout={"batch": 6, "min_healthy": 3})
    healthy = {"web-01", "web-02", "web-03", "web-04"}  # web-05 and web-06 are down already
    plan = make_plan(inv, healthy=healthy | {"not-in-inventory"})
    assert plan.unhealthy == {"web-05", "web-06"}
    # 4 healthy, floor 3: one healthy node at a time; the two broken ones go first, for free.
    assert plan.batches == (("web-05", "web-06", "web-01"), ("web-02",), ("web-03",), ("web-04",))


def test_a_floor_at_or_above_the_node_count_is_refused_with_its_field() -> None:
    inv = inventory(4, rollout={"min_healthy": 4})
    with pytest.raises(PlanError) as caught:
        make_plan(inv)
    assert caught.value.path == ("rollout", "min_healthy")
    assert "no node could ever be restarted" in caught.value.message
    located = inv.error_at(caught.value.path, caught.value.message)
    assert str(located).startswith("farm.yaml:18:3: rollout.min_healthy: the capacity floor (4) is not below")


def test_when_unhealthy_nodes_exhaust_the_floor_they_go_first_and_the_rest_one_by_one() -> None:
    inv = inventory(4, rollout={"min_healthy": "75%", "batch": 4})
    plan = make_plan(inv, healthy={"web-01", "web-03", "web-04"})
    # The scheduler holds web-01 back until web-02 is healthy again (or gives up).
    assert plan.batches == (("web-02", "web-01"), ("web-03",), ("web-04",))


def test_only_unhealthy_nodes_left_can_still_be_restarted() -> None:
    inv = inventory(3, rollout={"min_healthy": 1, "batch": 3})
    assert make_plan(inv, healthy=set()).batches == (("web-01", "web-02", "web-03"),)


def test_orders() -> None:
    names = [f"web-{n}" for n in (10, 2, 1)]
    doc = {
        "version": 1,
        "defaults": {
            "credentials": {"username_env": "U", "password_env": "P"},
            "health": {"url": "http://{host}/"},
        },
        "nodes": [{"name": n, "host": f"{n}.example"} for n in names],
    }
    for order, expected in [
        ("inventory", ["web-10", "web-2", "web-1"]),
        ("sorted", ["web-1", "web-2", "web-10"]),
        ("reverse", ["web-1", "web-2", "web-10"]),
    ]:
        inv = parse_inventory(yaml.safe_dump({**doc, "rollout": {"order": order}}), "f.yaml")
        assert list(make_plan(inv).nodes) == expected, order


def test_shuffle_is_deterministic_per_seed_and_recorded() -> None:
    def shuffled(seed: int) -> tuple[str, ...]:
        return make_plan(inventory(12, rollout={"order": "shuffle", "seed": seed})).nodes

    assert shuffled(7) == shuffled(7)
    assert shuffled(7) != shuffled(8)
    assert sorted(shuffled(7)) == [f"web-{i:02d}" for i in range(1, 13)]
    assert make_plan(inventory(2, rollout={"order": "shuffle", "seed": 7})).seed == 7
    assert make_plan(inventory(2)).seed is None


def test_window_strategy_is_one_wave_after_an_optional_canary() -> None:
    inv = inventory(5, rollout={"strategy": "window", "window": 3, "max_unavailable": 2})
    plan = make_plan(inv)
    assert plan.batches == (("web-01", "web-02", "web-03", "web-04", "web-05"),)
    assert plan.limits.window == 2
    inv = inventory(5, rollout={"strategy": "window", "window": 2, "canary": {"bake_seconds": 60}})
    plan = make_plan(inv)
    assert plan.batches == (("web-01",), ("web-02", "web-03", "web-04", "web-05"))
    assert plan.canary_bake_seconds == 60


def test_plan_json_records_everything_a_report_needs() -> None:
    inv = inventory(
        4,
        rollout={
            "batch": [1, 2],
            "canary": {"bake_seconds": 30},
            "pause_seconds": 5,
            "min_healthy": "50%",
            "failure_budget": {"max_failures": 1},
            "change_window": {"finish_by": "2030-01-01T06:00:00+01:00"},
        },
    )
    data = json.loads(json.dumps(make_plan(inv, healthy={"web-01", "web-02", "web-04"}).to_json()))
    assert data == {
        "strategy": "batch",
        "order": "inventory",
        "seed": None,
        "nodes": 4,
        "batches": [["web-03"], ["web-01"], ["web-02"], ["web-04"]],
        "limits": {"max_unavailable": 4, "min_healthy": 2, "groups": {}, "window": None},
        "canary": {"bake_seconds": 30.0},
        "pause_seconds": 5.0,
        "failure_budget": {"max_failures": 1, "max_failure_percent": None, "per_batch": None},
        "finish_by": "2030-01-01T06:00:00+01:00",
        "unhealthy": ["web-03"],
    }


def test_the_plan_carries_each_nodes_deadline_and_group() -> None:
    inv = inventory(2, groups={"a": {}}, assign=["a", None])
    plan = make_plan(inv)
    assert plan.deadlines == {"web-01": 900.0, "web-02": 900.0}
    assert plan.node_groups == {"web-01": "a", "web-02": None}


# --- properties -------------------------------------------------------------------------------------

share = st.one_of(st.integers(1, 12), st.integers(1, 100).map(lambda p: f"{p}%"))


@st.composite
def farms(draw: st.DrawFn) -> tuple[Inventory, set[str] | None]:
    count = draw(st.integers(1, 24))
    group_names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    groups = {g: ({"max_unavailable": draw(share)} if draw(st.booleans()) else {}) for g in group_names}
    assign = [draw(st.sampled_from([None, *group_names])) for _ in range(count)]
    rollout: dict[str, Any] = {
        "batch": draw(st.one_of(share, st.lists(share, min_size=1, max_size=4))),
        "order": draw(st.sampled_from(["inventory", "sorted", "reverse", "shuffle"])),
        "min_healthy": draw(st.one_of(st.integers(0, 30), st.integers(0, 100).map(lambda p: f"{p}%"))),
    }
    if draw(st.booleans()):
        rollout["max_unavailable"] = draw(share)
    if rollout["order"] == "shuffle":
        rollout["seed"] = draw(st.integers(0, 2**32))
    inv = inventory(count, rollout=rollout, groups=groups, assign=assign)
    names = [n.name for n in inv.nodes]
    healthy = draw(st.one_of(st.none(), st.sets(st.sampled_from(names))))
    return inv, healthy


@settings(max_examples=150, deadline=None)
@given(farms())
def test_every_node_is_in_exactly_one_batch_and_no_batch_exceeds_a_limit(
    farm: tuple[Inventory, set[str] | None],
) -> None:
    inv, healthy = farm
    total = len(inv.nodes)
    wanted = inv.rollout.min_healthy
    floor = math.ceil(total * wanted.value / 100) if wanted.percent else wanted.value
    impossible = floor >= total
    try:
        plan = make_plan(inv, healthy=healthy)
    except PlanError as exc:
        assert impossible and exc.path == ("rollout", "min_healthy")
        return
    assert not impossible and plan.limits.min_healthy == floor
    assert Counter(plan.nodes) == Counter(n.name for n in inv.nodes)
    # Healthy nodes go at least one at a time; the scheduler enforces the live floor.
    room = max(1, len(inv.nodes) - len(plan.unhealthy) - plan.limits.min_healthy)
    for batch in plan.batches:
        assert 1 <= len(batch) <= plan.limits.max_unavailable
        assert sum(name not in plan.unhealthy for name in batch) <= room
        per_group = Counter(plan.node_groups[name] for name in batch)
        for group, limit in plan.limits.groups.items():
            assert per_group[group] <= limit


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**32))
def test_shuffle_with_the_same_seed_gives_the_same_plan(count: int, seed: int) -> None:
    first = make_plan(inventory(count, rollout={"order": "shuffle", "seed": seed, "batch": "25%"}))
    again = make_plan(inventory(count, rollout={"order": "shuffle", "seed": seed, "batch": "25%"}))
    assert first.batches == again.batches
    assert sorted(first.nodes) == sorted(n.name for n in inventory(count).nodes)
