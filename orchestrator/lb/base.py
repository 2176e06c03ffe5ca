"""The load balancer interface the workflow drives.

Drain before stopping, and rejoin only after the node is healthy: `ready` is called only when the
workflow's verify phase passed, and `wait_ready` waits until the balancer itself reports the node
healthy, so traffic never goes to a node that is still warming up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

Rotation = Literal["in", "out", "unknown"]


@dataclass(frozen=True)
class Membership:
    rotation: Rotation
    healthy: bool | None  # the balancer's own health check, None when it has none
    sessions: int  # active plus queued requests still on this node


class LBError(Exception):
    """The balancer refused or failed a command; the message names the node and the command."""


class LoadBalancer(Protocol):
    name: str

    async def known(self, lb_names: Iterable[str]) -> set[str]:
        """Which of these servers the balancer knows (preflight refuses unknown ones)."""
        ...

    async def state(self, lb_name: str) -> Membership: ...

    async def drain(self, lb_name: str) -> None:
        """Stop sending new requests; in-flight ones finish."""
        ...

    async def ready(self, lb_name: str) -> None:
        """Put the node back in rotation."""
        ...

    async def close(self) -> None: ...
