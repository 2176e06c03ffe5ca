"""The node's website: a real HTTP server whose answers follow the simulated IIS state.

- HTTP (HTTP.sys) not running: the listening socket is closed, so connections are refused.
- W3SVC or WAS not running, or the pool not Started: 503, as HTTP.sys answers for a stopped pool.
- A graceful stop lets in-flight requests finish (bounded by shutdownTimeLimit); new ones get 503.
- A killed worker process drops its in-flight requests: their connections are reset.
Successful requests are counted (`counts`), failures are also recorded one by one in the event log,
which keeps the log small for farms of hundreds of nodes polled continuously.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from aiohttp import web

from simfarm.iis import PoolState, Request
from simfarm.scm import Service, ServiceState

if TYPE_CHECKING:
    from simfarm.node import SimNode

UNAVAILABLE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    "<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2>"
    "<hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>\r\n"
)


class SiteServer:
    """The Default Web Site of one node, served on (address, port) while HTTP.sys runs."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.counts: Counter[int] = Counter()
        self.aborted = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._endpoint: tuple[str, int] | None = None
        self._lock = asyncio.Lock()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._holds: dict[str, asyncio.Event] = {}  # /slow?hold=KEY requests wait for /release?key=KEY

    async def start(self, address: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/", self._handle)
        app.router.add_get("/healthz", self._handle)
        app.router.add_get("/slow", self._handle)
        app.router.add_get("/release", self._release)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self._endpoint = (address, port)
        self.node.scm.on_state(self._service_changed)
        await self._reconcile()

    async def close(self) -> None:
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            await asyncio.gather(self._reconcile_task, return_exceptions=True)
        async with self._lock:
            if self._runner is not None:
                await self._runner.cleanup()
            self._runner = None
            self._site = None
        self.node.record("http_summary", counts=dict(self.counts), aborted=self.aborted)

    @property
    def listening(self) -> bool:
        return self._site is not None

    def _service_changed(self, svc: Service, state: ServiceState, abrupt: bool) -> None:
        if svc.name == "HTTP" and self._runner is not None:
            self._reconcile_task = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        """Open the socket while HTTP runs, close it otherwise (serialised: changes can be quick)."""
        async with self._lock:
            if self._runner is None or self._endpoint is None:
                return
            wanted = self.node.scm.state("HTTP") == ServiceState.Running
            if wanted and self._site is None:
                self._site = web.TCPSite(self._runner, *self._endpoint, reuse_address=True)
                await self._site.start()
                self.node.record("http_listening", address=self._endpoint[0], port=self._endpoint[1])
            elif not wanted and self._site is not None:
                site, self._site = self._site, None
                await site.stop()
                self.node.record("http_closed", address=self._endpoint[0], port=self._endpoint[1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        iis = self.node.iis
        pool = iis.site_pool
        if not iis.serving() or pool.state != PoolState.Started:
            return self._answer(request, 503, UNAVAILABLE, "text/html")
        worker = pool.acquire(iis.warmup_seconds())
        req = worker.begin(request.method, request.path_qs, request.remote or "")
        try:
            if not await worker.wait_ready():
                return self._answer(request, 503, UNAVAILABLE, "text/html")
            if request.path == "/slow" and "hold" in request.query:
                released = self._holds.setdefault(request.query["hold"], asyncio.Event())
                if not await _held(req, released):
                    return self._reset(request)
            elif request.path == "/slow":
                try:
                    seconds = float(request.query.get("seconds", "1"))
                except ValueError:
                    return self._answer(request, 400, "Bad Request", "text/plain")
                if not await _work(req, seconds):
                    return self._reset(request)
            if req.aborted.is_set():
                return self._reset(request)
        finally:
            worker.end(req)
        if request.path == "/healthz":
            if self.node.site_unhealthy:
                return self._answer(request, 500, "Unhealthy", "text/plain")
            return self._answer(request, 200, "OK", "text/plain")
        if self.node.site_errors:
            return self._answer(request, 500, "Internal Server Error", "text/plain")
        if request.path == "/slow":
            return self._answer(request, 200, "done", "text/plain")
        return self._answer(
            request,
            200,
            f"<html><body><h1>IIS Windows Server</h1><p>{self.node.name}</p></body></html>",
            "text/html",
        )

    async def _release(self, request: web.Request) -> web.Response:
        """A control for tests, outside the site's pipeline: ends the requests held under `key`, so a
        test decides when an in-flight request finishes instead of guessing a duration."""
        self._holds.setdefault(request.query.get("key", ""), asyncio.Event()).set()
        return web.Response(text="released", content_type="text/plain")

    def _answer(self, request: web.Request, status: int, body: str, content_type: str) -> web.Response:
        self.counts[status] += 1
        # Failures and health probes one by one (tests prove a node was checked before it counted
        # as done); ordinary successes only as counts, to keep the log small for large farms.
        if status != 200 or request.path == "/healthz":
            self.node.record("http_request", path=request.path, status=status)
        return web.Response(
            status=status, text=body, content_type=content_type, headers={"Server": "Microsoft-IIS/10.0"}
        )

    def _reset(self, request: web.Request) -> web.Response:
        """The worker died under the request: the client sees its connection reset."""
        self.aborted += 1
        self.node.record("http_request", path=request.path, status=0, aborted=True)
        if request.transport is not None:
            request.transport.abort()
        # Nothing reaches the client: the connection is gone before the response is written.
        return web.Response(status=500)


async def _held(req: Request, released: asyncio.Event) -> bool:
    """Run until released unless the worker dies first; whether the work completed."""
    waits = [asyncio.ensure_future(released.wait()), asyncio.ensure_future(req.aborted.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return not req.aborted.is_set()


async def _work(req: Request, seconds: float) -> bool:
    """Run for `seconds` unless the worker dies first; whether the work completed."""
    try:
        await asyncio.wait_for(req.aborted.wait(), seconds)
    except TimeoutError:
        return True
    return False
