"""WinRM quotas: shells and operations per user, and the envelope size limit, with Windows' faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pypsrp.exceptions import WSManFaultError
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan

from simfarm import cmd as cmd_exe
from simfarm.config import SimConfig, WinRMConfig

ADDRESS = "127.0.50.1"


def _wsman(farm: Any) -> WSMan:
    desc = farm.describe()
    return WSMan(ADDRESS, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")


async def test_shells_beyond_max_shells_per_user_get_the_quota_fault(start_farm, in_thread):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_shells_per_user=2)))

    def open_three() -> tuple[WSManFaultError, bool]:
        wsman = _wsman(farm)
        first, second, third = WinRS(wsman), WinRS(wsman), WinRS(wsman)
        first.open()
        second.open()
        try:
            third.open()
        except WSManFaultError as exc:
            fault = exc
        else:
            raise AssertionError("a third shell was allowed")
        first.close()
        third.open()  # closing a shell frees its slot
        reopened = third.opened
        second.close()
        third.close()
        return fault, reopened

    fault, reopened = await in_thread(open_three)
    assert fault.code == 0x803381A5
    assert "This user is allowed a maximum number of 2 concurrent shells, which has been exceeded." in (
        fault.reason or ""
    )
    assert reopened


async def test_operations_beyond_the_user_quota_get_the_quota_fault(start_farm, in_thread, monkeypatch):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_concurrent_operations_per_user=3)))

    async def instant(node: Any, line: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
        return 0

    monkeypatch.setattr(cmd_exe, "run_command_line", instant)

    def three_commands() -> int | None:
        with WinRS(_wsman(farm)) as shell:  # the shell is one operation, each command another
            Process(shell, "hostname").invoke()
            Process(shell, "hostname").invoke()
            try:
                Process(shell, "hostname").invoke()
            except WSManFaultError as exc:
                return int(exc.code)
        return None

    assert await in_thread(three_commands) == 0x803381A6


async def test_envelope_larger_than_max_envelope_size_gets_limits_exceeded(
    start_farm, in_thread, monkeypatch
):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_envelope_size_kb=32)))
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def waits(node: Any, line: str, out: Callable[[str], None], err: Callable[[str], None]) -> int:
        await gate.wait()
        return 0

    monkeypatch.setattr(cmd_exe, "run_command_line", waits)

    def oversized_send() -> WSManFaultError:
        with WinRS(_wsman(farm)) as shell:
            process = Process(shell, "more")
            process.begin_invoke()
            shell.send("stdin", b"small", command_id=process.id)  # within the quota: accepted
            try:
                shell.send("stdin", b"x" * 40_000, command_id=process.id)
            except WSManFaultError as exc:
                return exc
            finally:
                loop.call_soon_threadsafe(gate.set)
        raise AssertionError("an oversized envelope was accepted")

    fault = await in_thread(oversized_send)
    assert fault.code == 0x80338111
    assert "exceeded the configured MaxEnvelopeSize quota" in (fault.reason or "")


async def test_server_config_reports_the_quotas(start_farm, in_thread):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_envelope_size_kb=200)))

    def payload_size() -> int:
        wsman = _wsman(farm)
        wsman.update_max_payload_size()
        return int(wsman.max_envelope_size)

    assert await in_thread(payload_size) == 200 * 1024


async def test_machine_qualified_name_counts_as_the_same_user(start_farm, in_thread):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_shells_per_user=1)))
    desc = farm.describe()

    def second_shell_fault() -> int | None:
        plain = WinRS(_wsman(farm))
        plain.open()
        qualified = WSMan(
            ADDRESS,
            username="web-001\\" + desc["username"],
            password=desc["password"],
            ssl=False,
            auth="ntlm",
        )
        try:
            WinRS(qualified).open()
        except WSManFaultError as exc:
            return int(exc.code)
        finally:
            plain.close()
        return None

    assert await in_thread(second_shell_fault) == 0x803381A5
