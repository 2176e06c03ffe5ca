"""The simulated cmdlets: ErrorRecords per docs/windows-fidelity.md §2, object shapes, parsing, JEA."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from psrpcore.types import ErrorCategory, ErrorRecord

from simfarm.config import Endpoint
from simfarm.powershell import CommandSpec, PipelineFailed, run_pipeline, services
from simfarm.scm import ServiceState
from tests.model_fixtures import Sink, booted, config, events, run, script, wait_until

SVC = "Microsoft.PowerShell.Commands."


def only_error(errors: list[ErrorRecord]) -> ErrorRecord:
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def assert_record(rec: ErrorRecord, fqid: str, category: ErrorCategory, message: str) -> None:
    assert rec.FullyQualifiedErrorId == fqid
    assert rec.CategoryInfo.Category == category
    assert str(rec) == message


async def test_get_service_object_shape() -> None:
    async with booted(config()) as node:
        out = (await run(node, "Get-Service", ("Name", "w3svc"))).output
        svc = out[0]
        assert svc.PSTypeNames[0] == "System.ServiceProcess.ServiceController"
        assert (svc.Name, svc.ServiceName, svc.DisplayName) == (
            "W3SVC",
            "W3SVC",
            "World Wide Web Publishing Service",
        )
        assert svc.Status.PSTypeNames[0] == "System.ServiceProcess.ServiceControllerStatus"
        assert int(svc.Status) == 4 and svc.Status.name == "Running"
        assert {s.Name for s in svc.ServicesDependedOn} == {"WAS", "HTTP"}
        assert [s.Name for s in svc.DependentServices] == ["W3LOGSVC"]
        assert svc.CanStop is True and svc.StartType.name == "Automatic"


async def test_get_service_wildcards_and_dependency_switches() -> None:
    async with booted(config()) as node:
        names = [o.Name for o in (await run(node, "Get-Service", ("Name", ["W*"]))).output]
        assert names == ["W3LOGSVC", "W3SVC", "WAS", "WinRM"]
        required = await run(node, "Get-Service", ("Name", "WinRM"), ("RequiredServices", True))
        assert {o.Name for o in required.output} == {"RPCSS", "HTTP"}
        dependents = await run(node, "Get-Service", ("Name", "W3SVC"), ("DependentServices", True))
        assert [o.Name for o in dependents.output] == ["W3LOGSVC"]


async def test_not_found_is_no_service_found_for_given_name() -> None:
    async with booted(config()) as node:
        sink = await run(node, "Get-Service", ("Name", ["W3SVC", "NetTcpActivator"]))
        assert [o.Name for o in sink.output] == ["W3SVC"]
        rec = only_error(sink.errors)
        assert_record(
            rec,
            f"NoServiceFoundForGivenName,{SVC}GetServiceCommand",
            ErrorCategory.ObjectNotFound,
            "Cannot find any service with service name 'NetTcpActivator'.",
        )
        assert rec.TargetObject == "NetTcpActivator"
        assert rec.Exception.PSTypeNames[0] == "Microsoft.PowerShell.Commands.ServiceCommandException"


async def test_running_dependents_without_force_is_service_has_dependent_services() -> None:
    async with booted(config()) as node:
        sink = await run(node, "Stop-Service", ("Name", "W3SVC"))
        assert_record(
            only_error(sink.errors),
            f"ServiceHasDependentServices,{SVC}StopServiceCommand",
            ErrorCategory.InvalidOperation,
            "Cannot stop service 'World Wide Web Publishing Service (W3SVC)' because it has dependent "
            "services. It can only be stopped if the Force flag is set.",
        )
        assert node.scm.state("W3SVC") == ServiceState.Running


async def test_stopped_dependents_do_not_block_and_stopping_a_stopped_service_is_silent() -> None:
    async with booted(config()) as node:
        assert not (await run(node, "Stop-Service", ("Name", "W3LOGSVC"))).errors
        assert not (await run(node, "Stop-Service", ("Name", "W3SVC"))).errors
        assert node.scm.state("W3SVC") == ServiceState.Stopped
        assert not (await run(node, "Stop-Service", ("Name", "W3SVC"))).errors


async def test_force_stops_dependents_first_and_passthru_returns_both(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        sink = await run(node, "Stop-Service", ("Name", "W3SVC"), ("Force", True), ("PassThru", True))
        assert [(o.Name, o.Status.name) for o in sink.output] == [
            ("W3LOGSVC", "Stopped"),
            ("W3SVC", "Stopped"),
        ]
    stopped = [e["service"] for e in events(log, "service_state") if e["state"] == "Stopped"]
    assert stopped == ["W3LOGSVC", "W3SVC"]


async def test_control_rejected_is_could_not_stop_service_with_the_controller_message() -> None:
    async with booted(config([{"kind": "control_busy", "service": "W3LOGSVC", "count": 1}])) as node:
        sink = await run(node, "Stop-Service", ("Name", "W3LOGSVC"))
        rec = only_error(sink.errors)
        assert_record(
            rec,
            f"CouldNotStopService,{SVC}StopServiceCommand",
            ErrorCategory.CloseError,
            "Service 'W3C Logging Service (W3LOGSVC)' cannot be stopped due to the following error: "
            "Cannot stop 'W3LOGSVC' service on computer '.'.",
        )
        inner = rec.Exception.InnerException
        assert inner.PSTypeNames[0] == "System.InvalidOperationException"
        assert inner.InnerException.NativeErrorCode == 1061
        assert inner.InnerException.Message == "The service cannot accept control messages at this time."


async def test_access_denied_is_could_not_stop_service_cannot_open() -> None:
    async with booted(config([{"kind": "access_denied", "service": "W3LOGSVC"}])) as node:
        rec = only_error((await run(node, "Stop-Service", ("Name", "W3LOGSVC"))).errors)
        assert rec.FullyQualifiedErrorId == f"CouldNotStopService,{SVC}StopServiceCommand"
        assert str(rec).endswith("Cannot open 'W3LOGSVC' service on computer '.'.")
        assert rec.Exception.InnerException.InnerException.Message == "Access is denied."


async def test_start_rejected_is_could_not_start_service() -> None:
    async with booted(config([{"kind": "disabled", "service": "W3LOGSVC"}])) as node:
        await run(node, "Stop-Service", ("Name", "W3LOGSVC"))
        rec = only_error((await run(node, "Start-Service", ("Name", "W3LOGSVC"))).errors)
        assert_record(
            rec,
            f"CouldNotStartService,{SVC}StartServiceCommand",
            ErrorCategory.OpenError,
            "Service 'W3C Logging Service (W3LOGSVC)' cannot be started due to the following error: "
            "Cannot start service 'W3LOGSVC' on computer '.'.",
        )
        assert rec.Exception.InnerException.InnerException.NativeErrorCode == 1058


async def test_bad_state_after_pending_is_stop_service_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "WAIT_STEP_S", 0.05)
    async with booted(config([{"kind": "hang_stop", "service": "W3LOGSVC"}])) as node:
        task = asyncio.ensure_future(run(node, "Stop-Service", ("Name", "W3LOGSVC")))
        await wait_until(lambda: node.scm.state("W3LOGSVC") == ServiceState.StopPending)
        await asyncio.sleep(0.1)
        # A service that falls back to Running during its stop (no fault models it): set what the SCM reports.
        node.scm.get("W3LOGSVC").state = ServiceState.Running
        sink = await asyncio.wait_for(task, 5)
        assert_record(
            only_error(sink.errors),
            f"StopServiceFailed,{SVC}StopServiceCommand",
            ErrorCategory.OpenError,
            "Service 'W3C Logging Service (W3LOGSVC)' stop failed.",
        )


async def test_start_failure_fault_reports_could_not_start_with_1053() -> None:
    async with booted(config([{"kind": "start_failure", "service": "W3LOGSVC"}])) as node:
        await run(node, "Stop-Service", ("Name", "W3LOGSVC"))
        rec = only_error((await run(node, "Start-Service", ("Name", "W3LOGSVC"))).errors)
        assert rec.FullyQualifiedErrorId == f"CouldNotStartService,{SVC}StartServiceCommand"
        assert rec.Exception.InnerException.InnerException.NativeErrorCode == 1053
        assert node.scm.state("W3LOGSVC") == ServiceState.Stopped


async def test_blocking_stop_warns_every_slice_and_nowait_returns_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services, "WAIT_STEP_S", 0.05)
    async with booted(config([{"kind": "hang_stop", "service": "W3LOGSVC"}])) as node:
        task = asyncio.ensure_future(run(node, "Stop-Service", ("Name", "W3LOGSVC")))
        await asyncio.sleep(0.3)
        assert not task.done()  # no overall timeout
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert node.scm.state("W3LOGSVC") == ServiceState.StopPending
    async with booted(config([{"kind": "hang_stop", "service": "W3LOGSVC"}])) as node:
        sink = await run(node, "Stop-Service", ("Name", "W3LOGSVC"), ("NoWait", True), ("PassThru", True))
        assert [o.Status.name for o in sink.output] == ["StopPending"]
        assert sink.warnings == []


async def test_waiting_warning_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "WAIT_STEP_S", 0.02)
    slow = {"default": {"stop": {"low": 0.15, "high": 0.15}, "start": {"low": 0.01, "high": 0.01}}}
    async with booted(config(timings=slow)) as node:
        sink = await run(node, "Stop-Service", ("Name", "W3LOGSVC"))
        assert sink.warnings
        assert set(sink.warnings) == {"Waiting for service 'W3C Logging Service (W3LOGSVC)' to stop..."}


async def test_set_service_status_stopped_refuses_dependents_and_dependencies_as_51() -> None:
    async with booted(config()) as node:
        rec = only_error((await run(node, "Set-Service", ("Name", "W3SVC"), ("Status", "Stopped"))).errors)
        assert_record(
            rec,
            f"ServiceHasDependentServicesNoForce,{SVC}SetServiceCommand",
            ErrorCategory.InvalidOperation,
            "Cannot stop service 'World Wide Web Publishing Service (W3SVC)' because it has dependent "
            "services.",
        )
        rec = only_error((await run(node, "Set-Service", ("Name", "W3LOGSVC"), ("Status", "Stopped"))).errors)
        assert_record(
            rec,
            f"ServiceIsDependentOnNoForce,{SVC}SetServiceCommand",
            ErrorCategory.InvalidOperation,
            "Cannot stop service 'W3C Logging Service (W3LOGSVC)' because it is dependent on other services.",
        )
        assert node.scm.state("W3SVC") == ServiceState.Running


async def test_set_service_startup_type_and_missing_service() -> None:
    async with booted(config()) as node:
        await run(node, "Set-Service", ("Name", "W3SVC"), ("StartupType", "disabled"))
        assert node.scm.get("W3SVC").start_type == "Disabled"
        rec = only_error((await run(node, "Set-Service", ("Name", "Nope"), ("Status", "Running"))).errors)
        assert rec.FullyQualifiedErrorId == f"InvalidOperationException,{SVC}SetServiceCommand"
        assert rec.CategoryInfo.Category == ErrorCategory.ObjectNotFound


async def test_restart_service_starts_the_target_and_the_dependents_that_ran() -> None:
    async with booted(config()) as node:
        sink = await run(node, "Restart-Service", ("Name", "W3SVC"), ("Force", True), ("PassThru", True))
        assert [o.Name for o in sink.output] == ["W3LOGSVC", "W3SVC"]
        assert node.scm.state("W3SVC") == ServiceState.Running
        assert node.scm.state("W3LOGSVC") == ServiceState.Running


async def test_restart_service_has_no_nowait() -> None:
    async with booted(config()) as node:
        with pytest.raises(PipelineFailed) as failed:
            await run(node, "Restart-Service", ("Name", "W3SVC"), ("NoWait", True))
        assert_record(
            failed.value.record,
            f"NamedParameterNotFound,{SVC}RestartServiceCommand",
            ErrorCategory.InvalidArgument,
            "A parameter cannot be found that matches parameter name 'NoWait'.",
        )


async def test_parameter_prefixes_and_case() -> None:
    async with booted(config()) as node:
        sink = await run(node, "stop-service", ("na", "W3LOGSVC"), ("passt", True))
        assert [o.Name for o in sink.output] == ["W3LOGSVC"]


async def test_error_action_stop_makes_the_error_terminating() -> None:
    async with booted(config()) as node:
        with pytest.raises(PipelineFailed) as failed:
            await run(node, "Get-Service", ("Name", "Nope"), ("ErrorAction", "Stop"))
        assert failed.value.record.FullyQualifiedErrorId.startswith("NoServiceFoundForGivenName,")


async def test_unknown_command_is_command_not_found() -> None:
    async with booted(config()) as node:
        with pytest.raises(PipelineFailed) as failed:
            await run(node, "Get-Nothing")
        rec = failed.value.record
        assert_record(
            rec,
            "CommandNotFoundException",
            ErrorCategory.ObjectNotFound,
            "The term 'Get-Nothing' is not recognized as the name of a cmdlet, function, script file, or "
            "operable program. Check the spelling of the name, or if a path was included, verify that the "
            "path is correct and try again.",
        )
        assert rec.TargetObject == "Get-Nothing"


async def test_script_statements_pipelines_and_out_string() -> None:
    async with booted(config()) as node:
        sink = await script(
            node, "Get-Service -Name W3SVC | Out-String\nGet-WebAppPoolState DefaultAppPool; Frob"
        )
        text, state = sink.output
        assert "Running  W3SVC              World Wide Web Publishing Service" in text
        assert state.Value == "Started"
        assert only_error(sink.errors).FullyQualifiedErrorId == "CommandNotFoundException"


async def test_script_pipeline_input_and_hashtable_arguments() -> None:
    async with booted(config()) as node:
        sink = await script(node, "Get-Service W3LOGSVC | Stop-Service -PassThru")
        assert [(o.Name, o.Status.name) for o in sink.output] == [("W3LOGSVC", "Stopped")]
        created = await script(
            node,
            "Invoke-CimMethod -ClassName Win32_Process -MethodName Create "
            "-Arguments @{CommandLine='hostname'}",
        )
        result = created.output[0]
        assert result.ReturnValue == 0 and result.ProcessId % 4 == 0


async def test_unsupported_syntax_is_a_parse_error() -> None:
    async with booted(config()) as node:
        with pytest.raises(PipelineFailed) as failed:
            await script(node, "$s = Get-Service W3SVC")
        assert failed.value.record.CategoryInfo.Category == ErrorCategory.ParserError


async def test_jea_endpoint_hides_cmdlets_and_refuses_scripts() -> None:
    jea = Endpoint(name="IISOps", visible_cmdlets=["Get-Service", "Stop-Service"])
    async with booted(config()) as node:
        assert (await run(node, "Get-Service", ("Name", "W3SVC"), endpoint=jea)).output
        with pytest.raises(PipelineFailed) as hidden:
            await run(node, "Get-Process", endpoint=jea)
        assert hidden.value.record.FullyQualifiedErrorId == "CommandNotFoundException"
        with pytest.raises(PipelineFailed) as scripted:
            await script(node, "Get-Service", endpoint=jea)
        assert_record(
            scripted.value.record,
            "ScriptsNotAllowed",
            ErrorCategory.ParserError,
            "The syntax is not supported by this runspace. This might be because it is in no-language mode.",
        )


async def test_cim_win32_service_filter() -> None:
    async with booted(config()) as node:
        sink = await run(
            node,
            "Get-CimInstance",
            ("ClassName", "Win32_Service"),
            ("Filter", "Name='W3SVC' OR Name = 'WAS'"),
        )
        assert sorted(o.Name for o in sink.output) == ["W3SVC", "WAS"]
        assert (
            sink.output[0].PSTypeNames[0]
            == "Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_Service"
        )
        assert {o.State for o in sink.output} == {"Running"}
        bad = await run(node, "Get-CimInstance", ("ClassName", "Win32_Nope"))
        assert only_error(bad.errors).FullyQualifiedErrorId.startswith("HRESULT 0x80041010,")


async def test_invoke_cim_method_runs_detached_beyond_the_caller(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        command = "cmd /c net stop http /y && net start w3svc"
        sink = await run(
            node,
            "Invoke-CimMethod",
            ("ClassName", "Win32_Process"),
            ("MethodName", "Create"),
            ("Arguments", {"CommandLine": command}),
        )
        assert sink.output[0].ReturnValue == 0
        await wait_until(lambda: any(e["kind"] == "process_exited" and "exit_code" in e for e in _read(log)))
        assert node.scm.state("W3SVC") == ServiceState.Running
        assert node.scm.state("HTTP") == ServiceState.Running
        assert node.scm.state("WinRM") == ServiceState.Stopped


def _read(log: Path) -> list[dict[str, Any]]:
    from simfarm.events import read_events

    return read_events(log)


async def test_processes_and_killing_a_worker(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        workers = (await run(node, "Get-Process", ("Name", "w3wp"))).output
        assert len(workers) == 1 and workers[0].PSTypeNames[0] == "System.Diagnostics.Process"
        await run(node, "Stop-Process", ("Id", workers[0].Id), ("Force", True))
        assert not (await run(node, "Get-Process", ("Name", "w3wp*"))).output
        missing = await run(node, "Get-Process", ("Name", "w3wp"))
        assert (
            only_error(missing.errors).FullyQualifiedErrorId
            == f"NoProcessFoundForGivenName,{SVC}GetProcessCommand"
        )
        system = await run(node, "Stop-Process", ("Id", 4))
        assert (
            only_error(system.errors).FullyQualifiedErrorId == f"CouldNotStopProcess,{SVC}StopProcessCommand"
        )
    assert events(log, "process_killed")[0]["process"] == "w3wp"


async def test_webadministration_pool_cmdlets() -> None:
    async with booted(config()) as node:
        await script(node, "Import-Module WebAdministration; Stop-WebAppPool -Name DefaultAppPool")
        await wait_until(lambda: node.iis.site_pool.state.name == "Stopped")
        again = await run(node, "Stop-WebAppPool", ("Name", "DefaultAppPool"))
        assert_record(
            only_error(again.errors),
            "InvalidOperation,Microsoft.IIs.PowerShell.Provider.StopAppPoolCommand",
            ErrorCategory.InvalidOperation,
            "Object on target path is already stopped.",
        )
        await run(node, "Start-WebAppPool", ("Name", "DefaultAppPool"))
        state = (await run(node, "Get-WebAppPoolState", ("Name", "DefaultAppPool"))).output[0]
        assert state.Value == "Started"


async def test_invoke_expression_with_out_string_stream_as_pypsrp_execute_ps_sends_it() -> None:
    async with booted(config()) as node:
        sink = Sink()
        commands = [
            CommandSpec("Invoke-Expression", args=(("Command", "Get-Service WinRM"),)),
            CommandSpec("Out-String", args=(("Stream", True),)),
        ]
        await run_pipeline(node, commands, sink, endpoint=None)
        assert any(line.startswith("Running  WinRM") for line in sink.output)
        assert sink.errors == []
