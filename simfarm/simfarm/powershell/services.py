"""Get-, Stop-, Start-, Restart- and Set-Service, following PowerShell's Service.cs.

Texts and error ids are those of ServiceResources.resx; `{0}` is the ServiceName, `{1}` the
DisplayName and `{2}` the ServiceController exception's message. Set-Service follows Windows
PowerShell 5.1 (no -Force; -Status Stopped refuses services with dependents or dependencies).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from psrpcore.types import ErrorCategory, NETException

from simfarm.powershell import errors, objects
from simfarm.powershell.cmdlet import Cmdlet, Invocation, Param
from simfarm.powershell.pipeline import PipelineFailed
from simfarm.scm import (
    MACHINE,
    Service,
    ServiceControllerError,
    ServiceState,
    ServiceTimeoutError,
    Win32Error,
)

# The cmdlets' WaitForStatus slice: a warning is written after each slice still pending.
WAIT_STEP_S = 2.0
SOURCE = "powershell"

NOT_FOUND = "Cannot find any service with service name '{0}'."
HAS_DEPENDENTS = (
    "Cannot stop service '{1} ({0})' because it has dependent services. It can only be stopped if the Force "
    "flag is set."
)
COULD_NOT_STOP = "Service '{1} ({0})' cannot be stopped due to the following error: {2}"
COULD_NOT_START = "Service '{1} ({0})' cannot be started due to the following error: {2}"
STOP_FAILED = "Service '{1} ({0})' stop failed."
START_FAILED = "Failed to start service '{1} ({0})'."
HAS_DEPENDENTS_NO_FORCE = "Cannot stop service '{1} ({0})' because it has dependent services."
DEPENDS_ON_NO_FORCE = "Cannot stop service '{1} ({0})' because it is dependent on other services."
COULD_NOT_SET = "Service '{1} ({0})' cannot be configured due to the following error: {2}"
NOT_SUSPENDABLE = (
    "Service '{1} ({0})' cannot be suspended because the service does not support being suspended or resumed."
)
WAITING_STOP = "Waiting for service '{1} ({0})' to stop..."
WAITING_START = "Waiting for service '{1} ({0})' to start..."

_NS = "Microsoft.PowerShell.Commands."


def _error(
    inv: Invocation,
    svc: Service,
    error_id: str,
    template: str,
    category: ErrorCategory,
    inner: NETException | None = None,
) -> None:
    message = template.format(svc.name, svc.display_name, "" if inner is None else inner.Message)
    exc = errors.exception("ServiceCommandException", message, inner=inner, ServiceName=svc.name)
    target = objects.service_controller(svc, inv.node.scm)
    inv.error(errors.record(exc, error_id, category, target, command=inv.type_name, activity=inv.cmdlet.name))


def _names_of(value: Any) -> list[str]:
    """Service names from pipeline input or -InputObject: ServiceControllers, objects with Name, strings."""
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        name = getattr(item, "ServiceName", None) or getattr(item, "Name", None)
        names.append(str(name) if name is not None else str(item))
    return names


def _matching(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> list[Service]:
    """MatchingServices(): by name (wildcards), display name or input objects, sorted by ServiceName."""
    scm = inv.node.scm
    found: dict[str, Service] = {}
    if "InputObject" in bound or (input and "Name" not in bound and "DisplayName" not in bound):
        for name in _names_of(bound.get("InputObject", input)):
            svc = scm.find(name)
            if svc is not None:
                found[svc.name.lower()] = svc
    elif "DisplayName" in bound:
        for pattern in bound["DisplayName"]:
            hits = [
                s
                for s in scm.all()
                if not s.spec.driver and fnmatch.fnmatch(s.display_name.lower(), pattern.lower())
            ]
            for svc in hits:
                found[svc.name.lower()] = svc
            if not hits and not _wild(pattern):
                exc = errors.exception(
                    "ServiceCommandException", f"Cannot find any service with display name '{pattern}'."
                )
                inv.error(
                    errors.record(
                        exc,
                        "NoServiceFoundForGivenDisplayName",
                        ErrorCategory.ObjectNotFound,
                        pattern,
                        command=inv.type_name,
                        activity=inv.cmdlet.name,
                    )
                )
    else:
        for pattern in bound.get("Name", ["*"]):
            if _wild(pattern):
                for svc in scm.all():
                    if not svc.spec.driver and fnmatch.fnmatch(svc.name.lower(), pattern.lower()):
                        found[svc.name.lower()] = svc
                continue
            one = scm.find(pattern)
            if one is None:
                exc = errors.exception(
                    "ServiceCommandException", NOT_FOUND.format(pattern), ServiceName=pattern
                )
                inv.error(
                    errors.record(
                        exc,
                        "NoServiceFoundForGivenName",
                        ErrorCategory.ObjectNotFound,
                        pattern,
                        command=inv.type_name,
                        activity=inv.cmdlet.name,
                    )
                )
            else:
                found[one.name.lower()] = one
    selected = sorted(found.values(), key=lambda s: s.name.lower())
    includes, excludes = bound.get("Include"), bound.get("Exclude")
    if includes:
        selected = [s for s in selected if any(fnmatch.fnmatch(s.name.lower(), p.lower()) for p in includes)]
    if excludes:
        selected = [
            s for s in selected if not any(fnmatch.fnmatch(s.name.lower(), p.lower()) for p in excludes)
        ]
    return selected


def _wild(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


async def _wait(
    inv: Invocation,
    svc: Service,
    target: ServiceState,
    pending: ServiceState,
    error_id: str,
    template: str,
    waiting: str,
) -> bool:
    """DoWaitForStatus: 2 s slices with no overall timeout, a warning per slice still pending."""
    scm = inv.node.scm
    while True:
        if await scm.wait_for(svc.name, target, WAIT_STEP_S):
            return True
        if svc.state not in (pending, target):
            _error(inv, svc, error_id, template, ErrorCategory.OpenError)
            return False
        inv.warning(waiting.format(svc.name, svc.display_name))


async def _stop(inv: Invocation, svc: Service, force: bool, wait: bool) -> list[Service]:
    """DoStopService: returns the services it stopped (running dependents first, then `svc`)."""
    scm = inv.node.scm
    dependents = scm.dependents(svc.name)
    if not force and any(d.state != ServiceState.Stopped for d in dependents):
        _error(inv, svc, "ServiceHasDependentServices", HAS_DEPENDENTS, ErrorCategory.InvalidOperation)
        return []
    stopped = [
        d
        for d in dependents
        if d.state in (ServiceState.Running, ServiceState.StartPending) and d.spec.stoppable
    ]
    try:
        await scm.controller_stop(svc.name, SOURCE)
    except ServiceControllerError as exc:
        if exc.inner.code != 1062:
            _error(
                inv,
                svc,
                "CouldNotStopService",
                COULD_NOT_STOP,
                ErrorCategory.CloseError,
                errors.from_controller(exc),
            )
            return _still_stopping(stopped)
    except ServiceTimeoutError as exc:
        # ServiceController.Stop()'s TimeoutException is not caught by the cmdlet: terminating.
        raise PipelineFailed(
            errors.record(
                errors.from_controller(exc),
                "TimeoutException",
                ErrorCategory.NotSpecified,
                None,
                command=inv.type_name,
                activity=inv.cmdlet.name,
            )
        ) from exc
    if wait and not await _wait(
        inv,
        svc,
        ServiceState.Stopped,
        ServiceState.StopPending,
        "StopServiceFailed",
        STOP_FAILED,
        WAITING_STOP,
    ):
        return _still_stopping(stopped)
    result = _still_stopping(stopped)
    if svc.state in (ServiceState.Stopped, ServiceState.StopPending):
        result.append(svc)
    return result


def _still_stopping(services: list[Service]) -> list[Service]:
    return [s for s in services if s.state in (ServiceState.Stopped, ServiceState.StopPending)]


async def _start(inv: Invocation, svc: Service) -> bool:
    """DoStartService: 1056 (already running) is not an error."""
    try:
        await inv.node.scm.controller_start(svc.name, SOURCE)
    except ServiceControllerError as exc:
        if exc.inner.code != 1056:
            _error(
                inv,
                svc,
                "CouldNotStartService",
                COULD_NOT_START,
                ErrorCategory.OpenError,
                errors.from_controller(exc),
            )
            return False
    return await _wait(
        inv,
        svc,
        ServiceState.Running,
        ServiceState.StartPending,
        "StartServiceFailed",
        START_FAILED,
        WAITING_START,
    )


def _emit(inv: Invocation, svc: Service) -> None:
    inv.write(objects.service_controller(svc, inv.node.scm))


# --- cmdlet bodies ------------------------------------------------------------------------------


async def get_service(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    scm = inv.node.scm
    for svc in _matching(inv, bound, input):
        if not bound.get("DependentServices") and not bound.get("RequiredServices"):
            _emit(inv, svc)
            continue
        if bound.get("DependentServices"):
            for dep in scm.dependents(svc.name):
                _emit(inv, dep)
        if bound.get("RequiredServices"):
            for req in scm.depends_on(svc.name):
                _emit(inv, req)


async def stop_service(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for svc in _matching(inv, bound, input):
        stopped = await _stop(inv, svc, bool(bound.get("Force")), not bound.get("NoWait"))
        if bound.get("PassThru"):
            for s in stopped:
                _emit(inv, s)


async def start_service(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for svc in _matching(inv, bound, input):
        if await _start(inv, svc) and bound.get("PassThru"):
            _emit(inv, svc)


async def restart_service(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for svc in _matching(inv, bound, input):
        for stopped in await _stop(inv, svc, bool(bound.get("Force")), True):
            if await _start(inv, stopped) and bound.get("PassThru"):
                _emit(inv, stopped)


async def set_service(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    scm = inv.node.scm
    name = bound.get("Name") or (
        _names_of(bound.get("InputObject", input))[0] if (bound.get("InputObject") or input) else ""
    )
    svc = scm.find(name)
    if svc is None:
        exc = errors.exception(
            "InvalidOperationException",
            f"Service '{name}' was not found on computer '{MACHINE}'.",
            inner=errors.win32(Win32Error(1060)),
        )
        inv.error(
            errors.record(
                exc,
                "InvalidOperationException",
                ErrorCategory.ObjectNotFound,
                name,
                command=inv.type_name,
                activity=inv.cmdlet.name,
            )
        )
        return
    if "StartupType" in bound or "DisplayName" in bound or "Description" in bound:
        try:
            scm.open_for_control(svc.name)
            if "StartupType" in bound:
                scm.set_start_type(svc.name, bound["StartupType"])
        except Win32Error as exc:
            _error(
                inv,
                svc,
                "CouldNotSetService",
                COULD_NOT_SET,
                ErrorCategory.PermissionDenied,
                errors.win32(exc),
            )
            return
    status = bound.get("Status")
    if status == "Running" and svc.state != ServiceState.Running:
        if not await _start(inv, svc):
            return
    elif status == "Stopped" and svc.state == ServiceState.Running:
        if scm.dependents(svc.name):
            _error(
                inv,
                svc,
                "ServiceHasDependentServicesNoForce",
                HAS_DEPENDENTS_NO_FORCE,
                ErrorCategory.InvalidOperation,
            )
            return
        if scm.depends_on(svc.name):
            _error(
                inv, svc, "ServiceIsDependentOnNoForce", DEPENDS_ON_NO_FORCE, ErrorCategory.InvalidOperation
            )
            return
        if not await _stop(inv, svc, True, True):
            return
    elif status == "Paused":
        _error(inv, svc, "CouldNotSuspendServiceNotSupported", NOT_SUSPENDABLE, ErrorCategory.CloseError)
        return
    if bound.get("PassThru"):
        _emit(inv, svc)


_SELECT = (
    Param("Name", "strings", ("ServiceName",), position=0),
    Param("DisplayName", "strings"),
    Param("InputObject", "any"),
    Param("Include", "strings"),
    Param("Exclude", "strings"),
)
_OPERATE = (
    Param("Name", "strings", ("ServiceName",), position=0, mandatory=True),
    Param("DisplayName", "strings"),
    Param("InputObject", "any"),
    Param("Include", "strings"),
    Param("Exclude", "strings"),
    Param("PassThru", "switch"),
)
CMDLETS = (
    Cmdlet(
        "Get-Service",
        _NS + "GetServiceCommand",
        (
            *_SELECT,
            Param("DependentServices", "switch", ("DS",)),
            Param("RequiredServices", "switch", ("SDO", "ServicesDependedOn")),
            Param("ComputerName", "strings", ("Cn",)),
        ),
        get_service,
        takes_input=True,
    ),
    Cmdlet(
        "Stop-Service",
        _NS + "StopServiceCommand",
        (*_OPERATE, Param("Force", "switch"), Param("NoWait", "switch")),
        stop_service,
        takes_input=True,
    ),
    Cmdlet("Start-Service", _NS + "StartServiceCommand", _OPERATE, start_service, takes_input=True),
    Cmdlet(
        "Restart-Service",
        _NS + "RestartServiceCommand",
        (*_OPERATE, Param("Force", "switch")),
        restart_service,
        takes_input=True,
    ),
    Cmdlet(
        "Set-Service",
        _NS + "SetServiceCommand",
        (
            Param("Name", "string", ("ServiceName", "SN"), position=0, mandatory=True),
            Param("InputObject", "any"),
            Param("DisplayName", "string", ("DN",)),
            Param("Description", "string"),
            Param(
                "StartupType",
                "string",
                ("StartMode", "SM", "ST"),
                choices=("Boot", "System", "Automatic", "Manual", "Disabled"),
                type_name="System.ServiceProcess.ServiceStartMode",
            ),
            Param("Status", "string", choices=("Running", "Stopped", "Paused")),
            Param("PassThru", "switch"),
        ),
        set_service,
        takes_input=True,
    ),
)
