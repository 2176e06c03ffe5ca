"""Leaving and rejoining rotation, proven from both sides.

Drain: the balancer stops sending new requests; then wait until the balancer counts no session on
the node *and* the node itself reports no request in flight (a balancer without per-server counts,
pinned keep-alive or sticky clients are caught by the node's own count), bounded by the policy's
drain timeout, after which the node either fails (left drained, not stopped) or the run proceeds.

Rejoin, after verify passed: fresh evidence from the balancer's own health check while the node is
still drained, then `ready`, then the balancer must report it in rotation and healthy; optionally
watched for a while (still healthy, no new 5xx) before the node counts as done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from orchestrator.actions.base import PhaseFailed
from orchestrator.lb.base import DrainPolicy, LBError, LoadBalancer, Membership
from orchestrator.results import ErrorInfo, Rotation

Note = Callable[[str], None]


def _paced() -> Callable[[], Awaitable[None]]:
    pause = 0.05

    async def wait() -> None:
        nonlocal pause
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)

    return wait


async def take_out(
    lb: LoadBalancer, server: str, rotation: Callable[[Rotation], None], *, drained_earlier: bool = False
) -> None:
    """Drain the server, unless someone else already took it out (MAINT or DRAIN set by hand since
    the run began): then the node is left exactly as the operator set it, and fails untouched,
    since putting it back later would undo the operator's decision. `drained_earlier`: a resumed
    node whose DRAIN is the earlier run's own (drained again, harmlessly)."""
    m = await lb.state(server)
    if m.admin == "maint" or (m.admin == "drain" and not drained_earlier):
        rotation("out")
        raise PhaseFailed(
            ErrorInfo(
                kind="refused",
                message=f"left out by the operator: {m.admin.upper()} in the load balancer since the run "
                "began; not touched",
                target=server,
            )
        )
    try:
        await lb.drain(server)
    except LBError as exc:
        if exc.transient:
            rotation("unknown")  # no answer: the balancer may have applied it or not
        raise
    rotation("out")


async def wait_drained(
    lb: LoadBalancer,
    server: str,
    policy: DrainPolicy,
    node_in_flight: Callable[[], Awaitable[int | None]],
    note: Note,
) -> None:
    """Until neither the balancer nor the node holds a request for this node (or the drain timeout)."""
    counts: dict[str, int | None] = {"balancer": None, "node": None}
    most: dict[str, int] = {"balancer": 0, "node": 0}
    pace = _paced()
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.drain_timeout

    async def idle() -> None:
        while True:
            counts["balancer"] = (await lb.state(server)).sessions
            counts["node"] = await node_in_flight() if policy.node_drain else None
            for side, count in counts.items():
                most[side] = max(most[side], count or 0)
            if not counts["balancer"] and not counts["node"]:
                return
            # The clock judges too, not only the cancellation: on Python 3.11 a call that
            # answers just as the timeout fires can swallow it (asyncio.wait_for), and the
            # drain would then wait until the node's whole deadline instead of its own.
            if loop.time() >= end:
                raise TimeoutError
            await pace()

    try:
        async with asyncio.timeout_at(end):
            await idle()
    except TimeoutError:
        left = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        message = f"requests still in flight after the drain timeout ({policy.drain_timeout:g}s): {left}"
        if policy.on_drain_timeout == "fail":
            raise PhaseFailed(ErrorInfo(kind="timed_out", message=message, target=server)) from None
        note(f"{message}; proceeding (on_drain_timeout: proceed)")
        return
    if any(most.values()):
        note(f"waited for in-flight requests (at most: balancer {most['balancer']}, node {most['node']})")
    seen = [f"{k} {'unknown' if v is None else v}" for k, v in counts.items()]
    note(f"no request in flight ({', '.join(seen)})")


async def rejoin(
    lb: LoadBalancer,
    server: str,
    policy: DrainPolicy,
    rotation: Callable[[Rotation], None],
    note: Note,
) -> None:
    """Fresh health evidence while drained, then ready, then confirmed (and watched) in rotation."""
    await lb.recheck(server)
    pace = _paced()
    while (m := await lb.state(server)).healthy is False:
        await pace()
    if m.healthy:
        note(f"healthy in the balancer while drained ({m.status})")
    await lb.ready(server)
    # From here the balancer may already send traffic: until it confirms, the truth is unknown.
    rotation("unknown")
    pace = _paced()
    while not _serving(m := await lb.state(server)):
        await pace()
    rotation("in")
    if policy.watch_seconds > 0:
        await _watch(lb, server, policy.watch_seconds, m, rotation, note)


def _serving(m: Membership) -> bool:
    return m.rotation == "in" and m.healthy is not False


async def _watch(
    lb: LoadBalancer,
    server: str,
    seconds: float,
    first: Membership,
    rotation: Callable[[Rotation], None],
    note: Note,
) -> None:
    """The node must stay in rotation and healthy, its 5xx count flat; otherwise out again."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        await asyncio.sleep(min(0.25, max(0.0, until - loop.time())))
        m = await lb.state(server)
        problem = None
        if not _serving(m):
            problem = f"the balancer reports it {m.status or m.rotation} after rejoining"
        elif m.errors_5xx is not None and first.errors_5xx is not None and m.errors_5xx > first.errors_5xx:
            problem = f"{m.errors_5xx - first.errors_5xx} new 5xx answers after rejoining"
        if problem is not None:
            await lb.drain(server)
            rotation("out")
            raise PhaseFailed(ErrorInfo(kind="health", message=f"{problem}; drained again", target=server))
    note(f"watched {seconds:g}s after rejoining: stayed {first.status or 'in'}, no new 5xx")
