"""The HAProxy driver against a real HAProxy (no backend needed): levels, unknown servers, drain and
ready, an instance that does not answer, and the server-state-file warning."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.lb.base import LBError
from orchestrator.lb.haproxy import HAProxy
from orchestrator.lb.several import Several

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (make venv)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(admin unix socket, operator TCP socket, config) of a running HAProxy."""
    admin = tmp_path / "admin.sock"
    operator = f"127.0.0.1:{_free_port()}"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {admin} mode 600 level admin
    stats socket ipv4@{operator} level operator
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend web
    server web-01 127.0.0.1:9
    server web-02 127.0.0.1:9
"""
    )
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not admin.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield str(admin), operator, config
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_preflight_refuses_operator_level_and_unknown_servers(haproxy: tuple[str, str, Path]) -> None:
    admin, operator, config = haproxy

    async def scenario() -> None:
        with pytest.raises(LBError) as err:
            await HAProxy(operator, ["web"]).preflight(["web-01"])
        assert err.value.kind == "permission" and "level operator" in str(err.value)
        with pytest.raises(LBError) as err:
            await HAProxy(admin, ["web"]).preflight(["web-01", "web-09"])
        assert err.value.kind == "unknown_server" and "'web-09'" in str(err.value)
        with pytest.raises(LBError) as err:
            await HAProxy(admin, ["nope"]).preflight(["web-01"])
        assert err.value.kind == "unknown_server"
        ok = await HAProxy(admin, ["web"], config=str(config)).preflight(["web-01", "web-02"])
        assert ok.before["web-01"].admin == "ready" and ok.before["web-01"].healthy is None
        assert any("server-state-file" in w for w in ok.warnings)

    asyncio.run(scenario())


def test_drain_and_ready_on_every_instance(haproxy: tuple[str, str, Path]) -> None:
    admin, _operator, _config = haproxy

    async def scenario() -> None:
        # The same instance twice stands for a pair: each command reaches both, states combine.
        pair = Several([HAProxy(admin, ["web"]), HAProxy(admin, ["web"])])
        await pair.preflight(["web-01", "web-02"])
        await pair.drain("web-01")
        drained = await pair.state("web-01")
        assert (drained.rotation, drained.admin, drained.sessions) == ("out", "drain", 0)
        assert (await pair.state("web-02")).rotation == "in"
        await pair.ready("web-01")
        assert (await pair.state("web-01")).rotation == "in"
        await pair.close()

    asyncio.run(scenario())


def test_an_instance_that_does_not_answer_is_unreachable(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(LBError) as err:
            await HAProxy(str(tmp_path / "absent.sock"), ["web"], timeout=1).preflight(["web-01"])
        assert err.value.kind == "unreachable" and err.value.transient
        # A listener that accepts and never answers: the client-side timeout ends the wait.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            address = f"127.0.0.1:{silent.getsockname()[1]}"
            with pytest.raises(LBError) as err:
                await HAProxy(address, ["web"], timeout=0.3).state("web-01")
            assert err.value.kind == "unreachable" and "no answer" in str(err.value)

    asyncio.run(scenario())
