"""cmd.exe in the WinRS shell: net, sc, iisreset (against the real site socket), powershell, chains."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from simfarm.cmd import run_command_line
from simfarm.node import SimNode
from simfarm.scm import ServiceState
from simfarm.site import SiteServer
from tests.model_fixtures import booted, config, events, free_port, wait_until
from tests.test_site import raw_get


async def cmd(node: SimNode, line: str) -> tuple[int, str, str]:
    out: list[str] = []
    err: list[str] = []
    code = await run_command_line(node, line, out.append, err.append)
    return code, "".join(out), "".join(err)


async def test_net_stop_http_y_lists_dependents_and_drops_winrm(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        seen: list[bool] = []
        node.on_winrm_change(seen.append)
        code, out, _ = await cmd(node, "net stop http /y")
        assert code == 0
        assert out.startswith(
            "The following services are dependent on the HTTP Service service.\r\n"
            "Stopping the HTTP Service service will also stop these services.\r\n\r\n"
        )
        assert "   Windows Remote Management (WS-Management)\r\n" in out
        assert "The HTTP Service service was stopped successfully.\r\n" in out
        assert seen == [False]
        assert node.scm.state("WAS") == ServiceState.Running
        assert node.scm.state("W3SVC") == ServiceState.Stopped
    assert {e["source"] for e in events(log, "service_control")} == {"cmd"}


async def test_net_stop_without_y_refuses_when_dependents_run() -> None:
    async with booted(config()) as node:
        code, out, _ = await cmd(node, "net stop was")
        assert code == 2
        assert "Do you want to continue this operation? (Y/N) [N]: " in out
        assert node.scm.state("W3SVC") == ServiceState.Running


async def test_net_texts_for_start_and_errors() -> None:
    async with booted(config([{"kind": "access_denied", "service": "WinRM"}])) as node:
        assert await cmd(node, "net start w3svc") == (
            2,
            "",
            "The requested service has already been started.\r\n\r\nMore help is available by typing NET "
            "HELPMSG 2182.\r\n\r\n",
        )
        assert (await cmd(node, "net stop winrm"))[
            2
        ] == "System error 5 has occurred.\r\n\r\nAccess is denied.\r\n\r\n"
        assert (await cmd(node, "net stop nosuch"))[2].startswith("The service name is invalid.")
        code, out, _ = await cmd(node, "net stop w3logsvc && net start w3logsvc")
        assert code == 0
        assert out.startswith("The W3C Logging Service service is stopping.")
        assert "The W3C Logging Service service was started successfully.\r\n" in out
        code, _, err = await cmd(node, "net stop w3logsvc & net stop w3logsvc")
        assert code == 2 and err.startswith("The W3C Logging Service service is not started.")


async def test_net_start_disabled_is_system_error_1058() -> None:
    async with booted(config([{"kind": "disabled", "service": "W3LOGSVC"}])) as node:
        await cmd(node, "net stop w3logsvc")
        code, _, err = await cmd(node, "net start w3logsvc")
        assert code == 2 and err.startswith("System error 1058 has occurred.")


async def test_sc_query_layout() -> None:
    async with booted(config()) as node:
        code, out, _ = await cmd(node, "sc query W3SVC")
        assert code == 0
        assert "SERVICE_NAME: W3SVC \r\n" in out
        assert "        STATE              : 4  RUNNING \r\n" in out
        code, _, err = await cmd(node, "sc query nosuch")
        assert code == 1060 and err.startswith("[SC] EnumQueryServicesStatus:OpenService FAILED 1060:")


async def test_powershell_encoded_command_hostname_and_unknown_commands() -> None:
    async with booted(config()) as node:
        encoded = base64.b64encode("Get-Service W3SVC".encode("utf-16-le")).decode()
        code, out, _ = await cmd(node, f"powershell -NoProfile -EncodedCommand {encoded}")
        assert code == 0 and "Running  W3SVC" in out
        assert await cmd(node, "hostname") == (0, "web01\r\n", "")
        code, _, err = await cmd(node, "frobnicate now")
        assert code == 1
        assert (
            err == "'frobnicate' is not recognized as an internal or external command,\r\n"
            "operable program or batch file.\r\n"
        )
        assert (await cmd(node, "cmd /c frob || hostname"))[1] == "web01\r\n"


async def _site(node: SimNode) -> tuple[SiteServer, str]:
    server = SiteServer(node)
    port = free_port()
    await server.start("127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}"


async def test_iisreset_kills_workers_after_the_timeout_and_in_flight_requests_fail(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        server, url = await _site(node)
        try:
            slow = asyncio.ensure_future(raw_get(url + "/slow?seconds=5"))
            await wait_until(
                lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
            )
            code, out, _ = await cmd(node, "iisreset /timeout:0.2")
            assert code == 0
            assert out == (
                "Attempting stop...\r\nInternet services successfully stopped\r\n"
                "Attempting start...\r\nInternet services successfully restarted\r\n"
            )
            try:
                await asyncio.wait_for(slow, 3)
                raise AssertionError("the in-flight request should have been reset")
            except ConnectionResetError:
                pass
            assert node.scm.state("W3SVC") == ServiceState.Running
            assert node.winrm_running()  # iisreset leaves HTTP.sys alone
            assert await raw_get(url + "/healthz") == 200
        finally:
            await server.close()
    killed = events(log, "process_killed")
    assert {e["process"] for e in killed} >= {"w3wp", "svchost"}
    assert {e["source"] for e in killed} == {"iisreset"}


async def test_iisreset_noforce_leaves_the_request_and_reports_failure(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    async with booted(config(), log) as node:
        server, url = await _site(node)
        try:
            slow = asyncio.ensure_future(raw_get(url + "/slow?seconds=0.6"))
            await wait_until(
                lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
            )
            code, out, err = await cmd(node, "iisreset /noforce /timeout:0.1")
            assert code == 1
            assert out == "Attempting stop...\r\n"
            assert err.startswith("Restart attempt failed.")
            assert node.scm.state("W3SVC") == ServiceState.StopPending
            assert await asyncio.wait_for(slow, 3) == 200
            assert await node.scm.wait_for("W3SVC", ServiceState.Stopped, 3)
        finally:
            await server.close()
    assert events(log, "process_killed") == []


async def test_iisreset_status_and_stop_start() -> None:
    async with booted(config(iisadmin=True)) as node:
        _, out, _ = await cmd(node, "iisreset /status")
        assert "Status for World Wide Web Publishing Service ( W3SVC ) : Running\r\n" in out
        assert "Status for IIS Admin Service ( IISADMIN ) : Running\r\n" in out
        assert (await cmd(node, "iisreset /stop"))[1].endswith("Internet services successfully stopped\r\n")
        assert (
            node.scm.state("IISADMIN") == ServiceState.Stopped
            and node.scm.state("WAS") == ServiceState.Stopped
        )
        assert (await cmd(node, "iisreset /start"))[1].endswith("Internet services successfully started\r\n")
        assert node.scm.state("W3SVC") == ServiceState.Running
