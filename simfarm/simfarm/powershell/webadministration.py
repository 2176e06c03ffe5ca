"""The WebAdministration module's application pool cmdlets.

Stop-WebAppPool returns once the pool is Stopping (workers drain in the background);
Restart-WebAppPool is an overlapped recycle. Start on a started pool succeeds silently: the
sources do not say otherwise (docs/windows-fidelity.md §4).
"""

from __future__ import annotations

from typing import Any

from psrpcore.types import ErrorCategory

from simfarm.iis import AppPool, PoolStateError
from simfarm.powershell import errors, objects
from simfarm.powershell.cmdlet import Cmdlet, Invocation, Param

_NS = "Microsoft.IIs.PowerShell.Provider."
ALREADY_STOPPED = "Object on target path is already stopped."


def _pools(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> list[AppPool]:
    iis = inv.node.iis
    names = [bound["Name"]] if "Name" in bound else [str(getattr(i, "name", i)) for i in input]
    if not names:
        return list(iis.pools.values())
    found = []
    for name in names:
        pool = iis.pool(name)
        if pool is None:
            path = f"IIS:\\AppPools\\{name}"
            exc = errors.exception(
                "ItemNotFoundException", f"Cannot find path '{path}' because it does not exist."
            )
            inv.error(
                errors.record(
                    exc,
                    "PathNotFound",
                    ErrorCategory.ObjectNotFound,
                    path,
                    command=inv.type_name,
                    activity=inv.cmdlet.name,
                )
            )
        else:
            found.append(pool)
    return found


def _pool_error(inv: Invocation, exc: PoolStateError) -> None:
    if exc.message == ALREADY_STOPPED:
        net = errors.exception("InvalidOperationException", exc.message)
        rec = errors.record(
            net,
            "InvalidOperation",
            ErrorCategory.InvalidOperation,
            None,
            command=inv.type_name,
            activity=inv.cmdlet.name,
        )
    else:
        net = errors.exception("COMException", exc.message, hresult=exc.hresult)
        rec = errors.record(
            net,
            "System.Runtime.InteropServices.COMException",
            ErrorCategory.NotSpecified,
            None,
            command=inv.type_name,
            activity=inv.cmdlet.name,
        )
    inv.error(rec)


async def get_state(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for pool in _pools(inv, bound, input):
        inv.write(objects.apppool_state(pool))


def _control(operation: str) -> Any:
    async def body(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
        iis = inv.node.iis
        for pool in _pools(inv, bound, input):
            inv.node.record("apppool_control", pool=pool.name, control=operation, source="powershell")
            try:
                getattr(iis, f"{operation}_pool")(pool)
            except PoolStateError as exc:
                _pool_error(inv, exc)
                continue
            if bound.get("Passthru"):
                inv.write(objects.apppool(pool))

    return body


async def get_requests(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    """Get-WebRequest: the requests the worker processes are executing now, optionally of one pool
    or one worker process (the real cmdlet needs the Request Monitor role service)."""
    iis = inv.node.iis
    seen = 0
    pool_name = bound.get("AppPool")
    pools = list(iis.pools.values()) if pool_name is None else [p for p in [iis.pool(str(pool_name))] if p]
    for pool in pools:
        for worker in pool.workers():
            if "Process" in bound and int(bound["Process"]) != worker.pid:
                continue
            for req in worker.requests():
                seen += 1
                inv.write(objects.web_request(pool, worker.pid, req, inv.node.config.site_port))
    # Tests prove a drain looked at the node's own count (and what it saw) by this event.
    inv.node.record("web_requests_read", count=seen)


_NAME = Param("Name", "string", position=0)
CMDLETS = (
    Cmdlet(
        "Get-WebRequest",
        _NS + "GetWebRequestCommand",
        (Param("AppPool", "string", position=0), Param("Process", "int", position=1)),
        get_requests,
    ),
    Cmdlet("Get-WebAppPoolState", _NS + "GetAppPoolStateCommand", (_NAME,), get_state, takes_input=True),
    Cmdlet(
        "Start-WebAppPool",
        _NS + "StartAppPoolCommand",
        (_NAME, Param("Passthru", "switch")),
        _control("start"),
        takes_input=True,
    ),
    Cmdlet(
        "Stop-WebAppPool",
        _NS + "StopAppPoolCommand",
        (_NAME, Param("Passthru", "switch")),
        _control("stop"),
        takes_input=True,
    ),
    Cmdlet(
        "Restart-WebAppPool",
        _NS + "RestartAppPoolCommand",
        (_NAME, Param("Passthru", "switch")),
        _control("recycle"),
        takes_input=True,
    ),
)
