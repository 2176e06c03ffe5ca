"""The service control manager: the IIS service graph (docs/windows-fidelity.md §3) and raw SCM semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.config import SimConfig
from simfarm.scm import ServiceState, Win32Error
from tests.model_fixtures import booted, config, events, wait_until

Running, Stopped, StopPending = ServiceState.Running, ServiceState.Stopped, ServiceState.StopPending


async def test_boot_runs_every_service_and_winrm_down_keeps_winrm_stopped() -> None:
    async with booted(config()) as node:
        assert {s.name: s.state for s in node.scm.all()} == {
            n: Running for n in ("HTTP", "RPCSS", "W3LOGSVC", "W3SVC", "WAS", "WinRM")
        }
        assert node.winrm_running()
    async with booted(config([{"kind": "winrm_down"}])) as node:
        assert node.scm.state("WinRM") == Stopped
        assert not node.winrm_running()


async def test_iisadmin_exists_only_when_configured() -> None:
    async with booted(config(iisadmin=True)) as node:
        assert node.scm.state("IISADMIN") == Running
        assert [p.name for p in node.iis.processes.all() if p.name == "inetinfo"] == ["inetinfo"]
    async with booted(config()) as node:
        assert node.scm.find("IISADMIN") is None


async def test_w3svc_depends_on_was_and_http_and_its_dependent_is_w3logsvc() -> None:
    async with booted(config()) as node:
        assert {s.name for s in node.scm.depends_on("W3SVC")} == {"WAS", "HTTP"}
        assert [s.name for s in node.scm.dependents("W3SVC")] == ["W3LOGSVC"]


async def test_winrm_depends_on_rpcss_and_http() -> None:
    async with booted(config()) as node:
        assert {s.name for s in node.scm.depends_on("WinRM")} == {"RPCSS", "HTTP"}
        assert "WinRM" in {s.name for s in node.scm.dependents("HTTP")}


async def test_dependents_list_deepest_first_so_stopping_in_order_never_hits_1051() -> None:
    async with booted(config()) as node:
        order = [s.name for s in node.scm.dependents("HTTP")]
        assert order.index("W3LOGSVC") < order.index("W3SVC")
        assert "WAS" not in order  # WAS does not depend on HTTP


async def test_stop_control_with_running_dependents_is_1051() -> None:
    async with booted(config()) as node:
        with pytest.raises(Win32Error) as err:
            node.scm.control_stop("WAS", "test")
        assert err.value.code == 1051
        assert node.scm.state("WAS") == Running


async def test_stop_control_on_stopped_service_is_1062_and_on_pending_is_1061() -> None:
    async with booted(config([{"kind": "hang_stop", "service": "W3LOGSVC"}])) as node:
        node.scm.control_stop("W3LOGSVC", "test")
        assert node.scm.state("W3LOGSVC") == StopPending
        with pytest.raises(Win32Error) as pending:
            node.scm.control_stop("W3LOGSVC", "test")
        assert pending.value.code == 1061
    async with booted(config()) as node:
        node.scm.control_stop("W3LOGSVC", "test")
        assert await node.scm.wait_for("W3LOGSVC", Stopped, 5)
        with pytest.raises(Win32Error) as stopped:
            node.scm.control_stop("W3LOGSVC", "test")
        assert stopped.value.code == 1062


async def test_start_of_running_service_is_1056_and_unknown_service_is_1060() -> None:
    async with booted(config()) as node:
        with pytest.raises(Win32Error) as running:
            await node.scm.start("W3SVC", "test")
        assert running.value.code == 1056
        with pytest.raises(Win32Error) as missing:
            node.scm.get("NoSuchSvc")
        assert missing.value.code == 1060


async def test_access_denied_fault_refuses_control_with_5() -> None:
    async with booted(config([{"kind": "access_denied", "service": "W3LOGSVC"}])) as node:
        with pytest.raises(Win32Error) as err:
            node.scm.control_stop("W3LOGSVC", "test")
        assert err.value.code == 5
        assert err.value.message == "Access is denied."


async def test_disabled_fault_makes_start_fail_with_1058() -> None:
    async with booted(config([{"kind": "disabled", "service": "W3LOGSVC"}])) as node:
        node.scm.control_stop("W3LOGSVC", "test")
        assert await node.scm.wait_for("W3LOGSVC", Stopped, 5)
        with pytest.raises(Win32Error) as err:
            await node.scm.start("W3LOGSVC", "test")
        assert err.value.code == 1058
        assert node.scm.state("W3LOGSVC") == Stopped


async def test_start_failure_fault_goes_start_pending_then_stopped_with_1053(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with booted(config([{"kind": "start_failure", "service": "W3LOGSVC"}]), log) as node:
        node.scm.control_stop("W3LOGSVC", "test")
        assert await node.scm.wait_for("W3LOGSVC", Stopped, 5)
        with pytest.raises(Win32Error) as err:
            await node.scm.start("W3LOGSVC", "test")
        assert err.value.code == 1053
        assert node.scm.state("W3LOGSVC") == Stopped
    states = [e["state"] for e in events(log, "service_state") if e["service"] == "W3LOGSVC"]
    assert states[-2:] == ["StartPending", "Stopped"]


async def test_control_busy_answers_1061_for_count_attempts_then_accepts() -> None:
    async with booted(config([{"kind": "control_busy", "service": "W3LOGSVC", "count": 2}])) as node:
        for _ in range(2):
            with pytest.raises(Win32Error) as err:
                node.scm.control_stop("W3LOGSVC", "test")
            assert err.value.code == 1061
        node.scm.control_stop("W3LOGSVC", "test")
        assert await node.scm.wait_for("W3LOGSVC", Stopped, 5)


async def test_rpcss_cannot_be_stopped() -> None:
    async with booted(config()) as node:
        with pytest.raises(Win32Error) as err:
            node.scm.control_stop("RPCSS", "test")
        assert err.value.code in (1051, 1052)


async def test_start_brings_up_stopped_dependencies_first() -> None:
    async with booted(config()) as node:
        await node.scm.controller_stop("WAS", "test")
        assert await node.scm.wait_for("WAS", Stopped, 5)
        assert node.scm.state("W3SVC") == Stopped
        await node.scm.start("W3SVC", "test")
        assert await node.scm.wait_for("W3SVC", Running, 5)
        assert node.scm.state("WAS") == Running


async def test_controller_stop_stops_running_dependents_first(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with booted(config(), log) as node:
        await node.scm.controller_stop("WAS", "powershell")
        assert await node.scm.wait_for("WAS", Stopped, 5)
        assert node.scm.state("W3SVC") == Stopped and node.scm.state("W3LOGSVC") == Stopped
    stopped = [e["service"] for e in events(log, "service_state") if e["state"] == "Stopped"]
    assert stopped == ["W3LOGSVC", "W3SVC", "WAS"]
    controls = events(log, "service_control")
    assert {(e["service"], e["source"]) for e in controls} == {
        ("W3LOGSVC", "powershell"),
        ("W3SVC", "powershell"),
        ("WAS", "powershell"),
    }


async def test_stopping_http_stops_winrm_and_notifies_the_listeners() -> None:
    async with booted(config()) as node:
        seen: list[bool] = []
        node.on_winrm_change(seen.append)
        await node.scm.controller_stop("HTTP", "cmd")
        assert await node.scm.wait_for("HTTP", Stopped, 5)
        assert seen == [False]
        assert not node.winrm_running()
        await node.scm.start("WinRM", "test")
        await wait_until(node.winrm_running)
        assert seen == [False, True]
        assert node.scm.state("HTTP") == Running


async def test_hang_stop_stays_pending_until_the_host_process_is_killed() -> None:
    async with booted(config([{"kind": "hang_stop", "service": "W3SVC"}])) as node:
        await node.scm.controller_stop("W3SVC", "test")
        assert not await node.scm.wait_for("W3SVC", Stopped, 0.2)
        assert node.scm.state("W3SVC") == StopPending
        node.iis.kill_hosting_processes("test")
        assert node.scm.state("W3SVC") == Stopped
        assert node.scm.state("WAS") == Stopped


async def test_hung_w3svc_stop_is_released_by_killing_its_workers() -> None:
    async with booted(config([{"kind": "hang_stop", "service": "W3SVC"}])) as node:
        await node.scm.controller_stop("W3SVC", "test")
        assert not await node.scm.wait_for("W3SVC", Stopped, 0.3)
        workers = [p for p in node.iis.processes.all() if p.name == "w3wp"]
        assert workers, "the stuck stop is waiting on a live worker"
        for proc in workers:
            node.iis.processes.kill(proc.pid, "test")
        assert await node.scm.wait_for("W3SVC", Stopped, 2)


async def test_timings_come_from_the_node_override() -> None:
    slow = {"default": {"stop": {"low": 0.3, "high": 0.3}, "start": {"low": 0.01, "high": 0.01}}}
    data = config().model_dump()
    data["nodes"]["web01"]["timings"] = slow
    cfg = SimConfig.model_validate(data)
    async with booted(cfg) as node:
        node.scm.control_stop("W3LOGSVC", "test")
        assert not await node.scm.wait_for("W3LOGSVC", Stopped, 0.1)
        assert await node.scm.wait_for("W3LOGSVC", Stopped, 2)
