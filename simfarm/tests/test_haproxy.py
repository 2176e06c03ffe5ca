"""The HAProxy the farm puts in front of its sites: which instances an inventory asks for, their
configuration, a mistake named at its line, and a real HAProxy seeing every site UP."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from simfarm import source
from simfarm.config import SimConfig
from simfarm.haproxy import HAProxyProcess, Instance, instances, render, runtime_command

INVENTORY = """\
version: 1
nodes:
  - {name: web-01, host: 127.0.9.1}
  - {name: web-02, host: 127.0.9.2}
load_balancers:
  - {driver: haproxy, haproxy: {socket: "127.0.9.250:9990", backend: [web, api]}}
  - {driver: none}
  - {driver: haproxy, haproxy: {socket: /run/x/admin.sock, backend: web}}
"""


def _doc(tmp_path: Path, text: str) -> source.Document:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return source.load(path)


def test_instances_follow_the_inventory(tmp_path: Path) -> None:
    found = instances(_doc(tmp_path, INVENTORY), SimConfig(site_port=8080), "127.0.9.1")
    assert found == [
        Instance("127.0.9.250:9990", ("web", "api"), "127.0.9.1:8081"),
        Instance("/run/x/admin.sock", ("web",), "127.0.9.1:8082"),
    ]
    text = render(found[0], [("web-01", "127.0.9.1"), ("web-02", "127.0.9.2")], SimConfig(), tmp_path)
    assert "stats socket ipv4@127.0.9.250:9990 level admin" in text
    assert text.count("server web-02 127.0.9.2:8080") == 2  # in both backends
    assert "option httpchk GET /healthz" in text and "server-state-file" in text
    assert "default_backend web" in text


def test_a_haproxy_balancer_without_a_socket_is_named_at_its_line(tmp_path: Path) -> None:
    text = INVENTORY.replace("socket: /run/x/admin.sock, ", "")
    with pytest.raises(source.SourceError) as err:
        instances(_doc(tmp_path, text), SimConfig(), "127.0.9.1")
    assert "load_balancers[2].haproxy.socket" in str(err.value) and ":8:" in str(err.value)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (make venv)")
async def test_haproxy_starts_sees_the_sites_and_stops(tmp_path: Path) -> None:
    from aiohttp import web

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.9.1", 18080).start()
    try:
        inst = Instance(str(tmp_path / "admin.sock"), ("web",), "127.0.9.1:18081")
        config = SimConfig(site_port=18080, haproxy={"inter_ms": 200, "fastinter_ms": 100})
        proc = HAProxyProcess(inst, [("web-01", "127.0.9.1")], config, tmp_path / "h")
        await asyncio.to_thread(proc.start)
        try:
            assert "web-01" in runtime_command(inst.socket, "show stat")
            assert proc.describe()["pid"] == proc.pid
        finally:
            proc.stop()
        assert proc.proc is not None and proc.proc.poll() is not None
    finally:
        await runner.cleanup()
