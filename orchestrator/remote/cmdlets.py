"""Typed calls for the cmdlets the actions use, each one short (no remote waiting).

Every call names a cmdlet and its parameters, so the same code works on a full endpoint and on a
JEA endpoint in NoLanguage mode that exposes only these cmdlets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.remote.errors import RemoteError, prop
from orchestrator.remote.session import Cmd, Invocation, Session
from orchestrator.results import ErrorInfo

# ServiceControllerStatus values (windows-fidelity §1), for serializers that send the bare number.
_STATUS_BY_VALUE = {
    1: "Stopped",
    2: "StartPending",
    3: "StopPending",
    4: "Running",
    5: "ContinuePending",
    6: "PausePending",
    7: "Paused",
}

# The cmdlets the product calls; a JEA role capability must make these visible.
CMDLETS = (
    "Get-Service",
    "Stop-Service",
    "Start-Service",
    "Get-Process",
    "Stop-Process",
    "Get-WebAppPoolState",
    "Restart-WebAppPool",
    "Invoke-CimMethod",
    "Get-WebRequest",
)


@dataclass(frozen=True)
class ServiceState:
    name: str
    status: str
    start_type: str | None


def status_name(value: Any) -> str:
    if isinstance(value, int):
        return _STATUS_BY_VALUE.get(value, str(value))
    return str(value)


def _name_of(obj: Any) -> str:
    name = prop(obj, "Name") or prop(obj, "ServiceName")
    return str(name if name is not None else obj)


def _raise_first(inv: Invocation, *, ignore: Iterable[str] = ()) -> None:
    skip = set(ignore)
    for err in inv.errors:
        if err.kind not in skip:
            raise RemoteError(err)
    if inv.failed and not inv.errors:
        raise RemoteError(ErrorInfo(kind="remote", message="the remote pipeline failed"))


async def get_services(session: Session, names: Iterable[str], *, timeout: float) -> dict[str, ServiceState]:
    """Current state of the named services; a missing one raises RemoteError(kind=not_found)."""
    inv = await session.invoke(Cmd.of("Get-Service", Name=sorted(set(names))), timeout=timeout)
    _raise_first(inv)
    out: dict[str, ServiceState] = {}
    for obj in inv.output:
        st = prop(obj, "StartType")
        state = ServiceState(_name_of(obj), status_name(prop(obj, "Status")), None if st is None else str(st))
        out[state.name.upper()] = state
    return out


async def related_services(session: Session, name: str, *, dependents: bool, timeout: float) -> list[str]:
    """Names of the services depending on (or depended on by) `name`, as Windows lists them."""
    switch = "DependentServices" if dependents else "RequiredServices"
    inv = await session.invoke(Cmd.of("Get-Service", switch, Name=name), timeout=timeout)
    _raise_first(inv)
    return [_name_of(obj) for obj in inv.output]


async def stop_service(session: Session, name: str, *, timeout: float) -> ErrorInfo | None:
    """Send the stop control without waiting. Returns a 1061 ('busy') error instead of raising it,
    because a service in a pending state answers 1061 and the caller keeps waiting."""
    inv = await session.invoke(Cmd.of("Stop-Service", "NoWait", Name=name), timeout=timeout)
    return _control_result(inv)


async def start_service(session: Session, name: str, *, timeout: float) -> ErrorInfo | None:
    """Start the service. Start-Service has no -NoWait: it waits for Running with no limit of its own,
    so the caller bounds it with the call timeout (the pipeline is then stopped) and polls the state
    itself afterwards. 1061 is returned, not raised."""
    inv = await session.invoke(Cmd.of("Start-Service", Name=name), timeout=timeout)
    return _control_result(inv)


def _control_result(inv: Invocation) -> ErrorInfo | None:
    busy = next((e for e in inv.errors if e.kind == "cannot_accept_control"), None)
    _raise_first(inv, ignore={"cannot_accept_control"})
    return busy


async def worker_process_ids(session: Session, *, timeout: float) -> list[int]:
    inv = await session.invoke(Cmd.of("Get-Process", Name="w3wp"), timeout=timeout)
    # No w3wp running is not an error for us: Get-Process reports it as ObjectNotFound.
    _raise_first(inv, ignore={"not_found", "remote"})
    return [int(prop(p, "Id")) for p in inv.output if prop(p, "Id") is not None]


async def process_running(session: Session, pid: int, *, timeout: float) -> bool:
    inv = await session.invoke(Cmd.of("Get-Process", Id=pid), timeout=timeout)
    _raise_first(inv, ignore={"not_found", "remote"})
    return bool(inv.output)


async def stop_process(session: Session, pid: int, *, timeout: float) -> None:
    inv = await session.invoke(Cmd.of("Stop-Process", "Force", Id=pid), timeout=timeout)
    _raise_first(inv, ignore={"not_found"})


async def app_pool_state(session: Session, name: str, *, timeout: float) -> str:
    inv = await session.invoke(Cmd.of("Get-WebAppPoolState", Name=name), timeout=timeout)
    _raise_first(inv)
    if not inv.output:
        raise RemoteError(ErrorInfo(kind="not_found", message=f"app pool {name} not found", target=name))
    return str(prop(inv.output[0], "Value"))


async def restart_app_pool(session: Session, name: str, *, timeout: float) -> None:
    inv = await session.invoke(Cmd.of("Restart-WebAppPool", Name=name), timeout=timeout)
    _raise_first(inv)


async def create_detached_process(session: Session, command_line: str, *, timeout: float) -> int:
    """Start a process outside the WinRM shell's job object (Win32_Process.Create), so it survives
    WinRM itself stopping. Returns its PID."""
    inv = await session.invoke(
        Cmd.of(
            "Invoke-CimMethod",
            ClassName="Win32_Process",
            MethodName="Create",
            Arguments={"CommandLine": command_line},
        ),
        timeout=timeout,
        # Never twice: a lost answer must not start a second `net stop http`.
        retry=False,
    )
    _raise_first(inv)
    result = inv.output[0] if inv.output else None
    code = prop(result, "ReturnValue")
    if code not in (0, None):
        raise RemoteError(
            ErrorInfo(kind="remote", message=f"Win32_Process.Create returned {code}", code=code)
        )
    pid = prop(result, "ProcessId")
    return int(pid) if pid is not None else 0


async def requests_in_flight(session: Session, *, timeout: float) -> int | None:
    """Requests the node's worker processes are executing now (Get-WebRequest, WebAdministration).
    None when the node cannot say: the cmdlet is absent (Request Monitor not installed, or a JEA
    endpoint that does not expose it)."""
    inv = await session.invoke(Cmd.of("Get-WebRequest"), timeout=timeout)
    if any(e.kind == "not_found" for e in inv.errors):
        return None
    _raise_first(inv)
    return len(inv.output)
