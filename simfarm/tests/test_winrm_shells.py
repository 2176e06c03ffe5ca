"""PSRP and WinRS shells over real sockets: what pypsrp sees when it uses the farm like a Windows host.

Where a test needs a command with controlled timing (streaming, long-poll, stop), it swaps the Windows
behaviour for a tiny in-test one; everything else runs the farm's real cmdlets and commands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import psrpcore.types as pstypes
import pytest
from pypsrp.client import Client
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import CommandState, Process, SignalCode, WinRS
from pypsrp.wsman import WSMan

from simfarm import cmd as cmd_exe
from simfarm import powershell, shells
from simfarm.config import Endpoint, SimConfig, WinRMConfig
from simfarm.powershell import CommandSpec, PipelineFailed, PipelineSink

ADDRESS = "127.0.50.1"


def _wsman(farm: Any, **kwargs: Any) -> WSMan:
    desc = farm.describe()
    options: dict[str, Any] = {"ssl": False, "auth": "ntlm", **kwargs}
    return WSMan(ADDRESS, username=desc["username"], password=desc["password"], **options)


class Gate:
    """An asyncio.Event the blocking client thread can open."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def open(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


# --- PowerShell -------------------------------------------------------------------------------------


async def test_runspace_pool_invokes_a_cmdlet_with_parameters(farm, in_thread):
    def get_service() -> tuple[list[Any], bool]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Service").add_parameter("Name", "WinRM")
            return ps.invoke(), ps.had_errors

    output, had_errors = await in_thread(get_service)
    assert not had_errors
    assert [o.extended_properties["Name"] for o in output] == ["WinRM"]


async def test_non_terminating_error_arrives_on_the_error_stream(farm, in_thread):
    def missing_service() -> list[str]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Service").add_parameter("Name", "NoSuchService")
            ps.invoke()
            return [str(e) for e in ps.streams.error]

    assert await in_thread(missing_service) == ["Cannot find any service with service name 'NoSuchService'."]


