"""docs/windows-fidelity.md §2 and §3, iisreset the cmd.exe behaviour, as an unmodified pypsrp
client sees them.

Everything goes over real loopback sockets with NTLM and message encryption: ErrorRecords are
judged after pypsrp deserialized them, service states through Get-Service, and only the order of
events and the moments a node is down come from the farm itself (its event log and SimNode), because
a client cannot observe those without racing them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import requests
from psrpcore.types import ErrorCategory
from pypsrp.client import Client
from pypsrp.complex_objects import ErrorRecord
from pypsrp.exceptions import WinRMTransportError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from simfarm.config import SimConfig
from simfarm.events import read_events
from simfarm.farm import Farm
from simfarm.node import SimNode

ADDRESS = "127.0.50.1"
NODE = "web-001"
CMDLETS = "Microsoft.PowerShell.Commands."
CONTROLLER = "System.ServiceProcess.ServiceController"
FAST = {"stop": {"low": 0.01, "high": 0.03}, "start": {"low": 0.01, "high": 0.03}}

InThread = Callable[..., Awaitable[Any]]
StartFarm = Callable[..., Awaitable[Farm]]
Param = tuple[str, Any]


def _config(*faults: dict[str, Any], services: dict[str, Any] | None = None) -> SimConfig:
    return SimConfig.model_validate(
        {
            "timings": {"default": FAST, "services": services or {}},
            "nodes": {NODE: {"faults": list(faults)}},
        }
    )


def _wsman(farm: Farm) -> WSMan:
    desc = farm.describe()
    return WSMan(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")


def _client(farm: Farm) -> Client:
    desc = farm.describe()
    return Client(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")


def _invoke(farm: Farm, cmdlet: str, *params: Param) -> tuple[list[Any], list[ErrorRecord]]:
    """One cmdlet in a fresh runspace pool, the way a pypsrp user writes it."""
    with RunspacePool(_wsman(farm)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        for name, value in params:
            ps.add_parameter(name, value)
        output = ps.invoke()
        return output, list(ps.streams.error)


def _prop(obj: Any, name: str) -> Any:
    # Which of Props/MS a property lands in is the serializer's business, not the client's.
    if name in obj.adapted_properties:
        return obj.adapted_properties[name]
    return obj.extended_properties[name]


def _target(err: ErrorRecord) -> Any:
    # pypsrp sets the deserialized fields at run time; its annotations do not declare this one.
    return vars(err)["target_object"]


def _names(output: list[Any]) -> list[str]:
    return [_prop(o, "Name") for o in output]


def _states(farm: Farm, *names: str) -> dict[str, str]:
    output, errors = _invoke(farm, "Get-Service", ("Name", list(names)))
    assert errors == []
    return {_prop(o, "Name"): str(_prop(o, "Status")) for o in output}


def _only(errors: list[ErrorRecord]) -> ErrorRecord:
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def _assert_service_error(
    err: ErrorRecord,
    error_id: str,
    verb: str,
    category: ErrorCategory,
    message: str,
    *,
    target: tuple[str, str] = (CONTROLLER, "ServiceController"),
) -> None:
    """FullyQualifiedErrorId, category, target and texts as Service.cs reports them (§2)."""
    assert err.fq_error == f"{error_id},{CMDLETS}{verb}ServiceCommand"
    assert err.category == int(category)
    assert (err.target_name, err.target_type) == target
    assert err.activity == f"{verb}-Service"
    assert err.reason == "ServiceCommandException"
    assert err.message == (
        f"{category.name}: ({target[0]}:{target[1]}) [{verb}-Service], ServiceCommandException"
    )
    assert str(err) == message
    exception = err.exception
    assert exception is not None
    assert exception.types[0] == "Microsoft.PowerShell.Commands.ServiceCommandException"
    assert _prop(exception, "Message") == message


def _chain(err: ErrorRecord) -> tuple[Any, Any]:
    """The ServiceController exception and the Win32Exception beneath it."""
    controller = _prop(err.exception, "InnerException")
    assert controller.types[0] == "System.InvalidOperationException"
    win32 = _prop(controller, "InnerException")
    assert win32.types[0] == "System.ComponentModel.Win32Exception"
    return controller, win32


def _assert_controller_error(err: ErrorRecord, controller_message: str, code: int, text: str) -> None:
    controller, win32 = _chain(err)
    assert _prop(controller, "Message") == controller_message
    assert (_prop(win32, "NativeErrorCode"), _prop(win32, "Message")) == (code, text)


async def _events(farm: Farm, in_thread: InThread, kind: str) -> list[dict[str, Any]]:
    return [e for e in await in_thread(read_events, farm.events_path) if e["kind"] == kind]


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


# --- §2: the service cmdlets' errors --------------------------------------------------------------


async def test_no_service_found_for_given_name(farm: Farm, in_thread: InThread) -> None:
    output, errors = await in_thread(_invoke, farm, "Get-Service", ("Name", ["W3SVC", "NetTcpActivator"]))
    assert _names(output) == ["W3SVC"]
    err = _only(errors)
    _assert_service_error(
        err,
        "NoServiceFoundForGivenName",
        "Get",
        ErrorCategory.ObjectNotFound,
        "Cannot find any service with service name 'NetTcpActivator'.",
        target=("NetTcpActivator", "String"),
    )
    assert _target(err) == "NetTcpActivator"
    assert _prop(err.exception, "InnerException") is None

    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "NetTcpActivator"))
    assert _only(errors).fq_error == f"NoServiceFoundForGivenName,{CMDLETS}StopServiceCommand"


async def test_service_has_dependent_services_without_force(farm: Farm, in_thread: InThread) -> None:
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3SVC"))
    err = _only(errors)
    _assert_service_error(
        err,
        "ServiceHasDependentServices",
        "Stop",
        ErrorCategory.InvalidOperation,
        "Cannot stop service 'World Wide Web Publishing Service (W3SVC)' because it has dependent "
        "services. It can only be stopped if the Force flag is set.",
    )
    assert _prop(_target(err), "Name") == "W3SVC"
    assert _prop(err.exception, "InnerException") is None
    assert await in_thread(_states, farm, "W3SVC", "W3LOGSVC") == {"W3SVC": "Running", "W3LOGSVC": "Running"}
    assert not [e for e in await _events(farm, in_thread, "service_control") if e["source"] == "powershell"]


async def test_could_not_stop_service_when_the_control_is_refused_1061(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    farm = await start_farm(_config({"kind": "control_busy", "service": "W3LOGSVC", "count": 1}))
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    err = _only(errors)
    _assert_service_error(
        err,
        "CouldNotStopService",
        "Stop",
        ErrorCategory.CloseError,
        "Service 'W3C Logging Service (W3LOGSVC)' cannot be stopped due to the following error: "
        "Cannot stop 'W3LOGSVC' service on computer '.'.",
    )
    _assert_controller_error(
        err,
        "Cannot stop 'W3LOGSVC' service on computer '.'.",
        1061,
        "The service cannot accept control messages at this time.",
    )
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Running"}

    # The fault refuses one control only: the retry an operator would make succeeds.
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    assert errors == []
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Stopped"}


async def test_could_not_stop_service_when_access_is_denied_5(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    farm = await start_farm(_config({"kind": "access_denied", "service": "W3LOGSVC"}))
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    err = _only(errors)
    _assert_service_error(
        err,
        "CouldNotStopService",
        "Stop",
        ErrorCategory.CloseError,
        "Service 'W3C Logging Service (W3LOGSVC)' cannot be stopped due to the following error: "
        "Cannot open 'W3LOGSVC' service on computer '.'.",
    )
    _assert_controller_error(err, "Cannot open 'W3LOGSVC' service on computer '.'.", 5, "Access is denied.")
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Running"}


async def test_could_not_start_service_when_disabled_1058(start_farm: StartFarm, in_thread: InThread) -> None:
    farm = await start_farm(_config({"kind": "disabled", "service": "W3LOGSVC"}))
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    assert errors == []
    _output, errors = await in_thread(_invoke, farm, "Start-Service", ("Name", "W3LOGSVC"))
    err = _only(errors)
    _assert_service_error(
        err,
        "CouldNotStartService",
        "Start",
        ErrorCategory.OpenError,
        "Service 'W3C Logging Service (W3LOGSVC)' cannot be started due to the following error: "
        "Cannot start service 'W3LOGSVC' on computer '.'.",
    )
    _assert_controller_error(
        err,
        "Cannot start service 'W3LOGSVC' on computer '.'.",
        1058,
        "The service cannot be started, either because it is disabled or because it has no enabled "
        "devices associated with it.",
    )
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Stopped"}


async def test_could_not_start_service_when_the_service_never_starts_1053(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    # The SCM answers StartService itself with 1053 here, so the cmdlet never reaches its wait loop.
    farm = await start_farm(_config({"kind": "start_failure", "service": "W3LOGSVC"}))
    await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    _output, errors = await in_thread(_invoke, farm, "Start-Service", ("Name", "W3LOGSVC"))
    err = _only(errors)
    assert err.fq_error == f"CouldNotStartService,{CMDLETS}StartServiceCommand"
    _assert_controller_error(
        err,
        "Cannot start service 'W3LOGSVC' on computer '.'.",
        1053,
        "The service did not respond to the start or control request in a timely fashion.",
    )
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Stopped"}
    starts = [e for e in await _events(farm, in_thread, "service_state") if e["service"] == "W3LOGSVC"]
    assert [e["state"] for e in starts][-2:] == ["StartPending", "Stopped"]


async def test_start_service_failed_when_the_host_dies_while_start_pending(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    # A start long enough to kill the hosting svchost while the cmdlet waits for Running.
    farm = await start_farm(_config(services={"W3SVC": {**FAST, "start": {"low": 1.0, "high": 1.0}}}))
    node = farm.node(NODE)
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3SVC"), ("Force", True))
    assert errors == []
    hosts, _errors = await in_thread(
        _invoke, farm, "Get-CimInstance", ("ClassName", "Win32_Service"), ("Filter", "Name = 'WAS'")
    )
    iissvcs = _prop(hosts[0], "ProcessId")
    assert iissvcs > 0

    starting = asyncio.ensure_future(in_thread(_invoke, farm, "Start-Service", ("Name", "W3SVC")))
    await _until(lambda: node.scm.state("W3SVC").name == "StartPending")
    _output, errors = await in_thread(_invoke, farm, "Stop-Process", ("Id", iissvcs), ("Force", True))
    assert errors == []
    _output, errors = await asyncio.wait_for(starting, 30)

    _assert_service_error(
        _only(errors),
        "StartServiceFailed",
        "Start",
        ErrorCategory.OpenError,
        "Failed to start service 'World Wide Web Publishing Service (W3SVC)'.",
    )
    assert await in_thread(_states, farm, "W3SVC", "WAS") == {"W3SVC": "Stopped", "WAS": "Stopped"}
    terminated = {e["service"] for e in await _events(farm, in_thread, "service_terminated")}
    assert terminated == {"W3SVC", "WAS"}


async def test_stop_service_failed_when_the_service_falls_back_to_running(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    farm = await start_farm(_config({"kind": "stop_failure", "service": "W3LOGSVC"}))
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "W3LOGSVC"))
    _assert_service_error(
        _only(errors),
        "StopServiceFailed",
        "Stop",
        ErrorCategory.OpenError,
        "Service 'W3C Logging Service (W3LOGSVC)' stop failed.",
    )
    assert await in_thread(_states, farm, "W3LOGSVC") == {"W3LOGSVC": "Running"}
    states = [
        e["state"] for e in await _events(farm, in_thread, "service_state") if e["service"] == "W3LOGSVC"
    ]
    assert states == ["StopPending", "Running"]


async def test_set_service_status_stopped_refuses_services_with_dependents(
    farm: Farm, in_thread: InThread
) -> None:
    _output, errors = await in_thread(_invoke, farm, "Set-Service", ("Name", "W3SVC"), ("Status", "Stopped"))
    _assert_service_error(
        _only(errors),
        "ServiceHasDependentServicesNoForce",
        "Set",
        ErrorCategory.InvalidOperation,
        "Cannot stop service 'World Wide Web Publishing Service (W3SVC)' because it has dependent services.",
    )
    # 5.1 also refuses a service that depends on others (the last row of the table).
    _output, errors = await in_thread(
        _invoke, farm, "Set-Service", ("Name", "W3LOGSVC"), ("Status", "Stopped")
    )
    _assert_service_error(
        _only(errors),
        "ServiceIsDependentOnNoForce",
        "Set",
        ErrorCategory.InvalidOperation,
        "Cannot stop service 'W3C Logging Service (W3LOGSVC)' because it is dependent on other services.",
    )
    assert await in_thread(_states, farm, "W3SVC", "W3LOGSVC") == {"W3SVC": "Running", "W3LOGSVC": "Running"}


# --- §3: the IIS service graph --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "switch", "expected"),
    [
        ("W3SVC", "RequiredServices", {"WAS", "HTTP"}),
        ("W3SVC", "DependentServices", {"W3LOGSVC"}),
        ("WinRM", "RequiredServices", {"RPCSS", "HTTP"}),
    ],
)
async def test_dependency_graph_as_get_service_reports_it(
    farm: Farm, in_thread: InThread, service: str, switch: str, expected: set[str]
) -> None:
    output, errors = await in_thread(_invoke, farm, "Get-Service", ("Name", service), (switch, True))
    assert errors == []
    assert set(_names(output)) == expected
    assert len(output) == len(expected)


async def test_force_stop_of_w3svc_stops_w3logsvc_first(farm: Farm, in_thread: InThread) -> None:
    output, errors = await in_thread(
        _invoke, farm, "Stop-Service", ("Name", "W3SVC"), ("Force", True), ("PassThru", True)
    )
    assert errors == []
    assert _names(output) == ["W3LOGSVC", "W3SVC"]
    controls = [e["service"] for e in await _events(farm, in_thread, "service_control")]
    assert controls == ["W3LOGSVC", "W3SVC"]
    stopped = [
        e["service"] for e in await _events(farm, in_thread, "service_state") if e["state"] == "Stopped"
    ]
    assert stopped == ["W3LOGSVC", "W3SVC"]
    assert await in_thread(_states, farm, "W3SVC", "W3LOGSVC", "WAS") == {
        "W3SVC": "Stopped",
        "W3LOGSVC": "Stopped",
        "WAS": "Running",
    }


async def test_stop_service_was_without_force_fails_while_dependents_run(
    farm: Farm, in_thread: InThread
) -> None:
    _output, errors = await in_thread(_invoke, farm, "Stop-Service", ("Name", "WAS"))
    _assert_service_error(
        _only(errors),
        "ServiceHasDependentServices",
        "Stop",
        ErrorCategory.InvalidOperation,
        "Cannot stop service 'Windows Process Activation Service (WAS)' because it has dependent "
        "services. It can only be stopped if the Force flag is set.",
    )
    assert await in_thread(_states, farm, "WAS", "W3SVC", "W3LOGSVC") == {
        "WAS": "Running",
        "W3SVC": "Running",
        "W3LOGSVC": "Running",
    }


# --- §3: restarting HTTP.sys from a detached process ----------------------------------------------

RESTART_HTTP = "cmd.exe /c net stop http /y & net start w3svc & net start winrm"


def _create_process(farm: Farm, command_line: str) -> tuple[list[Any], list[ErrorRecord], RunspacePool]:
    """Invoke-CimMethod Win32_Process Create; the pool is returned open, as the session it ran in."""
    pool = RunspacePool(_wsman(farm))
    pool.open()
    ps = PowerShell(pool)
    ps.add_cmdlet("Invoke-CimMethod").add_parameter("ClassName", "Win32_Process").add_parameter(
        "MethodName", "Create"
    ).add_parameter("Arguments", {"CommandLine": command_line})
    output = ps.invoke()
    return output, list(ps.streams.error), pool


def _open_pool(farm: Farm) -> None:
    with RunspacePool(_wsman(farm)):
        pass


async def test_detached_http_restart_drops_winrm_then_it_returns(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    # Starts slow enough that the outage spans several round trips of a new client.
    slow_start = {**FAST, "start": {"low": 0.3, "high": 0.3}}
    farm = await start_farm(_config(services={s: slow_start for s in ("HTTP", "W3SVC", "WinRM")}))
    node: SimNode = farm.node(NODE)
    listener = farm.members[NODE].winrm

    output, errors, old_pool = await in_thread(_create_process, farm, RESTART_HTTP)
    assert errors == []
    assert _prop(output[0], "ReturnValue") == 0
    pid = _prop(output[0], "ProcessId")
    created = await _events(farm, in_thread, "process_created")
    assert [(e["pid"], e["command_line"]) for e in created] == [(pid, RESTART_HTTP)]

    # (a) while WinRM is down a new connection is refused.
    await _until(lambda: not listener.listening)
    with pytest.raises(requests.ConnectionError, match="Connection refused"):
        await in_thread(_open_pool, farm)
    refused_at = time.time()

    # (b) the detached process finishes the job and WinRM comes back with HTTP and W3SVC.
    await _until(lambda: listener.listening)
    assert await in_thread(_states, farm, "HTTP", "W3SVC", "WinRM") == {
        "HTTP": "Running",
        "W3SVC": "Running",
        "WinRM": "Running",
    }
    winrm = [e for e in await _events(farm, in_thread, "service_state") if e["service"] == "WinRM"]
    assert [e["state"] for e in winrm] == ["StopPending", "Stopped", "StartPending", "Running"]
    assert winrm[-1]["ts"] > refused_at
    await _until(lambda: pid not in {p.pid for p in node.iis.processes.all()})
    exited = [e for e in await _events(farm, in_thread, "process_exited") if e.get("pid") == pid]
    assert [e["exit_code"] for e in exited] == [0]

    # The session the command ran in died with WinRM: its logon went with the dropped connection, so
    # its next message, still sealed with the old keys, does not decrypt after the client re-logs on.
    with pytest.raises(WinRMTransportError) as transport:
        await in_thread(old_pool.close)
    assert transport.value.code == 400


# --- iisreset through WinRS -----------------------------------------------------------------------


def _site_url(farm: Farm, path: str) -> str:
    node = next(n for n in farm.describe()["nodes"] if n["name"] == NODE)
    return f"http://{node['address']}:{node['site_port']}{path}"


def _fetch(url: str) -> tuple[int, str]:
    # requests does not resend a GET whose connection dropped (aiohttp would, and get a 503).
    response = requests.get(url, timeout=60)
    return response.status_code, response.text


def _in_flight(node: SimNode) -> int:
    worker = node.iis.site_pool.worker
    return 0 if worker is None else worker.in_flight


async def test_iisreset_kills_the_worker_after_its_timeout(farm: Farm, in_thread: InThread) -> None:
    node = farm.node(NODE)
    request = asyncio.ensure_future(in_thread(_fetch, _site_url(farm, "/slow?seconds=30")))
    await _until(lambda: _in_flight(node) == 1)
    began = time.monotonic()
    stdout, stderr, rc = await in_thread(_client(farm).execute_cmd, "iisreset /timeout:1")
    took = time.monotonic() - began
    with pytest.raises(requests.ConnectionError):
        await asyncio.wait_for(request, 10)

    assert (stdout, stderr, rc) == (
        "Attempting stop...\r\nInternet services successfully stopped\r\n"
        "Attempting start...\r\nInternet services successfully restarted\r\n",
        "",
        0,
    )
    # It waited for its timeout, not for the 30 s request.
    assert 1.0 <= took < 20
    killed = await _events(farm, in_thread, "process_killed")
    assert {(e["process"], e["source"]) for e in killed} >= {("w3wp", "iisreset"), ("svchost", "iisreset")}
    assert [e["count"] for e in await _events(farm, in_thread, "requests_aborted")] == [1]
    assert await in_thread(_states, farm, "W3SVC", "WAS", "W3LOGSVC") == {
        "W3SVC": "Running",
        "WAS": "Running",
        "W3LOGSVC": "Running",
    }


async def test_iisreset_noforce_lets_the_request_finish_and_reports_failure(
    farm: Farm, in_thread: InThread
) -> None:
    node = farm.node(NODE)
    request = asyncio.ensure_future(in_thread(_fetch, _site_url(farm, "/slow?seconds=2.5")))
    await _until(lambda: _in_flight(node) == 1)
    stdout, stderr, rc = await in_thread(_client(farm).execute_cmd, "iisreset /noforce /timeout:1")
    assert not request.done()
    assert await asyncio.wait_for(request, 30) == (200, "done")

    assert stdout == "Attempting stop...\r\n"
    assert stderr == (
        "Restart attempt failed.\r\n"
        "The IIS Admin Service or the World Wide Web Publishing Service, or a service dependent on them "
        "failed to stop.\r\n"
    )
    assert rc == 1
    assert await _events(farm, in_thread, "process_killed") == []
    # Left stopping, W3SVC reaches Stopped once its worker drained; iisreset never got to WAS.
    await _until(lambda: node.scm.state("W3SVC").name == "Stopped")
    assert await in_thread(_states, farm, "W3SVC", "WAS") == {"W3SVC": "Stopped", "WAS": "Running"}


# --- cmd.exe through WinRS ------------------------------------------------------------------------


async def test_net_stop_w3svc_texts_and_exit_codes(farm: Farm, in_thread: InThread) -> None:
    client = _client(farm)

    # A running dependent makes net ask; WinRS gives it no console input, so nothing stops.
    stdout, stderr, rc = await in_thread(client.execute_cmd, "net stop W3SVC")
    assert stdout == (
        "The following services are dependent on the World Wide Web Publishing Service service.\r\n"
        "Stopping the World Wide Web Publishing Service service will also stop these services.\r\n\r\n"
        "   W3C Logging Service\r\n\r\n"
        "Do you want to continue this operation? (Y/N) [N]: \r\n"
    )
    assert (stderr, rc) == ("No valid response was provided.\r\n", 2)
    assert await in_thread(_states, farm, "W3SVC") == {"W3SVC": "Running"}

    assert (await in_thread(client.execute_cmd, "net stop W3LOGSVC"))[2] == 0
    assert await in_thread(client.execute_cmd, "net stop W3SVC") == (
        "The World Wide Web Publishing Service service is stopping.\r\n"
        "The World Wide Web Publishing Service service was stopped successfully.\r\n\r\n",
        "",
        0,
    )
    assert await in_thread(client.execute_cmd, "net stop W3SVC") == (
        "",
        "The World Wide Web Publishing Service service is not started.\r\n\r\n"
        "More help is available by typing NET HELPMSG 3521.\r\n\r\n",
        2,
    )
    assert await in_thread(_states, farm, "W3SVC") == {"W3SVC": "Stopped"}


async def test_unknown_command_is_not_recognized(farm: Farm, in_thread: InThread) -> None:
    assert await in_thread(_client(farm).execute_cmd, "appcmd-typo list apppool") == (
        "",
        "'appcmd-typo' is not recognized as an internal or external command,\r\n"
        "operable program or batch file.\r\n",
        1,
    )


# --- script text through Client.execute_ps --------------------------------------------------------


async def test_execute_ps_restart_service_force(farm: Farm, in_thread: InThread) -> None:
    output, streams, had_errors = await in_thread(_client(farm).execute_ps, "Restart-Service W3SVC -Force")
    assert not had_errors
    assert streams.error == []
    assert output.strip() == ""
    changes = [
        (e["service"], e["state"])
        for e in await _events(farm, in_thread, "service_state")
        if e["state"] in ("Stopped", "Running")
    ]
    # Dependents first on the way down; the dependents that ran come back after W3SVC.
    assert changes == [
        ("W3LOGSVC", "Stopped"),
        ("W3SVC", "Stopped"),
        ("W3SVC", "Running"),
        ("W3LOGSVC", "Running"),
    ]
    assert await in_thread(_states, farm, "W3SVC", "W3LOGSVC") == {"W3SVC": "Running", "W3LOGSVC": "Running"}


async def test_a_waiting_pipeline_is_answered_by_its_end_not_by_its_start(
    start_farm: StartFarm, in_thread: InThread
) -> None:
    """Windows' server sends a pipeline's state only when it ends: a Receive sent while Stop-Service
    waits is answered when the pipeline completes, so one Receive carries the whole result. A server
    that also announced Running would answer the first Receive at once, with nothing in it."""
    slow = {"stop": {"low": 0.5, "high": 0.5}, "start": {"low": 0.01, "high": 0.01}}
    farm = await start_farm(config=_config(services={"W3LOGSVC": slow}))

    def stop() -> list[ErrorRecord]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Stop-Service").add_parameter("Name", "W3LOGSVC")
            ps.invoke()
            return list(ps.streams.error)

    assert await in_thread(stop) == []
    actions = [
        e["action"] for e in await in_thread(read_events, farm.events_path) if e["kind"] == "winrm_request"
    ]
    assert actions == ["Create", "Receive", "Command", "Receive", "Delete"]
