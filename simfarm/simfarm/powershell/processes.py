"""Get-Process and Stop-Process over the node's process table (svchost, w3wp, inetinfo, ...)."""

from __future__ import annotations

import fnmatch
from typing import Any

from psrpcore.types import ErrorCategory

from simfarm.powershell import errors, objects
from simfarm.powershell.cmdlet import Cmdlet, Invocation, Param
from simfarm.processes import AccessDeniedError, Process
from simfarm.scm import Win32Error

_NS = "Microsoft.PowerShell.Commands."


def _not_found(inv: Invocation, error_id: str, message: str, target: Any) -> None:
    exc = errors.exception("ProcessCommandException", message, ProcessName=str(target))
    inv.error(
        errors.record(
            exc,
            error_id,
            ErrorCategory.ObjectNotFound,
            target,
            command=inv.type_name,
            activity=inv.cmdlet.name,
        )
    )


def _select(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> list[Process]:
    table = inv.node.processes
    found: dict[int, Process] = {}
    if "Id" in bound:
        for pid in bound["Id"]:
            proc = table.get(pid)
            if proc is None:
                _not_found(
                    inv,
                    "NoProcessFoundForGivenId",
                    f"Cannot find a process with the process identifier {pid}.",
                    pid,
                )
            else:
                found[pid] = proc
    elif "Name" in bound:
        for pattern in bound["Name"]:
            hits = [p for p in table.all() if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
            if not hits and not any(c in pattern for c in "*?["):
                _not_found(
                    inv,
                    "NoProcessFoundForGivenName",
                    f'Cannot find a process with the name "{pattern}". Verify the process name and call the '
                    "cmdlet again.",
                    pattern,
                )
            found.update((p.pid, p) for p in hits)
    elif "InputObject" in bound or input:
        for item in (
            bound.get("InputObject", input)
            if isinstance(bound.get("InputObject", input), list)
            else [bound["InputObject"]]
        ):
            pid = getattr(item, "Id", None)
            proc = table.get(int(pid)) if pid is not None else None
            if proc is not None:
                found[proc.pid] = proc
    else:
        found = {p.pid: p for p in table.all()}
    return sorted(found.values(), key=lambda p: (p.name.lower(), p.pid))


async def get_process(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for proc in _select(inv, bound, input):
        inv.write(objects.process(proc))


async def stop_process(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    # -Force only skips a confirmation prompt, which a remote session cannot show anyway.
    for proc in _select(inv, bound, input):
        try:
            inv.node.processes.kill(proc.pid, "powershell")
        except AccessDeniedError:
            denied = Win32Error(5)
            exc = errors.exception(
                "ProcessCommandException",
                f'Cannot stop process "{proc.name} ({proc.pid})" because of the following error: '
                f"{denied.message.rstrip('.')}",
                inner=errors.win32(denied),
                ProcessName=proc.name,
            )
            inv.error(
                errors.record(
                    exc,
                    "CouldNotStopProcess",
                    ErrorCategory.CloseError,
                    objects.process(proc),
                    command=inv.type_name,
                    activity=inv.cmdlet.name,
                )
            )
            continue
        if bound.get("PassThru"):
            inv.write(objects.process(proc))


CMDLETS = (
    Cmdlet(
        "Get-Process",
        _NS + "GetProcessCommand",
        (
            Param("Name", "strings", ("ProcessName",), position=0),
            Param("Id", "ints", ("PID",)),
            Param("InputObject", "any"),
            Param("ComputerName", "strings", ("Cn",)),
        ),
        get_process,
        takes_input=True,
    ),
    Cmdlet(
        "Stop-Process",
        _NS + "StopProcessCommand",
        (
            Param("Id", "ints", position=0),
            Param("Name", "strings", ("ProcessName",)),
            Param("InputObject", "any"),
            Param("Force", "switch"),
            Param("PassThru", "switch"),
        ),
        stop_process,
        takes_input=True,
    ),
)