async def test_client_execute_ps(farm, in_thread):
    desc = farm.describe()
    client = Client(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    output, _streams, had_errors = await in_thread(client.execute_ps, "Get-Service WinRM")
    assert not had_errors
    assert "WinRM" in output


async def test_terminating_error_fails_the_pipeline(farm, in_thread, monkeypatch):
    async def fail(node: Any, commands: Sequence[CommandSpec], sink: PipelineSink, **_: Any) -> None:
        sink.write_output("partial")
        raise PipelineFailed(
            pstypes.ErrorRecord(
                Exception=pstypes.NETException(Message="Cannot stop 'W3SVC' service on computer '.'."),
                CategoryInfo=pstypes.ErrorCategoryInfo(Category=pstypes.ErrorCategory.CloseError),
                FullyQualifiedErrorId="CouldNotStopService,Microsoft.PowerShell.Commands.StopServiceCommand",
            )
        )

    monkeypatch.setattr(powershell, "run_pipeline", fail)

    def invoke() -> tuple[list[Any], int, bool, list[str]]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Stop-Service").add_parameter("Name", "W3SVC")
            output = ps.invoke()
            return output, ps.state, ps.had_errors, [str(e) for e in ps.streams.error]

    output, state, had_errors, errors = await in_thread(invoke)
    assert output == ["partial"]
    assert state == PSInvocationState.FAILED
    assert had_errors
    assert errors == ["Cannot stop 'W3SVC' service on computer '.'."]


async def test_stop_signal_ends_a_running_pipeline_as_stopped(farm, in_thread, monkeypatch):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(node: Any, commands: Sequence[CommandSpec], sink: PipelineSink, **_: Any) -> None:
        sink.write_output("working")
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    monkeypatch.setattr(powershell, "run_pipeline", forever)

    def run_and_stop() -> tuple[int, list[str]]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Wait-Event")
            ps.begin_invoke()
            while not ps.output:
                ps.poll_invoke()
            ps.stop()
            # pypsrp marks the pipeline stopped locally; read what the server reports instead.
            pool.pipelines[ps.id] = ps
            ps.state = PSInvocationState.RUNNING
            while ps.state == PSInvocationState.RUNNING:
                ps.poll_invoke()
            return ps.state, [str(e) for e in ps.streams.error]

    state, errors = await in_thread(run_and_stop)
    assert started.is_set() and cancelled.is_set()
    assert state == PSInvocationState.STOPPED
    assert errors == ["The pipeline has been stopped."]


async def test_pipeline_input_reaches_the_commands(farm, in_thread, monkeypatch):
    seen: list[Any] = []

    async def echo(node: Any, commands: Sequence[CommandSpec], sink: PipelineSink, **kw: Any) -> None:
        seen.extend(kw["input"])
        for item in kw["input"]:
            sink.write_output(item)

    monkeypatch.setattr(powershell, "run_pipeline", echo)

    def invoke() -> list[Any]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Write-Output")
            return ps.invoke(input=["W3SVC", "WAS"])  # type: ignore[arg-type]  # pypsrp takes a list too

    assert await in_thread(invoke) == ["W3SVC", "WAS"]
    assert seen == ["W3SVC", "WAS"]


async def test_large_output_is_split_across_envelopes(farm, in_thread, monkeypatch):
    blob = "x" * 400_000

    async def big(node: Any, commands: Sequence[CommandSpec], sink: PipelineSink, **_: Any) -> None:
        sink.write_output(blob)

    monkeypatch.setattr(powershell, "run_pipeline", big)

    def invoke() -> list[Any]:
        with RunspacePool(_wsman(farm)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Content")
            return ps.invoke()

    assert await in_thread(invoke) == [blob]


# --- JEA endpoints ------------------------------------------------------------------------------------

JEA = SimConfig(endpoints=[Endpoint(name="OrchestratorOps", visible_cmdlets=["Get-Service"])])


async def test_jea_endpoint_exposes_only_its_cmdlets(start_farm, in_thread):
    farm = await start_farm(JEA)

    def session() -> dict[str, Any]:
        with RunspacePool(_wsman(farm), configuration_name="OrchestratorOps") as pool:
            allowed = PowerShell(pool)
            allowed.add_cmdlet("Get-Service").add_parameter("Name", "WinRM")
            out = allowed.invoke()
            hidden = PowerShell(pool)
            hidden.add_cmdlet("Get-Process")
            hidden.invoke()
            script = PowerShell(pool)
            script.add_script("Get-Service WinRM")
            script.invoke()
            return {"allowed": (len(out), allowed.had_errors), "hidden": hidden.had_errors, "script": script}

    result = await in_thread(session)
    assert result["allowed"] == (1, False)
    assert result["hidden"]
    assert result["script"].had_errors
    assert "no-language mode" in str(result["script"].streams.error[0])


async def test_unknown_endpoint_gets_the_windows_fault(farm, in_thread):
    def open_pool() -> None:
        with RunspacePool(_wsman(farm), configuration_name="NoSuchEndpoint"):
            pass

    with pytest.raises(WSManFaultError) as err:
        await in_thread(open_pool)
    assert (
        "http://schemas.microsoft.com/powershell/NoSuchEndpoint) was not found in the WS-Management catalog"
        in (err.value.reason or "")
    )


# --- WinRS ------------------------------------------------------------------------------------------


async def test_client_execute_cmd(farm, in_thread):
    desc = farm.describe()
    client = Client(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    stdout, stderr, rc = await in_thread(client.execute_cmd, "hostname")
    assert (stdout, stderr, rc) == ("web-001\r\n", "", 0)


async def test_cmd_output_streams_before_the_command_ends(farm, in_thread, monkeypatch):
    gate = Gate()

    async def two_parts(node: Any, line: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
        out("Attempting stop...\r\n")
        await gate.event.wait()
        err("warning\r\n")
        out("Internet services successfully stopped\r\n")
        return 0

    monkeypatch.setattr(cmd_exe, "run_command_line", two_parts)

    def run() -> tuple[bytes, str, bytes, bytes, int | None]:
        with WinRS(_wsman(farm)) as shell:
            process = Process(shell, "iisreset", ["/stop"])
            process.begin_invoke()
            while not process.stdout:
                process.poll_invoke()
            early, early_state = process.stdout, process.state
            gate.open()
            process.end_invoke()
            return early, early_state, process.stdout, process.stderr, process.rc

    early, early_state, stdout, stderr, rc = await in_thread(run)
    assert early == b"Attempting stop...\r\n"
    assert early_state == CommandState.RUNNING
    assert stdout == b"Attempting stop...\r\nInternet services successfully stopped\r\n"
    assert stderr == b"warning\r\n"
    assert rc == 0


async def test_receive_long_poll_times_out_with_the_windows_fault(start_farm, in_thread, monkeypatch):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_timeout_ms=1000)))
    gate = Gate()

    async def quiet(node: Any, line: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
        await gate.event.wait()
        return 0

    monkeypatch.setattr(cmd_exe, "run_command_line", quiet)

    def receive_with_timeout(seconds: int) -> tuple[int | None, float]:
        with WinRS(_wsman(farm, operation_timeout=seconds, read_timeout=30)) as shell:
            process = Process(shell, "ping", ["-t", "localhost"])
            process.begin_invoke()
            began = time.monotonic()
            try:
                shell.receive(command_id=process.id)
            except WSManFaultError as exc:
                return exc.code, time.monotonic() - began
            finally:
                gate.open()
            return None, time.monotonic() - began

    # The server caps the client's 20 s OperationTimeout at MaxTimeoutms (1 s).
    code, elapsed = await in_thread(receive_with_timeout, 20)
    assert code == 2150858793
    assert 0.9 <= elapsed < 10


async def test_ctrl_c_interrupts_a_command(farm, in_thread, monkeypatch):
    cancelled = asyncio.Event()

    async def endless(node: Any, line: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
        out("Pinging\r\n")
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return 0

    monkeypatch.setattr(cmd_exe, "run_command_line", endless)

    def interrupt() -> tuple[str, int | None]:
        with WinRS(_wsman(farm)) as shell:
            process = Process(shell, "ping", ["-t", "localhost"])
            process.begin_invoke()
            while not process.stdout:
                process.poll_invoke()
            process.signal(SignalCode.CTRL_C)
            process.end_invoke()
            return process.state, process.rc

    state, rc = await in_thread(interrupt)
    assert cancelled.is_set()
    assert state == CommandState.DONE
    assert rc == shells.CTRL_C_EXIT


async def test_unknown_shell_gets_the_windows_fault(farm, in_thread):
    def receive_after_delete() -> WSManFaultError:
        wsman = _wsman(farm)
        shell = WinRS(wsman)
        shell.open()
        selectors = shell._selector_set
        shell.close()
        try:
            wsman.receive(shell.resource_uri, _receive_body(), selector_set=selectors)
        except WSManFaultError as exc:
            return exc
        raise AssertionError("Receive on a deleted shell succeeded")

    fault = await in_thread(receive_after_delete)
    assert fault.code == 2150858843
    assert "failed because the shell was not found on the server" in (fault.reason or "")


async def test_pool_is_not_alive_after_its_shell_is_gone(farm, in_thread):
    def alive_after_restart() -> tuple[bool, bool]:
        pool = RunspacePool(_wsman(farm))
        pool.open()
        before = pool.is_alive()
        farm.members["web-001"].winrm.shells.close_all()
        return before, pool.is_alive()

    assert await in_thread(alive_after_restart) == (True, False)


def _receive_body() -> Any:
    import xml.etree.ElementTree as ET

    rsp = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    body = ET.Element(f"{{{rsp}}}Receive")
    ET.SubElement(body, f"{{{rsp}}}DesiredStream").text = "stdout stderr"
    return body
