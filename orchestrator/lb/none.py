"""The `none` driver: no load balancer in front of the farm (or one managed elsewhere).

It knows every node, drains instantly and reports the rotation it was last told, so the workflow's
phases, journal and results read the same with or without a balancer. Sessions are unknown: the
node-side drain (in-flight requests read on the node itself) is what protects requests here.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.lb.base import Membership, Preflight


class NoBalancer:
    name = "none"

    def __init__(self) -> None:
        self._out: set[str] = set()

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        return Preflight(before={s: await self.state(s) for s in servers})

    async def state(self, server: str) -> Membership:
        return Membership(rotation="out" if server in self._out else "in", healthy=None, sessions=None)

    async def drain(self, server: str) -> None:
        self._out.add(server)

    async def recheck(self, server: str) -> None:
        return None

    async def ready(self, server: str) -> None:
        self._out.discard(server)

    async def close(self) -> None:
        return None
