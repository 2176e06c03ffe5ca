"""Several balancer instances in front of the same nodes (an HA pair, or two tiers).

A node is out only when every instance has drained it and back only when every instance has it back,
so each command goes to every instance and the states are combined. One instance that cannot be
reached at preflight refuses the run: draining on one of a pair would leave traffic on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orchestrator.lb.base import LoadBalancer, Membership, Preflight, combine


class Several:
    def __init__(self, instances: Sequence[LoadBalancer]) -> None:
        self.instances = list(instances)
        self.name = "+".join(i.name for i in self.instances)

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        # Sequential on purpose: the first instance that refuses names itself in the error.
        results = [await i.preflight(servers) for i in self.instances]
        return Preflight(
            before={s: combine(r.before[s] for r in results) for s in servers},
            warnings=[w for r in results for w in r.warnings],
        )

    async def state(self, server: str) -> Membership:
        return combine(await asyncio.gather(*(i.state(server) for i in self.instances)))

    async def drain(self, server: str) -> None:
        await asyncio.gather(*(i.drain(server) for i in self.instances))

    async def recheck(self, server: str) -> None:
        await asyncio.gather(*(i.recheck(server) for i in self.instances))

    async def ready(self, server: str) -> None:
        await asyncio.gather(*(i.ready(server) for i in self.instances))

    async def close(self) -> None:
        await asyncio.gather(*(i.close() for i in self.instances), return_exceptions=True)
