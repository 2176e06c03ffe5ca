"""The website over real loopback sockets: answers follow W3SVC/WAS/pool/HTTP state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from simfarm.config import SimConfig
from simfarm.node import SimNode
from simfarm.scm import ServiceState
from simfarm.site import SiteServer
from tests.model_fixtures import booted, config, free_port, wait_until


@asynccontextmanager
async def site(cfg: SimConfig) -> AsyncIterator[tuple[SimNode, str, SiteServer]]:
    async with booted(cfg) as node:
        server = SiteServer(node)
        port = free_port()
        await server.start("127.0.0.1", port)
        try:
            yield node, f"http://127.0.0.1:{port}", server
        finally:
            await server.close()


async def get(url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status, await resp.text()


async def raw_get(url: str) -> int:
    """One request on its own connection, no client retries: the status, or ConnectionResetError."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readline()
        if not head:
            raise ConnectionResetError("connection closed without a response")
        return int(head.split()[1])
    finally:
        writer.close()


async def test_healthy_site_answers_200() -> None:
    async with site(config()) as (_, url, server):
        assert await get(url + "/healthz") == (200, "OK")
        assert (await get(url + "/"))[0] == 200
        assert server.counts[200] == 2


async def test_stopped_w3svc_gives_503_and_stopped_http_refuses_connections() -> None:
    async with site(config()) as (node, url, _):
        await node.scm.controller_stop("W3SVC", "test")
        await node.scm.wait_for("W3SVC", ServiceState.Stopped, 5)
        assert (await get(url + "/healthz"))[0] == 503
        await node.scm.controller_stop("HTTP", "test")
        await node.scm.wait_for("HTTP", ServiceState.Stopped, 5)
        await wait_until(lambda: not _.listening)
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(url + "/healthz")
        await node.scm.start("W3SVC", "test")
        await node.scm.wait_for("W3SVC", ServiceState.Running, 5)
        await wait_until(lambda: _.listening)
        assert (await get(url + "/healthz"))[0] == 200


async def test_graceful_stop_finishes_in_flight_and_refuses_new_with_503() -> None:
    async with site(config()) as (node, url, _):
        slow = asyncio.ensure_future(get(url + "/slow?seconds=0.5"))
        await wait_until(
            lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
        )
        await node.scm.controller_stop("W3SVC", "test")
        assert node.scm.state("W3SVC") == ServiceState.StopPending
        assert (await get(url + "/healthz"))[0] == 503
        assert await slow == (200, "done")
        await node.scm.wait_for("W3SVC", ServiceState.Stopped, 5)


async def test_shutdown_time_limit_terminates_a_worker_that_does_not_drain() -> None:
    async with site(config(shutdown_time_limit=0.2)) as (node, url, server):
        slow = asyncio.ensure_future(raw_get(url + "/slow?seconds=5"))
        await wait_until(
            lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
        )
        await node.scm.controller_stop("W3SVC", "test")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(slow, 3)
        assert await node.scm.wait_for("W3SVC", ServiceState.Stopped, 3)
        assert server.aborted == 1


async def test_killing_the_worker_resets_in_flight_requests() -> None:
    async with site(config()) as (node, url, server):
        slow = asyncio.ensure_future(raw_get(url + "/slow?seconds=5"))
        await wait_until(
            lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
        )
        worker = node.iis.site_pool.worker
        assert worker is not None
        node.iis.processes.kill(worker.pid, "test")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(slow, 3)
        assert server.aborted == 1
        assert (await get(url + "/healthz"))[0] == 200  # a fresh worker starts on demand


async def test_slow_warmup_and_unhealthy_after_start() -> None:
    faults: list[dict[str, Any]] = [
        {"kind": "slow_warmup", "seconds": 0.3},
        {"kind": "unhealthy_after_start"},
    ]
    async with site(config(faults)) as (node, url, _):
        assert await get(url + "/healthz") == (200, "OK")  # boot: warm workers, healthy
        await node.scm.controller_stop("W3SVC", "test")
        await node.scm.wait_for("W3SVC", ServiceState.Stopped, 5)
        await node.scm.start("W3SVC", "test")
        await node.scm.wait_for("W3SVC", ServiceState.Running, 5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await get(url + "/healthz"))[0] == 500
        assert loop.time() - began >= 0.3
        began = loop.time()
        await get(url + "/healthz")
        assert loop.time() - began < 0.3


async def test_recycle_is_overlapped() -> None:
    async with site(config()) as (node, url, _):
        slow = asyncio.ensure_future(get(url + "/slow?seconds=0.4"))
        await wait_until(
            lambda: node.iis.site_pool.worker is not None and node.iis.site_pool.worker.in_flight == 1
        )
        old = node.iis.site_pool.worker
        node.iis.recycle_pool(node.iis.site_pool)
        assert (await get(url + "/healthz"))[0] == 200
        assert node.iis.site_pool.worker is not old
        assert await slow == (200, "done")
