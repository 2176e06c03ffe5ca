"""The farm as it is now, beside what the journal says: `orchestrator status FILE --live`.

After a crash, a hand fix or a night of other people's changes, the journal tells what the last run
did and the farm tells what is true. Each node's services are read over WinRM (read-only, bounded
fan-out), its health URL probed and its balancer asked; every place where the two disagree is named.
`compare` is pure; `read_farm` does the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.actions.services import ServiceRestart
from orchestrator.credentials import CredentialsError, resolve_credentials
from orchestrator.fanout import bounded_map
from orchestrator.health import HealthChecker
from orchestrator.inventory import Inventory, NodeSpec
from orchestrator.jobs import make_action, make_job, make_target
from orchestrator.journal import NodeState
from orchestrator.lb.base import LBError, LoadBalancer
from orchestrator.log import register_secret
from orchestrator.remote.cmdlets import get_services
from orchestrator.remote.errors import RemoteError
from orchestrator.remote.session import Session


@dataclass(frozen=True)
class LiveNode:
    """What one node says right now. `error`: it could not be read (then services are empty)."""

    name: str
    services: Mapping[str, str] = field(default_factory=dict)
    health: str | None = None  # "ok: 200 in 3 ms" / "failing: connection refused"; None: not probed
    healthy: bool | None = None
    rotation: str | None = None  # None: no balancer to ask (driver none)
    balancer: str | None = None  # the balancer's own word (HAProxy: UP, DRAIN, MAINT, DOWN ...)
    balancer_healthy: bool | None = None  # the balancer's own health check, None when it has none
    error: str | None = None


def services_to_read(node: NodeSpec, recorded: NodeState | None) -> list[str]:
    """The services the journal recorded for the node, or those its action restarts."""
    if recorded is not None and recorded.services:
        return sorted(recorded.services)
    action = make_action(node)
    if isinstance(action, ServiceRestart):
        return sorted({*action.targets, *action.start_roots})
    return []


def compare(recorded: NodeState | None, live: LiveNode) -> list[str]:
    """Each way the farm differs from the journal's last word on the node (empty: they agree)."""
    if live.error is not None:
        return [f"not readable: {live.error}"]
    differences: list[str] = []
    if recorded is not None:
        for service, was in sorted(recorded.services.items()):
            now = live.services.get(service.upper())
            if now is None:
                differences.append(f"{service}: journal {was}, now missing")
            elif now != was:
                differences.append(f"{service}: journal {was}, now {now}")
        if (
            live.rotation is not None
            and recorded.rotation != "unknown"
            and live.rotation != recorded.rotation
        ):
            differences.append(f"rotation: journal {recorded.rotation}, balancer {live.rotation}")
        if recorded.outcome == "done" and live.healthy is False:
            differences.append("health: done in the journal, failing now")
        # Out of rotation is said above; a server in rotation whose check fails is a difference of its own.
        if recorded.outcome == "done" and live.balancer_healthy is False and live.rotation == "in":
            differences.append(
                f"balancer: done in the journal, its health check says {live.balancer or 'down'}"
            )
    elif live.healthy is False:
        differences.append("health failing (no run recorded)")
    return differences


async def _read_node(
    node: NodeSpec, names: Sequence[str], lb: LoadBalancer, health: HealthChecker
) -> LiveNode:
    try:
        creds = resolve_credentials(node)
    except CredentialsError as exc:
        return LiveNode(node.name, error=f"credentials: {exc}")
    if creds.password is not None:
        register_secret(creds.password.get_secret_value())
    session = Session(make_target(node, creds))
    try:
        found = await get_services(session, names, timeout=node.transport.operation_timeout) if names else {}
    except RemoteError as exc:
        return LiveNode(node.name, error=f"{exc.info.kind}: {exc.info.message}")
    except (OSError, TimeoutError) as exc:
        return LiveNode(node.name, error=f"unreachable: {type(exc).__name__}: {exc}")
    finally:
        await session.close()
    probe = await health.probe(make_job(node).health)
    rotation: str | None = None
    balancer: str | None = None
    balancer_healthy: bool | None = None
    if lb.name != "none":  # `none` knows only what this process told it: nothing
        try:
            membership = await lb.state(node.lb_name)
        except LBError as exc:
            balancer = f"not readable: {exc}"
        else:
            rotation, balancer_healthy = membership.rotation, membership.healthy
            balancer = membership.status or membership.admin or membership.rotation
    return LiveNode(
        node.name,
        services={key: state.status for key, state in found.items()},
        health=("ok: " if probe.ok else "failing: ") + probe.detail,
        healthy=probe.ok,
        rotation=rotation,
        balancer=balancer,
        balancer_healthy=balancer_healthy,
    )


async def read_farm(
    inv: Inventory, recorded: Mapping[str, NodeState], lb: LoadBalancer, *, concurrency: int
) -> list[LiveNode]:
    """Every node read at most `concurrency` at a time, in inventory order. Read-only."""
    async with HealthChecker() as health:

        async def one(node: NodeSpec) -> LiveNode:
            try:
                return await _read_node(node, services_to_read(node, recorded.get(node.name)), lb, health)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one odd node must not hide the others
                return LiveNode(node.name, error=f"{type(exc).__name__}: {exc}")

        try:
            return await bounded_map(one, inv.nodes, limit=concurrency)
        finally:
            await lb.close()
