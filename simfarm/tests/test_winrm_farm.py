"""The farm process: many nodes in one process, the `sim` entry point, its signals and its errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from simfarm.config import SimConfig

# The distribution root, so `-m simfarm.farm` imports this checkout even where it is not installed.
REPO = Path(__file__).resolve().parents[1]


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return True
    except OSError:
        return False


async def test_two_hundred_nodes_serve_every_listener(start_farm, in_thread):
    farm = await start_farm(SimConfig(), count=200)
    desc = farm.describe()
    assert len(desc["nodes"]) == 200

    def probe_all() -> list[tuple[str, int]]:
        return [
            (n["address"], port)
            for n in desc["nodes"]
            for port in (n["winrm_http_port"], n["winrm_https_port"], n["site_port"])
            if not _accepts(n["address"], port)
        ]

    assert await in_thread(probe_all) == []


async def _start_sim(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simfarm.farm", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_run_sim_prints_ready_and_exits_zero_on_sigterm(tmp_path, in_thread):
    describe = tmp_path / "farm.json"
    proc = await _start_sim(
        "--nodes", "3", "--base-address", "127.0.51.1", "--describe", str(describe), cwd=tmp_path
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        desc = json.loads(describe.read_text())
        assert [n["name"] for n in desc["nodes"]] == ["web-001", "web-002", "web-003"]
        assert [n["address"] for n in desc["nodes"]] == ["127.0.51.1", "127.0.51.2", "127.0.51.3"]
        assert await in_thread(Path(desc["ca_file"]).is_file)
        assert await in_thread(_accepts, "127.0.51.3", 5986)
    finally:
        code = await _stop(proc)
    assert code == 0
    assert await in_thread(_accepts, "127.0.51.3", 5986) is False


async def test_workers_spread_the_nodes_and_stop_together(tmp_path, in_thread):
    describe = tmp_path / "farm.json"
    proc = await _start_sim(
        "--nodes", "4", "--base-address", "127.0.52.1", "--workers", "2", "--describe", str(describe),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        desc = json.loads(describe.read_text())
        assert [n["name"] for n in desc["nodes"]] == ["web-001", "web-002", "web-003", "web-004"]
        for n in desc["nodes"]:
            assert await in_thread(_accepts, n["address"], n["winrm_http_port"])
    finally:
        code = await _stop(proc)
    assert code == 0
    assert await in_thread(_accepts, "127.0.52.2", 5985) is False


async def test_inventory_names_nodes_and_faults(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        "nodes:\n  - name: web-a\n    host: 127.0.53.1\nsim:\n  nodes:\n    web-b:\n      faults: []\n"
    )
    proc = await _start_sim("--inventory", str(inventory), cwd=tmp_path)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"{inventory}:6:5: sim.nodes.web-b: no node named 'web-b' in nodes" in err.decode()


async def test_sim_config_error_exits_two_with_its_position(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("nodes:\n  - name: web-a\n    host: 127.0.53.1\nsim:\n  sead: 3\n")
    proc = await _start_sim("--inventory", str(inventory), cwd=tmp_path)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"{inventory}:5:3: sim.sead: unknown field; did you mean 'seed'?" in err.decode()


@pytest.mark.parametrize(
    ("sim", "expected"),
    [
        ("  deep: " + "[" * 5000 + "]" * 5000, ":5:71: (document): invalid YAML: nested deeper than 64"),
        ("  timings: {default: {stop: {low: .inf}}}", ":5:30: sim.timings.default.stop.low: "),
    ],
    ids=["deep-nesting", "infinite-timing"],
)
async def test_hostile_sim_settings_exit_two_with_their_position(tmp_path, sim, expected):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(f"nodes:\n  - name: web-a\n    host: 127.0.53.1\nsim:\n{sim}\n")
    proc = await _start_sim("--inventory", str(inventory), cwd=tmp_path)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"{inventory}{expected}" in err.decode()
    assert "Traceback" not in err.decode()


async def test_non_loopback_host_is_refused(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("nodes:\n  - name: web-a\n    host: 192.0.2.10\n")
    proc = await _start_sim("--inventory", str(inventory), cwd=tmp_path)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert (
        f"{inventory}:3:5: nodes[0].host: the simulated farm serves loopback addresses only" in err.decode()
    )


async def test_an_address_already_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.54.1", 5985))
        held.listen()
        proc = await _start_sim("--nodes", "1", "--base-address", "127.0.54.1", cwd=tmp_path)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert "address already in use" in lines[0] and "127.0.54.1" in lines[0]
