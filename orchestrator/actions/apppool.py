"""`apppool-recycle`: recycle named application pools and wait until each is Started again.

IIS recycles with overlap by default (a new worker starts before the old one drains), so this is the
gentlest action; the node still goes through drain and verify like every other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orchestrator.actions.base import ActionContext, backoff
from orchestrator.remote import cmdlets


class AppPoolRecycle:
    name = "apppool-recycle"

    def __init__(self, pools: Sequence[str]) -> None:
        self.pools = list(pools)

    def watched_services(self) -> Sequence[str]:
        return ["W3SVC", "WAS"]

    async def preflight(self, ctx: ActionContext) -> None:
        states = await cmdlets.get_services(ctx.session, self.watched_services(), timeout=ctx.call_timeout)
        ctx.services_before = {s.name: s.status for s in states.values()}
        for pool in self.pools:
            # A missing pool raises not_found now rather than half-way through the run.
            state = await cmdlets.app_pool_state(ctx.session, pool, timeout=ctx.call_timeout)
            ctx.pools_before[pool] = state
            ctx.note(f"app pool {pool}: {state}")

    async def stop(self, ctx: ActionContext) -> None:
        # Nothing to stop: Restart-WebAppPool is an overlapped recycle.
        ctx.note("recycle needs no stop")

    async def start(self, ctx: ActionContext) -> None:
        for pool in self.pools:
            await cmdlets.restart_app_pool(ctx.session, pool, timeout=ctx.call_timeout)
            pause = backoff(ctx)
            while (
                state := await cmdlets.app_pool_state(ctx.session, pool, timeout=ctx.call_timeout)
            ) != "Started":
                ctx.note(f"app pool {pool}: {state}")
                await asyncio.sleep(pause())
            ctx.note(f"app pool {pool} recycled and Started")
