"""Live health of the nodes the run is not touching, fed to the scheduler.

The capacity floor is only as good as the scheduler's picture of the farm: a node that breaks during
the run, outside our control, must count against the floor at once; one that recovers must free it;
a canary whose health does not hold during its bake must stop the rollout. A round probes every idle
node (not in flight, not failed by this run) directly, like a balancer's health check would.

Its cost stays proportional to the fleet: rounds are spaced so that at most MAX_PROBES_PER_SECOND
probes go out, so on a large fleet each node is probed less often (the run, which lasts longer, sends
each node about the same number of probes); and with no capacity floor only a baking canary is
probed, since nothing else waits on health.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from orchestrator.fanout import bounded_map
from orchestrator.health import HealthChecker, Probe
from orchestrator.lifecycle import BakeFailed
from orchestrator.schedule import Scheduler
from orchestrator.workflow import Workflow

log = structlog.get_logger("orchestrator.run")

MAX_PROBES_PER_SECOND = 25.0


class HealthWatch:
    def __init__(
        self,
        sched: Scheduler,
        flows: dict[str, Workflow],
        health: HealthChecker,
        *,
        unhealthy: Iterable[str],
        interval: float,
        limit: int,
        on_change: Callable[[], None],
        balancer: Callable[[str], Awaitable[str | None]] | None = None,
        floor: bool = True,
    ) -> None:
        self._sched = sched
        self._flows = flows
        self._health = health
        self._interval = interval
        self._limit = limit
        self._on_change = on_change
        self._balancer = balancer  # node -> why the balancer does not count it, or None
        self._floor = floor
        self._pause = interval
        bad = set(unhealthy)
        self._healthy = {name: name not in bad for name in flows}
        self._finished_at: dict[str, float] = {}

    @property
    def pause(self) -> float:
        """Seconds between the end of a round and the next one."""
        return self._pause

    def finished(self, name: str, ok: bool) -> None:
        """A node the run just finished: a probe sent before that moment says nothing about it."""
        self._finished_at[name] = time.monotonic()
        if ok:
            self._healthy[name] = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._pause)
            await self.round()

    async def round(self) -> None:
        started = time.monotonic()
        candidates = self._flows if self._floor else self._sched.canary_baking
        idle = [n for n in candidates if self._watched(n)]
        self._pause = max(self._interval, len(idle) / MAX_PROBES_PER_SECOND)
        probes = await bounded_map(self._probe, idle, limit=self._limit)
        changed = False
        for name, probe in zip(idle, probes, strict=True):
            stale = self._finished_at.get(name, 0.0) > started
            if stale or not self._watched(name) or probe.ok == self._healthy[name]:
                continue
            self._healthy[name] = probe.ok
            bake_failed = self._sched.health_changed(name, probe.ok)
            changed = True
            if probe.ok:
                log.info("node healthy again", node=name)
            elif bake_failed:
                log.error(
                    "canary unhealthy during the bake: stopping the rollout", node=name, detail=probe.detail
                )
                self._flows[name].send(BakeFailed(probe.detail))
            else:
                log.warning("node unhealthy (outside this run)", node=name, detail=probe.detail)
        if changed:
            self._on_change()

    async def _probe(self, name: str) -> Probe:
        """The node's own health, and then the balancer's view of it: capacity is what the balancer
        can send traffic to."""
        probe = await self._health.probe(self._flows[name].job.health)
        if probe.ok and self._balancer is not None:
            why = await self._balancer(name)
            if why is not None:
                return Probe(ok=False, detail=why)
        return probe

    def _watched(self, name: str) -> bool:
        # In flight: its workflow owns it. Failed by this run: drained on purpose, out of the count.
        return name not in self._sched.in_flight and name not in self._sched.failed
