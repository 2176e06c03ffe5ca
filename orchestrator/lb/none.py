"""The `none` driver: no load balancer in front of the farm (or one managed elsewhere).

It knows every node, drains instantly and reports the rotation it was last told, so the workflow's
phases, journal and results read the same with or without a balancer.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.lb.base import Membership


class NoBalancer:
    name = "none"

    def __init__(self) -> None:
        self._out: set[str] = set()

    async def known(self, lb_names: Iterable[str]) -> set[str]:
        return set(lb_names)

    async def state(self, lb_name: str) -> Membership:
        return Membership(rotation="out" if lb_name in self._out else "in", healthy=None, sessions=0)

    async def drain(self, lb_name: str) -> None:
        self._out.add(lb_name)

    async def ready(self, lb_name: str) -> None:
        self._out.discard(lb_name)

    async def close(self) -> None:
        return None
