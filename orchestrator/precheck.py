"""What `validate`, `plan` and `run` check from the inventory alone, before any node is contacted:
the plan, and that every balancer it names has a driver. Kept apart from the rollout so those
commands import neither the WinRM client nor the HTTP stack (see docs/benchmarks.md, start-up)."""

from __future__ import annotations

from orchestrator.inventory import Inventory
from orchestrator.lb.base import LoadBalancer
from orchestrator.lb.registry import UnavailableDriver, build
from orchestrator.plan import Plan, PlanError, make_plan


class InvalidInput(Exception):
    """Refused before anything was touched; the message names file, line and field where it can."""


def static_plan(inv: Inventory) -> Plan:
    """The plan from the inventory alone (validate/plan commands, and the first gate of run)."""
    try:
        return make_plan(inv)
    except PlanError as exc:
        raise InvalidInput(str(inv.error_at(exc.path, exc.message))) from None


def load_balancer(inv: Inventory) -> LoadBalancer:
    """The inventory's balancer (several instances as one). A driver that is not available is
    refused, never silently replaced: restarting nodes that the balancer still sends traffic to is
    exactly what this tool prevents."""
    try:
        nodes = {n.lb_name: {"lb_name": n.lb_name, "name": n.name, "host": n.host} for n in inv.nodes}
        return build(inv.load_balancers or (inv.load_balancer,), nodes)
    except UnavailableDriver as exc:
        raise InvalidInput(
            str(
                inv.error_at(
                    (*inv.balancer_path(exc.index), "driver"),
                    f"the {exc.driver!r} driver is not available in this version; use 'none' (drain the "
                    "nodes by other means), 'haproxy', or see docs/load-balancers.md",
                )
            )
        ) from None
