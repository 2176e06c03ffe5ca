"""Transport faults of a node: WinRM down, latency, connection resets, and WinRM stopping/starting."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import requests
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from simfarm.config import Latency, NodeSim, Resets, SimConfig, WinRMDown
from simfarm.scm import ServiceState

FIRST, SECOND = "127.0.50.1", "127.0.50.2"


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


def _config_request(farm, address: str) -> float:
    desc = farm.describe()
    wsman = WSMan(address, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    began = time.monotonic()
    wsman.get_server_config()
    return time.monotonic() - began


async def _until(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_winrm_down_refuses_both_ports(start_farm, in_thread):
    farm = await start_farm(
        SimConfig(nodes={"web-002": NodeSim(faults=[WinRMDown(kind="winrm_down")])}), count=2
    )
    assert await in_thread(_connects, SECOND, 5985) is False
    assert await in_thread(_connects, SECOND, 5986) is False
    assert await in_thread(_connects, FIRST, 5985) is True
    assert await in_thread(_connects, FIRST, 5986) is True
    assert not farm.members["web-002"].winrm.listening


async def test_stopping_winrm_drops_listeners_and_shells_then_starting_reopens(farm, in_thread):
    node = farm.node("web-001")
    service = farm.members["web-001"].winrm
    desc = farm.describe()
    wsman = WSMan(FIRST, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    pool = RunspacePool(wsman)
    await in_thread(pool.open)
    assert len(service.shells.shells) == 1

    await node.scm.controller_stop("WinRM", "test")
    await _until(lambda: not service.listening)
    assert service.shells.shells == {}
    assert await in_thread(_connects, FIRST, 5985) is False
    assert await in_thread(_connects, FIRST, 5986) is False

    assert await node.scm.wait_for("WinRM", ServiceState.Stopped, 5.0)
    await node.scm.controller_start("WinRM", "test")
    await _until(lambda: service.listening)
    # Reopened for real: a new client authenticates and gets a shell, the old one is not revived.
    client = WSMan(FIRST, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
    again = RunspacePool(client)
    await in_thread(again.open)
    assert len(service.shells.shells) == 1
    await in_thread(again.close)
    assert service.shells.shells == {}


async def test_latency_delays_every_response(start_farm, in_thread):
    farm = await start_farm(
        SimConfig(nodes={"web-002": NodeSim(faults=[Latency(kind="latency", ms=400)])}), count=2
    )
    assert await in_thread(_config_request, farm, SECOND) >= 0.4 * 3  # auth legs and the request itself


@pytest.mark.parametrize("share", [1.0, 0.5])
async def test_resets_abort_that_share_of_requests(start_farm, in_thread, share):
    await start_farm(SimConfig(nodes={"web-001": NodeSim(faults=[Resets(kind="resets", share=share)])}))

    def outcomes() -> list[str]:
        seen = []
        for _ in range(30):
            try:
                requests.post(f"http://{FIRST}:5985/wsman", data=b"", timeout=5)
                seen.append("answered")
            except requests.ConnectionError:
                seen.append("reset")
        return seen

    seen = await in_thread(outcomes)
    if share == 1.0:
        assert set(seen) == {"reset"}
    else:
        assert {"reset", "answered"} <= set(seen)
