"""Typed calls for the cmdlets the actions use, each one short (no remote waiting).

Every call names a cmdlet and its parameters, so the same code works on a full endpoint and on a
JEA endpoint in NoLanguage mode that exposes only these cmdlets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.remote.errors import RemoteError, prop
from orchestrator.remote.session import Cmd, Invocation, Session
from orchestrator.results import ErrorInfo

# ServiceControllerStatus values (docs/windows-fidelity.md §1), for serializers that send the bare number.
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


def _state_of(obj: Any) -> ServiceState:
    st = prop(obj, "StartType")
    return ServiceState(_name_of(obj), status_name(prop(obj, "Status")), None if st is None else str(st))


def _states(objects: Iterable[Any]) -> dict[str, ServiceState]:
    """By upper-cased name; a service read twice in one pipeline keeps its last (newest) state."""
    out: dict[str, ServiceState] = {}
    for obj in objects:
        state = _state_of(obj)
        out[state.name.upper()] = state
    return out


async def get_services(session: Session, names: Iterable[str], *, timeout: float) -> dict[str, ServiceState]:
    """Current state of the named services; a missing one raises RemoteError(kind=not_found)."""
    inv = await session.invoke(read_request(names), timeout=timeout)
    _raise_first(inv)
    return _states(inv.output)


def read_request(names: Iterable[str]) -> Cmd:
    return Cmd.of("Get-Service", Name=sorted(set(names)))


def stop_request(names: Sequence[str], *, wait: bool) -> Cmd:
    """Stop-Service; with `wait` the cmdlet itself waits for Stopped (no limit of its own: the call
    timeout bounds it), without it the control is sent and the call returns (-NoWait)."""
    return (
        Cmd.of("Stop-Service", Name=list(names))
        if wait
        else Cmd.of("Stop-Service", "NoWait", Name=list(names))
    )


def start_request(name: str) -> Cmd:
    """Start-Service waits for Running (it has no -NoWait); the call timeout bounds it."""
    return Cmd.of("Start-Service", Name=[name])


@dataclass
class Controlled:
    """What one control pipeline ended with: the states read last, and the errors of its controls
    (not raised: the caller decides which ones Windows expects)."""

    states: dict[str, ServiceState]
    errors: list[ErrorInfo]


async def control_and_read(
    session: Session, controls: Sequence[Cmd], read: Iterable[str], *, timeout: float
) -> Controlled:
    """The controls, each a statement of its own and in order, then one Get-Service of `read`, all
    in one pipeline: a control round and the observation after it cost one remote call.
    A terminating error (the pipeline failed) raises."""
    inv = await session.invoke_statements([*([c] for c in controls), [read_request(read)]], timeout=timeout)
    if inv.failed:
        _raise_first(inv)
    return Controlled(_states(inv.output), list(inv.errors))


@dataclass(frozen=True)
class ServiceGraph:
    """The targets and every service depending on them, read in one pipeline."""

    found: dict[str, ServiceState]  # by upper-cased name: the targets and their dependents
    requires: dict[str, list[str]]  # Windows name -> the services it depends on (ServicesDependedOn)
    dependents: dict[str, list[str]]  # Windows name -> the services depending on it (DependentServices)
    nested: dict[str, ServiceState]  # states of the services depended on, from the nested objects


async def read_service_graph(session: Session, targets: Sequence[str], *, timeout: float) -> ServiceGraph:
    """`Get-Service -Name T; Get-Service -Name T -DependentServices`: each ServiceController carries
    its own DependentServices and ServicesDependedOn, so one pipeline gives the graph that took a
    lookup per service. A missing target raises RemoteError(kind=not_found). An array whose entries
    come back without names (a shallower serialization) is left out of `requires`/`dependents`."""
    names = sorted(set(targets))
    inv = await session.invoke_statements(
        [[Cmd.of("Get-Service", Name=names)], [Cmd.of("Get-Service", "DependentServices", Name=names)]],
        timeout=timeout,
    )
    _raise_first(inv)
    return service_graph(inv.output)


def service_graph(objects: Iterable[Any]) -> ServiceGraph:
    """The graph carried by ServiceController objects (pure: what `read_service_graph` decodes)."""
    found: dict[str, ServiceState] = {}
    requires: dict[str, list[str]] = {}
    dependents: dict[str, list[str]] = {}
    nested: dict[str, ServiceState] = {}
    for obj in objects:
        state = _state_of(obj)
        found[state.name.upper()] = state
        for bag, into in (("ServicesDependedOn", requires), ("DependentServices", dependents)):
            entries = prop(obj, bag)
            if not isinstance(entries, list):
                continue
            named = [e for e in entries if prop(e, "ServiceName") or prop(e, "Name")]
            if len(named) != len(entries):
                continue
            into[state.name] = [_name_of(e) for e in named]
            if bag == "ServicesDependedOn":
                for entry in named:
                    if prop(entry, "Status") is not None:
                        dep = _state_of(entry)
                        nested[dep.name.upper()] = dep
    return ServiceGraph(found, requires, dependents, nested)


async def related_services(session: Session, name: str, *, dependents: bool, timeout: float) -> list[str]:
    """Names of the services depending on (or depended on by) `name`, as Windows lists them."""
    switch = "DependentServices" if dependents else "RequiredServices"
    inv = await session.invoke(Cmd.of("Get-Service", switch, Name=name), timeout=timeout)
    _raise_first(inv)
    return [_name_of(obj) for obj in inv.output]


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
