"""Driver registry: the inventory's `driver` name to the code that builds it.

A driver that is not registered is refused by name, never replaced by another: restarting nodes
the balancer still sends traffic to is exactly what this tool prevents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from orchestrator.inventory import LoadBalancer as Settings
from orchestrator.lb.base import DrainPolicy, LoadBalancer
from orchestrator.lb.retrying import Retrying
from orchestrator.lb.several import Several

# lb_name -> the node's fields a driver may template with: lb_name, name, host.
NodeFields = Mapping[str, Mapping[str, str]]
Factory = Callable[[Settings, NodeFields], LoadBalancer]


# Each factory imports its driver when a balancer is built, so an inventory imports only the
# driver it names (the http driver's aiohttp, for one, is not the haproxy driver's business).


def _none(_s: Settings, _nodes: NodeFields) -> LoadBalancer:
    from orchestrator.lb.none import NoBalancer

    return NoBalancer()


def _haproxy(s: Settings, _nodes: NodeFields) -> LoadBalancer:
    from orchestrator.lb.haproxy import HAProxy

    h = s.haproxy
    assert h is not None  # the inventory requires the section beside the driver
    backends = [h.backend] if isinstance(h.backend, str) else list(h.backend)
    return HAProxy(h.socket, backends, timeout=h.timeout, config=h.config, drain_state=h.drain_state)


def _command(s: Settings, nodes: NodeFields) -> LoadBalancer:
    from orchestrator.lb.command import CommandBalancer

    c = s.command
    assert c is not None
    argv = {"drain": c.drain, "ready": c.ready, "status": c.status}
    if c.recheck is not None:
        argv["recheck"] = c.recheck
    return CommandBalancer(argv, nodes, timeout=c.timeout)


def _http(s: Settings, nodes: NodeFields) -> LoadBalancer:
    from orchestrator.lb.webhook import HttpBalancer

    assert s.http is not None
    return HttpBalancer(s.http, nodes)


DRIVERS: dict[str, Factory] = {
    "none": _none,
    "haproxy": _haproxy,
    "command": _command,
    "http": _http,
}


class UnavailableDriver(Exception):
    def __init__(self, index: int, driver: str) -> None:
        self.index = index
        self.driver = driver
        super().__init__(f"the {driver!r} driver is not available in this version")


def build(settings: Sequence[Settings], nodes: NodeFields | None = None) -> LoadBalancer:
    """Every instance the inventory names, each retrying transient failures; several as one."""
    instances: list[LoadBalancer] = []
    for index, s in enumerate(settings):
        factory = DRIVERS.get(s.driver)
        if factory is None:
            raise UnavailableDriver(index, s.driver)
        instances.append(Retrying(factory(s, nodes or {})))
    return instances[0] if len(instances) == 1 else Several(instances)


def drain_policy(settings: Sequence[Settings]) -> DrainPolicy:
    """Several instances: the strictest of their settings."""
    return DrainPolicy(
        drain_timeout=max(s.drain_timeout for s in settings),
        on_drain_timeout="fail" if any(s.on_drain_timeout == "fail" for s in settings) else "proceed",
        node_drain=any(s.node_drain for s in settings),
        watch_seconds=max(s.watch_seconds for s in settings),
    )
