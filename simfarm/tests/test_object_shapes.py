"""Which bag each property lands in, as an unmodified pypsrp client reads it.

Remoting puts an object's .NET (or CIM) properties in `<Props>` (pypsrp's `adapted_properties`) and its
ETS members — types.ps1xml aliases and script properties, note properties — in `<MS>`
(`extended_properties`). A client that reads `adapted_properties["Status"]` works on Windows, so it must
work here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from simfarm.config import SimConfig
from simfarm.farm import Farm

ADDRESS = "127.0.50.1"
InThread = Callable[..., Awaitable[Any]]
# Invoke-Command adds these on the client; a raw PSRP client never receives them.
CLIENT_SIDE = {"PSComputerName", "RunspaceId", "PSShowComputerName"}


def _run(farm: Farm, *commands: tuple[str, dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    desc = farm.describe()
    wsman = WSMan(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    with RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        for cmdlet, params in commands:
            ps.add_cmdlet(cmdlet)
            for name, value in params.items():
                ps.add_parameter(name, value)
            ps.add_statement()
        output = ps.invoke()
        return output, list(ps.streams.error)


async def test_service_controller_properties_are_adapted_and_its_aliases_extended(
    farm: Farm, in_thread: InThread
) -> None:
    (svc,), _ = await in_thread(_run, farm, ("Get-Service", {"Name": "W3SVC"}))
    adapted, extended = svc.adapted_properties, svc.extended_properties
    assert adapted["ServiceName"] == "W3SVC"
    assert str(adapted["Status"]) == "Running"
    assert adapted["DisplayName"] == "World Wide Web Publishing Service"
    assert {"CanStop", "MachineName", "ServiceType", "StartType"} <= set(adapted)
    assert sorted(d.adapted_properties["ServiceName"] for d in adapted["ServicesDependedOn"]) == [
        "HTTP",
        "WAS",
    ]
    assert [d.adapted_properties["ServiceName"] for d in adapted["DependentServices"]] == ["W3LOGSVC"]
    assert extended["Name"] == "W3SVC" and "Name" not in adapted
    assert sorted(d.adapted_properties["ServiceName"] for d in extended["RequiredServices"]) == [
        "HTTP",
        "WAS",
    ]
    assert not CLIENT_SIDE & (set(adapted) | set(extended))


async def test_process_properties_are_adapted_and_get_process_short_names_extended(
    farm: Farm, in_thread: InThread
) -> None:
    output, _ = await in_thread(_run, farm, ("Get-Process", {"Name": "w3wp"}))
    proc = output[0]
    adapted, extended = proc.adapted_properties, proc.extended_properties
    assert adapted["ProcessName"] == "w3wp" and isinstance(adapted["Id"], int)
    assert {"HandleCount", "WorkingSet64", "SessionId", "StartTime"} <= set(adapted)
    assert extended["Name"] == "w3wp" and extended["SI"] == adapted["SessionId"]
    assert {"Handles", "WS", "PM", "NPM", "VM", "Path", "CPU"} <= set(extended)
    assert not {"Name", "Handles", "WS"} & set(adapted)
    assert not CLIENT_SIDE & (set(adapted) | set(extended))


async def test_cim_instances_carry_cim_properties_adapted_and_their_computer_name_extended(
    farm: Farm, in_thread: InThread
) -> None:
    (service, *processes), _ = await in_thread(
        _run,
        farm,
        ("Get-CimInstance", {"ClassName": "Win32_Service", "Filter": "Name = 'W3SVC'"}),
        ("Get-CimInstance", {"ClassName": "Win32_Process"}),
    )
    assert service.adapted_properties["State"] == "Running"
    assert service.adapted_properties["Name"] == "W3SVC"
    assert (
        "PSComputerName" in service.extended_properties and "PSComputerName" not in service.adapted_properties
    )
    w3wp = [p for p in processes if p.adapted_properties["Name"] == "w3wp.exe"]
    assert w3wp and isinstance(w3wp[0].adapted_properties["ProcessId"], int)
    assert "PSComputerName" in w3wp[0].extended_properties

    (result,), _ = await in_thread(
        _run,
        farm,
        (
            "Invoke-CimMethod",
            {
                "ClassName": "Win32_Process",
                "MethodName": "Create",
                "Arguments": {"CommandLine": "cmd /c exit"},
            },
        ),
    )
    assert result.adapted_properties["ReturnValue"] == 0
    assert isinstance(result.adapted_properties["ProcessId"], int)


async def test_an_error_records_exception_properties_are_adapted(
    start_farm: Callable[..., Awaitable[Farm]], in_thread: InThread
) -> None:
    farm = await start_farm(
        SimConfig.model_validate(
            {"nodes": {"web-001": {"faults": [{"kind": "access_denied", "service": "W3LOGSVC"}]}}}
        )
    )
    _, (missing,) = await in_thread(_run, farm, ("Get-Service", {"Name": "NoSuchService"}))
    exc = missing.exception
    assert exc.adapted_properties["Message"] == "Cannot find any service with service name 'NoSuchService'."
    assert exc.adapted_properties["ServiceName"] == "NoSuchService"
    assert "ServiceName" not in exc.extended_properties

    _, (denied,) = await in_thread(_run, farm, ("Stop-Service", {"Name": "W3LOGSVC"}))
    win32 = denied.exception.adapted_properties["InnerException"].adapted_properties["InnerException"]
    assert win32.adapted_properties["NativeErrorCode"] == 5
    assert win32.adapted_properties["Message"] == "Access is denied."
    assert "NativeErrorCode" not in win32.extended_properties
