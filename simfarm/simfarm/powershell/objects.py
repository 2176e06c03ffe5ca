"""The objects the simulated cmdlets write, with the .NET type names and properties real ones have."""

from __future__ import annotations

import datetime
from typing import Any

from psrpcore.types import PSEnumBase, PSObject, PSType, add_note_property

from simfarm.iis import AppPool
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


def _typed(type_names: list[str], to_string: str, props: dict[str, Any]) -> PSObject:
    obj = PSObject()
    obj.PSObject.type_names = type_names
    obj.PSObject.to_string = to_string
    for name, value in props.items():
        add_note_property(obj, name, value)
    return obj


def service_controller(svc: Service, scm: ServiceControlManager, *, shallow: bool = False) -> PSObject:
    """System.ServiceProcess.ServiceController; nested controllers (shallow) omit their own arrays,
    as remoting's serialization depth does."""
    props: dict[str, Any] = {
        "Name": svc.name,
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
    props["ServiceType"] = ServiceType.KernelDriver if svc.spec.driver else ServiceType.Win32ShareProcess
    props["StartType"] = ServiceStartMode[svc.start_type]
    props["Status"] = ServiceControllerStatus(int(svc.state))
    return _typed(
        [
            "System.ServiceProcess.ServiceController",
            "System.ComponentModel.Component",
            "System.MarshalByRefObject",
            "System.Object",
        ],
        "System.ServiceProcess.ServiceController",
        props,
    )


def process(proc: Process, session_id: int = 0) -> PSObject:
    """System.Diagnostics.Process with the properties Get-Process's default view shows."""
    start = datetime.datetime.fromtimestamp(proc.start_time)
    return _typed(
        [
            "System.Diagnostics.Process",
            "System.ComponentModel.Component",
            "System.MarshalByRefObject",
            "System.Object",
        ],
        f"System.Diagnostics.Process ({proc.name})",
        {
            "Name": proc.name,
            "Id": proc.pid,
            "ProcessName": proc.name,
            "Handles": 0,
            "CPU": 0.0,
            "WS": 0,
            "PM": 0,
            "NPM": 0,
            "VM": 0,
            "SI": session_id,
            "SessionId": session_id,
            "Path": None if proc.protected else proc.command_line.split(" -")[0].strip('"'),
            "StartTime": start,
            "HasExited": False,
        },
    )


_WIN32_STATE = {
    ServiceState.Stopped: "Stopped",
    ServiceState.StartPending: "Start Pending",
    ServiceState.StopPending: "Stop Pending",
    ServiceState.Running: "Running",
}
_START_MODE = {"Automatic": "Auto", "Manual": "Manual", "Disabled": "Disabled"}
_CIM = "Microsoft.Management.Infrastructure.CimInstance"


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
            "PSComputerName": None,
        },
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
        {"ProcessId": pid, "ReturnValue": return_value, "PSComputerName": None},
    )


def apppool_state(pool: AppPool) -> PSObject:
    """Get-WebAppPoolState: an object whose Value is the pool's state name."""
    return _typed(
        ["System.Management.Automation.PSCustomObject", "System.Object"],
        "",
        {"Name": pool.name, "Value": pool.state.name},
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
            "PSComputerName": None,
        },
    )
