"""The health watch's cost: bounded probes per second whatever the fleet, canaries only without a floor.
(Its effect on a real run, a node breaking during it, is end to end in tests/e2e/test_rollout_capacity.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from orchestrator.watch import MAX_PROBES_PER_SECOND, HealthWatch


class Probes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def probe(self, spec: str) -> Any:
        self.sent.append(spec)
        return SimpleNamespace(ok=True, detail="200")


def watch(nodes: int, *, floor: bool, canaries: tuple[str, ...] = ()) -> tuple[HealthWatch, Probes]:
    names = [f"web-{i:03d}" for i in range(nodes)]
    sched = SimpleNamespace(in_flight=(), failed=(), succeeded=canaries, canary_baking=canaries)
    flows = {n: SimpleNamespace(job=SimpleNamespace(health=n)) for n in names}
    probes = Probes()
    hw = HealthWatch(
        cast(Any, sched),
        cast(Any, flows),
        cast(Any, probes),
        unhealthy=(),
        interval=2.0,
        limit=8,
        on_change=lambda: None,
        floor=floor,
    )
    return hw, probes


async def test_rounds_are_spaced_so_the_probe_rate_does_not_grow_with_the_fleet() -> None:
    for nodes in (10, 50, 200, 1000):
        hw, probes = watch(nodes, floor=True)
        await hw.round()
        assert len(probes.sent) == nodes
        # Probes per second over a round and the pause after it.
        assert nodes / hw.pause <= MAX_PROBES_PER_SECOND
        assert hw.pause >= 2.0
    small, _ = watch(10, floor=True)
    await small.round()
    assert small.pause == 2.0  # a small fleet keeps the configured interval


async def test_without_a_floor_only_a_baking_canary_is_probed() -> None:
    hw, probes = watch(50, floor=False, canaries=("web-000",))
    await hw.round()
    assert probes.sent == ["web-000"]
    idle, none_sent = watch(50, floor=False)
    await idle.round()
    assert none_sent.sent == []
