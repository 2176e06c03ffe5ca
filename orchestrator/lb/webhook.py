"""The `http` driver: a balancer's own HTTP API (nginx Plus, the HAProxy Data Plane API, a cloud or
in-house API), one request per operation, without a shim.

- Each operation is a method, a URL and an optional JSON body, every string templated with the
  node's fields ({lb_name}, {name}, {host}).
- The state is read from the JSON answer by dotted paths, with value mappings (`enabled` -> in).
- An auth header comes from an environment variable, registered for redaction and never logged.
- TLS certificates are always verified (a private CA through ca_file).
- No answer, 429, 502, 503 and 504 are transient (retried with backoff by the caller); 404 is an
  unknown server; 401 and 403 a permission error; any other error status a refusal.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from orchestrator.inventory.model import HttpCall, HttpField, HttpLbSettings, HttpState
from orchestrator.lb.base import AdminState, LBError, Membership, Preflight, Rotation
from orchestrator.log import register_secret

_TRANSIENT_STATUS = {429, 502, 503, 504}


def fill(template: Any, fields: Mapping[str, str]) -> Any:
    """Every string in a JSON-like value, templated."""
    if isinstance(template, str):
        return template.format(**fields)
    if isinstance(template, dict):
        return {k: fill(v, fields) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, fields) for v in template]
    return template


def pick(document: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0.c`); None when any step is missing."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def mapped(document: Any, spec: HttpField | None) -> Any:
    if spec is None:
        return None
    value = pick(document, spec.path)
    key = value if isinstance(value, str) else json.dumps(value)
    return spec.map.get(key, value)


def read_state(document: Any, spec: HttpState) -> Membership:
    raw_rotation = mapped(document, spec.rotation)
    rotation: Rotation = raw_rotation if raw_rotation in ("in", "out") else "unknown"
    healthy = mapped(document, spec.healthy)
    sessions = mapped(document, spec.sessions)
    admin: AdminState | None = {"in": "ready", "out": "drain"}.get(rotation)  # type: ignore[assignment]
    return Membership(
        rotation=rotation,
        healthy=healthy if isinstance(healthy, bool) else None,
        sessions=sessions if isinstance(sessions, int) and not isinstance(sessions, bool) else None,
        admin=admin,
        status=str(pick(document, spec.rotation.path)),
    )


class HttpBalancer:
    def __init__(
        self,
        settings: HttpLbSettings,
        nodes: Mapping[str, Mapping[str, str]],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        s = settings
        self.nodes = nodes
        self.timeout = s.timeout
        self.calls: dict[str, HttpCall | None] = {
            "drain": s.drain or (HttpCall(method="POST", url=s.drain_url) if s.drain_url else None),
            "ready": s.ready or (HttpCall(method="POST", url=s.ready_url) if s.ready_url else None),
            "recheck": s.recheck,
        }
        self.state_call: HttpState = s.state or HttpState(url=s.status_url or "")
        self.name = f"http {self.state_call.url.split('/')[2] if '//' in self.state_call.url else ''}"
        env = os.environ if environ is None else environ
        self._auth: tuple[str, str] | None = None
        self._missing_env: str | None = None
        if s.token_env or s.auth_env:
            var = s.token_env or s.auth_env or ""
            value = env.get(var)
            if not value:
                self._missing_env = var
            else:
                register_secret(value)
                self._auth = (s.auth_header, f"Bearer {value}" if s.token_env else value)
        self._ssl = ssl.create_default_context(cafile=s.ca_file) if s.ca_file else True
        self._session: aiohttp.ClientSession | None = None

    def _fields(self, server: str) -> Mapping[str, str]:
        return self.nodes.get(server, {"lb_name": server, "name": server, "host": ""})

    async def _request(self, operation: str, call: HttpCall, server: str) -> Any:
        if self._missing_env is not None:
            raise LBError(
                "permission", f"environment variable {self._missing_env} (the API credential) is not set"
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        fields = self._fields(server)
        url = call.url.format(**fields)
        headers = dict([self._auth]) if self._auth else {}
        body = fill(call.body, fields)
        what = f"{operation} {server} ({call.method} {url})"
        try:
            async with self._session.request(
                call.method,
                url,
                json=body if call.body is not None else None,
                headers=headers,
                ssl=self._ssl,
            ) as resp:
                text = await resp.text()
                status = resp.status
        except TimeoutError:
            raise LBError("unreachable", f"{what}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise LBError("unreachable", f"{what}: {exc}") from None
        if status < 400:
            try:
                return json.loads(text) if text.strip() else None
            except ValueError:
                if operation == "state":
                    raise LBError("refused", f"{what}: the answer is not JSON: {text[:200]!r}") from None
                return None
        brief = text.strip().splitlines()[0][:200] if text.strip() else ""
        message = f"{what}: HTTP {status} {brief}".strip()
        if status in _TRANSIENT_STATUS:
            raise LBError("unreachable", message)
        if status == 404:
            raise LBError("unknown_server", message)
        if status in (401, 403):
            raise LBError("permission", message)
        raise LBError("refused", message)

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        return Preflight(before={s: await self.state(s) for s in servers})

    async def state(self, server: str) -> Membership:
        document = await self._request("state", self.state_call, server)
        return read_state(document, self.state_call)

    async def _call(self, operation: str, server: str) -> None:
        call = self.calls[operation]
        if call is not None:
            await self._request(operation, call, server)

    async def drain(self, server: str) -> None:
        await self._call("drain", server)

    async def recheck(self, server: str) -> None:
        await self._call("recheck", server)

    async def ready(self, server: str) -> None:
        await self._call("ready", server)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
