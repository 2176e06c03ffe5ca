"""The objects the simulated cmdlets write, with the .NET type names and properties real ones have.

Remoting serializes an object's own .NET (or CIM) properties as adapted properties (`<Props>`,
MS-PSRP 2.2.5.2.8) and only its ETS members as extended ones (`<MS>`, 2.2.5.2.9): the alias and script
properties of PowerShell's types.ps1xml (`Name` on a ServiceController or a Process, `Handles`, `WS`,
`Path`, ...), and note properties. `PSComputerName`, `RunspaceId` and `PSShowComputerName` are not
added here: on Windows the client's Invoke-Command adds them to what it receives, so a raw PSRP client
never sees them on a ServiceController or a Process; a CIM instance carries `PSComputerName` itself.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from psrpcore.types import PSEnumBase, PSNoteProperty, PSObject, PSType, add_alias_property, add_note_property

from simfarm.iis import AppPool, Request
from simfarm.processes import Process
from simfarm.scm import Service, ServiceControlManager, ServiceState


@PSType(["System.ServiceProcess.ServiceControllerStatus"])
class ServiceControllerStatus(PSEnumBase):
    Stopped = 1
    StartPending = 2
    StopPending = 3
    Running = 4
    ContinuePending = 5
    PausePending = 6
    Paused = 7


@PSType(["System.ServiceProcess.ServiceStartMode"])
class ServiceStartMode(PSEnumBase):
    Boot = 0
    System = 1
    Automatic = 2
    Manual = 3
    Disabled = 4


@PSType(["System.ServiceProcess.ServiceType"])
class ServiceType(PSEnumBase):
    KernelDriver = 1
    Win32OwnProcess = 16
    Win32ShareProcess = 32


def _typed(
    type_names: list[str],
    to_string: str,
    adapted: dict[str, Any],
    *,
    aliases: dict[str, str] | None = None,
    notes: dict[str, Any] | None = None,
) -> PSObject:
    """An object with its .NET/CIM properties adapted and its ETS members (aliases, notes) extended."""
    obj = PSObject()
    obj.PSObject.type_names = type_names
    obj.PSObject.to_string = to_string
    for name, value in adapted.items():
        obj.PSObject.adapted_properties.append(PSNoteProperty(name, value))
    for name, target in (aliases or {}).items():
        add_alias_property(obj, name, target)
    for name, value in (notes or {}).items():
        add_note_property(obj, name, value)
    return obj


def service_controller(svc: Service, scm: ServiceControlManager, *, shallow: bool = False) -> PSObject:
    """System.ServiceProcess.ServiceController; nested controllers (shallow) omit their own arrays,
    as remoting's serialization depth does. `Name` and `RequiredServices` are types.ps1xml aliases."""
    aliases = {"Name": "ServiceName"}
    props: dict[str, Any] = {
        "CanPauseAndContinue": False,
        "CanShutdown": svc.state == ServiceState.Running,
        "CanStop": svc.state == ServiceState.Running and svc.spec.stoppable,
        "DisplayName": svc.display_name,
    }
    if not shallow:
        props["DependentServices"] = [
            service_controller(d, scm, shallow=True) for d in scm.dependents(svc.name)
        ]
    props["MachineName"] = "."
    props["ServiceName"] = svc.name
    if not shallow:
        props["ServicesDependedOn"] = [
            service_controller(d, scm, shallow=True) for d in scm.depends_on(svc.name)
        ]
        aliases["RequiredServices"] = "ServicesDependedOn"
    props["Status"] = ServiceControllerStatus(int(svc.state))
    props["ServiceType"] = ServiceType.KernelDriver if svc.spec.driver else ServiceType.Win32ShareProcess
    props["StartType"] = ServiceStartMode[svc.start_type]
    props["Site"] = props["Container"] = None
    return _typed(
        [
            "System.ServiceProcess.ServiceController",
            "System.ComponentModel.Component",
            "System.MarshalByRefObject",
            "System.Object",
        ],
        "System.ServiceProcess.ServiceController",
        props,
        aliases=aliases,
    )


def process(proc: Process, session_id: int = 0) -> PSObject:
    """System.Diagnostics.Process: .NET properties adapted; Get-Process's short names are ETS members."""
    start = datetime.datetime.fromtimestamp(proc.start_time)
    path = None if proc.protected else proc.command_line.split(" -")[0].strip('"')
    return _typed(
        [
            "System.Diagnostics.Process",
            "System.ComponentModel.Component",
            "System.MarshalByRefObject",
            "System.Object",
        ],
        f"System.Diagnostics.Process ({proc.name})",
        {
            "BasePriority": 8,
            "HandleCount": 0,
            "HasExited": False,
            "Id": proc.pid,
            "MachineName": ".",
            "NonpagedSystemMemorySize64": 0,
            "PagedMemorySize64": 0,
            "ProcessName": proc.name,
            "SessionId": session_id,
            "StartTime": start,
            "VirtualMemorySize64": 0,
            "WorkingSet64": 0,
        },
        aliases={
            "Name": "ProcessName",
            "SI": "SessionId",
            "Handles": "HandleCount",
            "VM": "VirtualMemorySize64",
            "WS": "WorkingSet64",
            "PM": "PagedMemorySize64",
            "NPM": "NonpagedSystemMemorySize64",
        },
        # Script properties in types.ps1xml; serialized with their values.
        notes={"Path": path, "CPU": 0.0},
    )


