"""Transient balancer failures (no answer) retried with backoff, like remote calls.

Every command the product sends a balancer is idempotent (drain twice is drained), so repeating one
whose answer was lost is safe. Refusals, unknown servers and permission errors are not retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from orchestrator.lb.base import LBError, LoadBalancer, Membership, Preflight

log = structlog.get_logger("orchestrator.lb")

T = TypeVar("T")

PAUSES = (0.2, 0.5, 1.0, 2.0)


class Retrying:
    def __init__(self, inner: LoadBalancer, pauses: Sequence[float] = PAUSES) -> None:
        self.inner = inner
        self.name = inner.name
        self.pauses = tuple(pauses)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for pause in (*self.pauses, None):
            try:
                return await call()
            except LBError as exc:
                if not exc.transient or pause is None:
                    raise
                log.warning(
                    "load balancer did not answer; retrying", command=what, error=str(exc), after=pause
                )
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        # Not retried: an instance unreachable at preflight refuses the run at once.
        return await self.inner.preflight(servers)

    async def state(self, server: str) -> Membership:
        return await self._call(f"state {server}", lambda: self.inner.state(server))

    async def drain(self, server: str) -> None:
        await self._call(f"drain {server}", lambda: self.inner.drain(server))

    async def recheck(self, server: str) -> None:
        await self._call(f"recheck {server}", lambda: self.inner.recheck(server))

    async def ready(self, server: str) -> None:
        await self._call(f"ready {server}", lambda: self.inner.ready(server))

    async def close(self) -> None:
        await self.inner.close()
