"""What can only be checked when a run starts: the clock and the name service.

`validate` runs anywhere, any time; these checks belong to the moment of the run, before the first
node is contacted: a change window already over, and two nodes whose names resolve to one machine.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.addresses import host_key, resolve
from orchestrator.inventory.loader import Inventory
from orchestrator.inventory.model import NodeSpec
from orchestrator.yamlsource import SourceError


def window_over(inv: Inventory, now: datetime) -> SourceError | None:
    """The error for a change window that has already ended, or None."""
    finish_by = inv.rollout.change_window.finish_by
    if finish_by is None or finish_by > now:
        return None
    ago = int((now - finish_by).total_seconds())
    return inv.error_at(
        ("rollout", "change_window", "finish_by"),
        f"the change window ended {_duration(ago)} ago ({finish_by.isoformat()}); no node would be "
        "started: set the end of tonight's window",
    )


async def check_at_run(inv: Inventory, now: datetime) -> None:
    """Raises SourceError (file, line, field) for the first problem found."""
    if (over := window_over(inv, now)) is not None:
        raise over
    # Resolved once, here: two names for one machine (an alias, a CNAME, localhost) are refused like
    # two spellings of one address are at load time.
    timeout = max((n.transport.connect_timeout for n in inv.nodes), default=10.0)
    addresses = await resolve((n.host for n in inv.nodes), timeout=timeout)
    seen: dict[tuple[str, int], NodeSpec] = {}
    for node in inv.nodes:
        for address in sorted(addresses.get(node.host) or {host_key(node.host)}):
            other = seen.setdefault((address, node.transport.port), node)
            if other is not node:
                raise inv.node_error(
                    node.name,
                    ("host",),
                    f"{node.host} resolves to {address}, as does node {other.name!r} ({other.host}), "
                    f"port {node.transport.port}: one machine would be restarted twice",
                )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