_WIN32_STATE = {
    ServiceState.Stopped: "Stopped",
    ServiceState.StartPending: "Start Pending",
    ServiceState.StopPending: "Stop Pending",
    ServiceState.Running: "Running",
}
_START_MODE = {"Automatic": "Auto", "Manual": "Manual", "Disabled": "Disabled"}
_CIM = "Microsoft.Management.Infrastructure.CimInstance"
# A CIM instance names the computer it came from; null for a query on the local machine.
_CIM_NOTES = {"PSComputerName": None}


def win32_service(svc: Service, pid: int) -> PSObject:
    """A Win32_Service CIM instance."""
    chain = [
        "Win32_Service",
        "Win32_BaseService",
        "CIM_Service",
        "CIM_LogicalElement",
        "CIM_ManagedSystemElement",
    ]
    return _typed(
        [f"{_CIM}#root/cimv2/{c}" for c in chain] + [f"{_CIM}#{c}" for c in chain] + [_CIM, "System.Object"],
        f'Win32_Service (Name = "{svc.name}")',
        {
            "Name": svc.name,
            "Status": "OK",
            "Caption": svc.display_name,
            "Description": None,
            "DisplayName": svc.display_name,
            "AcceptPause": False,
            "AcceptStop": svc.state == ServiceState.Running and svc.spec.stoppable,
            "ExitCode": svc.exit_code,
            "PathName": f"C:\\Windows\\system32\\svchost.exe -k {svc.spec.host}",
            "ServiceType": "Share Process",
            "StartMode": _START_MODE[svc.start_type],
            "Started": svc.state == ServiceState.Running,
            "State": _WIN32_STATE[svc.state],
            "ProcessId": pid,
            "CheckPoint": 0,
            "WaitHint": 0,
            "SystemName": None,
        },
        notes=_CIM_NOTES,
    )


def process_create_result(pid: int, return_value: int) -> PSObject:
    """What Invoke-CimMethod Win32_Process Create writes."""
    return _typed(
        [
            "Microsoft.Management.Infrastructure.CimMethodResult#Win32_Process#Create",
            "Microsoft.Management.Infrastructure.CimMethodResult",
            "System.Object",
        ],
        "Microsoft.Management.Infrastructure.CimMethodResult",
        {"ProcessId": pid, "ReturnValue": return_value},
        notes=_CIM_NOTES,
    )


def apppool_state(pool: AppPool) -> PSObject:
    """Get-WebAppPoolState: a PSCustomObject (all note properties) whose Value is the pool's state."""
    return _typed(
        ["System.Management.Automation.PSCustomObject", "System.Object"],
        "",
        {},
        notes={"Name": pool.name, "Value": pool.state.name},
    )


def web_request(pool: AppPool, pid: int, req: Request, site_port: int) -> PSObject:
    """One in-flight request as Get-WebRequest (the Request Monitor) writes it."""
    elapsed = int((time.monotonic() - req.started) * 1000)
    return _typed(
        [
            "Microsoft.IIs.PowerShell.Framework.ConfigurationElement#requests#request",
            "Microsoft.IIs.PowerShell.Framework.ConfigurationElement",
            "System.Object",
        ],
        "Microsoft.IIs.PowerShell.Framework.ConfigurationElement",
        {
            "requestId": f"{req.id:016X}",
            "connectionId": f"{req.id:016X}",
            "verb": req.verb,
            "url": req.url,
            "siteId": 1,
            "appPoolName": pool.name,
            "processId": pid,
            "stage": "ExecuteRequestHandler",
            "timeElapsed": elapsed,
            "timeInState": elapsed,
            "clientIpAddr": req.client,
            "localPort": site_port,
            "pipelineState": "ExecuteRequestHandler",
        },
    )


def apppool(pool: AppPool) -> PSObject:
    """The pool as Start-/Stop-WebAppPool -Passthru writes it."""
    return _typed(
        [
            "Microsoft.IIs.PowerShell.Framework.ConfigurationElement#system.applicationHost/applicationPools#add",
            "Microsoft.IIs.PowerShell.Framework.ConfigurationElement",
            "System.Object",
        ],
        "Microsoft.IIs.PowerShell.Framework.ConfigurationElement",
        {"name": pool.name, "state": pool.state.name, "autoStart": True, "startMode": "OnDemand"},
    )


def win32_process(proc: Process) -> PSObject:
    """A Win32_Process CIM instance."""
    chain = ["Win32_Process", "CIM_Process", "CIM_LogicalElement", "CIM_ManagedSystemElement"]
    image = proc.name if proc.name == "System" else f"{proc.name}.exe"
    return _typed(
        [f"{_CIM}#root/cimv2/{c}" for c in chain] + [_CIM, "System.Object"],
        f'Win32_Process (Handle = "{proc.pid}")',
        {
            "Name": image,
            "Caption": image,
            "ProcessId": proc.pid,
            "Handle": str(proc.pid),
            "CommandLine": None if proc.protected else proc.command_line,
            "ExecutablePath": None if proc.protected else proc.command_line.split(" -")[0].strip('"'),
            "SessionId": 0,
        },
        notes=_CIM_NOTES,
    )
