"""The WinRM listeners of simulated nodes: `/wsman` over HTTP (5985) and HTTPS (5986) on each address.

One aiohttp low-level server answers every socket of the farm process; the node is the local address
the connection arrived on, so hundreds of nodes cost one protocol factory. Each node's listening
sockets exist only while its WinRM service runs: stopping WinRM (directly, or through HTTP) closes
them, drops the node's connections and forgets its shells, as on Windows.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from simfarm import auth, wsman
from simfarm.accounts import canonical
from simfarm.auth import AccountFile, ConnectionAuth, ListenerSecurity
from simfarm.certs import NodeCertificate
from simfarm.node import SimNode
from simfarm.shells import ShellHost
from simfarm.wsman import Request, WSManFault

HTTP_PORT = 5985
HTTPS_PORT = 5986
_SOAP = "application/soap+xml;charset=UTF-8"
_SHORT_ACTIONS = {
    wsman.CREATE: "Create",
    wsman.DELETE: "Delete",
    wsman.GET: "Get",
    wsman.COMMAND: "Command",
    wsman.SEND: "Send",
    wsman.RECEIVE: "Receive",
    wsman.SIGNAL: "Signal",
}


@dataclass(frozen=True)
class Ports:
    http: int = HTTP_PORT
    https: int = HTTPS_PORT


class WinRMService:
    """One node's WinRM service: its listeners, its connections and its shells."""

    def __init__(
        self,
        node: SimNode,
        accounts: AccountFile,
        certificate: NodeCertificate,
        ports: Ports,
        front: WinRMFront,
    ) -> None:
        self.node = node
        self.accounts = accounts
        self.ports = ports
        self.shells = ShellHost(node, node.config.winrm)
        self._front = front
        self._tls = certificate.server_context()
        allow = node.config.winrm.allow_basic_over_http
        self.security = {
            ports.http: ListenerSecurity(tls=False, allow_unencrypted=allow),
            ports.https: ListenerSecurity(
                tls=True, allow_unencrypted=allow, channel_binding=certificate.channel_binding()
            ),
        }
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self._reopening: asyncio.Task[None] | None = None
        node.on_winrm_change(self._winrm_changed)

    @property
    def listening(self) -> bool:
        return bool(self._servers)

    async def open(self) -> None:
        """Listen on both ports (when the WinRM service runs)."""
        if self._servers or not self.node.winrm_running():
            return
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.node.address else socket.AF_INET
        for port, tls in ((self.ports.http, None), (self.ports.https, self._tls)):
            server = await loop.create_server(
                self._front.protocol,
                host=self.node.address,
                port=port,
                family=family,
                ssl=tls,
                reuse_address=True,
                backlog=128,
            )
            self._servers.append(server)
            self._front.route(self.node.address, port, self)

    def close(self) -> list[asyncio.Task[None]]:
        """Refuse connections from now on, drop the live ones and forget every shell."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for transport in list(self._connections):
            transport.abort()
        return self.shells.close_all()

    async def shutdown(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
        await asyncio.gather(*self.close(), return_exceptions=True)

    def _winrm_changed(self, running: bool) -> None:
        if running:
            self._reopening = asyncio.get_running_loop().create_task(self.open())
        else:
            self.close()

    def track(self, transport: asyncio.Transport) -> None:
        self._connections.add(transport)


class WinRMFront:
    """The shared HTTP front: routes each connection to the node owning its local address."""

    def __init__(self, max_body: int) -> None:
        self.protocol = web.Server(self._handle, handler_cancellation=True)
        self._routes: dict[tuple[str, int], WinRMService] = {}
        self._conn_auth: weakref.WeakKeyDictionary[asyncio.Transport, ConnectionAuth] = (
            weakref.WeakKeyDictionary()
        )
        self._max_body = max_body

    def route(self, address: str, port: int, service: WinRMService) -> None:
        self._routes[(address, port)] = service

    async def shutdown(self) -> None:
        await self.protocol.shutdown(timeout=1.0)

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        local = transport.get_extra_info("sockname")
        service = self._routes.get((local[0], local[1]))
        if service is None:
            raise web.HTTPNotFound()
        node = service.node
        service.track(transport)
        if request.path.lower() != "/wsman":
            raise web.HTTPNotFound()
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        if node.reset_share and node.rng.random() < node.reset_share:
            node.record("winrm_reset")
            transport.abort()
            return web.Response(status=500)
        body = await self._read(request)
        reply = await _Exchange(service, self._connection(transport), request, body).run()
        if node.latency_s:
            await asyncio.sleep(node.latency_s)
        return reply

    def _connection(self, transport: asyncio.Transport) -> ConnectionAuth:
        conn = self._conn_auth.get(transport)
        if conn is None:
            conn = self._conn_auth[transport] = ConnectionAuth()
        return conn

    async def _read(self, request: BaseRequest) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self._max_body:
                raise web.HTTPRequestEntityTooLarge(max_size=self._max_body, actual_size=size)
            chunks.append(chunk)
        return b"".join(chunks)


class _Exchange:
    """One HTTP request/response on a WinRM listener: authenticate, unseal, dispatch, seal."""

    def __init__(
        self, service: WinRMService, conn: ConnectionAuth, request: BaseRequest, body: bytes
    ) -> None:
        self.service = service
        self.node = service.node
        self.conn = conn
        self.request = request
        self.body = body
        local = request.transport.get_extra_info("sockname") if request.transport else ("", 0)
        self.security = service.security[local[1]]
        self.machine = str(local[0])

    async def run(self) -> web.Response:
        verdict = auth.authenticate(
            self.request.headers.get("Authorization"),
            not self.body,
            self.conn,
            self.node,
            self.service.accounts,
            self.security,
        )
        if isinstance(verdict, auth.Rejected):
            return _unauthorized(verdict.headers)
        headers = _final_token(verdict.final_token)
        if verdict.handshake:
            return web.Response(status=200, headers=headers)
        encrypted = auth.is_encrypted(self.request.headers.get("Content-Type", ""))
        if encrypted:
            try:
                plain = auth.unseal(self.conn.context, self.body)
            except auth.SealError:
                return web.Response(status=400, headers=headers)
        elif not self.security.tls and not self.security.allow_unencrypted:
            return _unauthorized(auth.challenge_headers(self.security))
        else:
            plain = self.body
        status, payload = await self._soap(plain, verdict.user)
        if encrypted:
            content_type, payload = auth.seal(self.conn.context, payload)
        else:
            content_type = _SOAP
        return web.Response(status=status, body=payload, headers={**headers, "Content-Type": content_type})

    async def _soap(self, plain: bytes, user: str) -> tuple[int, bytes]:
        relates_to = ""
        limit = self.node.config.winrm.max_envelope_size_kb * 1024
        try:
            request = wsman.parse_request(plain)
            relates_to = request.message_id
            self._record(request, user)
            if len(plain) > limit:
                raise wsman.envelope_too_large()
            return 200, await self.service.shells.dispatch(request, user, self._client_ip(), self._url())
        except WSManFault as fault:
            return 500, wsman.fault_envelope(fault, relates_to, self.machine)

    def _record(self, request: Request, user: str) -> None:
        self.node.record(
            "winrm_request",
            action=_SHORT_ACTIONS.get(request.action, request.action),
            shell=request.shell_id,
            user=canonical(user, self.node.config.username),
        )

    def _client_ip(self) -> str:
        peer: Sequence[Any] | None = (
            self.request.transport.get_extra_info("peername") if self.request.transport else None
        )
        return str(peer[0]) if peer else ""

    def _url(self) -> str:
        return f"{self.request.scheme}://{self.request.host}/wsman"


def _unauthorized(headers: tuple[tuple[str, str], ...]) -> web.Response:
    response = web.Response(status=401)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _final_token(token: bytes | None) -> dict[str, str]:
    if token is None:
        return {}
    return dict(auth.challenge_headers(ListenerSecurity(tls=False, allow_unencrypted=False), token))
