"""The load balancer interface the workflow drives.

Drain before stopping, and rejoin only after the node is healthy in the balancer's own eyes: after
verify passed, `recheck` asks the balancer for fresh evidence (HAProxy: mark the server down and let
its health checks bring it back) while the node is still drained, and `ready` is sent only once
`state` reports it healthy. A driver that has no health check of its own reports `healthy=None`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Rotation = Literal["in", "out", "unknown"]
AdminState = Literal["ready", "drain", "maint"]

# unreachable: no answer (connection refused, timeout); refused: the balancer said no;
# unknown_server: no such server or backend; permission: the API level does not allow the command.
LBErrorKind = Literal["unreachable", "refused", "unknown_server", "permission"]
TRANSIENT_KINDS: frozenset[LBErrorKind] = frozenset({"unreachable"})


@dataclass(frozen=True)
class Membership:
    """One server as the balancer sees it (combined over every backend and instance it sits in)."""

    rotation: Rotation
    healthy: bool | None  # the balancer's own health check, None when it has none
    sessions: int | None  # active plus queued requests on this node; None when the balancer cannot say
    admin: AdminState | None = None  # the administrative state, None when the balancer has none
    status: str = ""  # the balancer's own word for it (HAProxy: UP, DRAIN, MAINT, DOWN, UP 1/2, ...)
    errors_5xx: int | None = None  # 5xx answers the balancer counted from this server so far


class LBError(Exception):
    """The balancer refused or failed a command; the message names the server and the command."""

    def __init__(self, kind: LBErrorKind, message: str, *, instance: str | None = None) -> None:
        self.kind: LBErrorKind = kind
        self.instance = instance
        super().__init__(f"{instance}: {message}" if instance else message)

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS


@dataclass
class Preflight:
    """What the balancer said before anything changed."""

    before: dict[str, Membership] = field(default_factory=dict)  # server -> its state before the run
    warnings: list[str] = field(default_factory=list)


class LoadBalancer(Protocol):
    name: str

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        """Read-only: every server exists and the balancer accepts our commands; records each
        server's state before the run. Raises LBError (nothing has been touched)."""
        ...

    async def state(self, server: str) -> Membership: ...

    async def drain(self, server: str) -> None:
        """Stop sending new requests; in-flight ones finish."""
        ...

    async def recheck(self, server: str) -> None:
        """Make the balancer's health verdict fresh (the node was just restarted); the server stays
        out of rotation. A no-op for a balancer without health checks."""
        ...

    async def ready(self, server: str) -> None:
        """Put the node back in rotation (only a server this run drained)."""
        ...

    async def close(self) -> None: ...


def combine(parts: Iterable[Membership]) -> Membership:
    """One server seen in several backends or instances: out only when out everywhere, in only when
    in everywhere; healthy only when healthy everywhere; sessions add up (unknown if any is)."""
    items = list(parts)
    if len(items) == 1:
        return items[0]
    rotations = {m.rotation for m in items}
    rotation: Rotation = rotations.pop() if len(rotations) == 1 else "unknown"
    checks = [m.healthy for m in items if m.healthy is not None]
    healthy = None if not checks else all(checks)
    sessions = None if any(m.sessions is None for m in items) else sum(m.sessions or 0 for m in items)
    admins = {m.admin for m in items}
    admin: AdminState | None
    if "maint" in admins:
        admin = "maint"
    elif "drain" in admins:
        admin = "drain"
    else:
        admin = "ready" if admins == {"ready"} else None
    fives = [m.errors_5xx for m in items]
    errors_5xx = None if any(f is None for f in fives) else sum(f or 0 for f in fives)
    status = " | ".join(dict.fromkeys(m.status for m in items if m.status))
    return Membership(rotation, healthy, sessions, admin, status, errors_5xx)


@dataclass(frozen=True)
class DrainPolicy:
    """How a node leaves and rejoins rotation, the same for every instance in front of it."""

    drain_timeout: float = 120.0
    on_drain_timeout: Literal["fail", "proceed"] = "fail"
    node_drain: bool = True
    watch_seconds: float = 0.0
