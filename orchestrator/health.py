"""HTTP health probe and warm-up requests against a node directly (never through the balancer).

A node counts as healthy only when its own URL answers as expected; during a soak it must keep
answering so for the whole time, or the node is not put back.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class HealthSpec:
    url: str
    expect_status: int = 200
    body_contains: str | None = None
    timeout: float = 5
    retries: int = 10
    interval: float = 1
    warmup_urls: tuple[str, ...] = ()
    soak_seconds: float = 0
    ca_file: str | None = None  # https: verify against this bundle instead of the system's CAs
    tls_verify: bool = True


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str  # e.g. "200 in 12 ms" or "connection refused"


class Unhealthy(Exception):
    def __init__(self, url: str, detail: str, attempts: int) -> None:
        self.url = url
        self.detail = detail
        self.attempts = attempts
        super().__init__(f"{url}: {detail} (after {attempts} attempt{'s' if attempts != 1 else ''})")


class HealthChecker:
    """One HTTP client for the whole run: connection pooling across nodes, no proxies from the
    environment (health must reach the node itself)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def __aenter__(self) -> HealthChecker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    def _tls(self, spec: HealthSpec) -> ssl.SSLContext | bool:
        """aiohttp's `ssl` argument: True (system CAs), False (no verification), or a context for a
        CA bundle, built once per bundle."""
        if not spec.tls_verify:
            return False
        if spec.ca_file is None:
            return True
        if spec.ca_file not in self._contexts:
            self._contexts[spec.ca_file] = ssl.create_default_context(cafile=spec.ca_file)
        return self._contexts[spec.ca_file]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, spec: HealthSpec, url: str | None = None) -> Probe:
        target = url or spec.url
        started = time.monotonic()
        try:
            async with self._client().get(
                target,
                timeout=aiohttp.ClientTimeout(total=spec.timeout),
                allow_redirects=False,
                ssl=self._tls(spec),
            ) as resp:
                body = await resp.text(errors="replace")
        except TimeoutError:
            return Probe(False, f"no answer within {spec.timeout:g}s")
        except aiohttp.ClientError as exc:
            return Probe(False, _client_error(exc))
        ms = (time.monotonic() - started) * 1000
        if url is None and resp.status != spec.expect_status:
            return Probe(False, f"status {resp.status}, expected {spec.expect_status}")
        if url is not None and resp.status >= 500:
            return Probe(False, f"warm-up {target}: status {resp.status}")
        if url is None and spec.body_contains is not None and spec.body_contains not in body:
            return Probe(False, f"status {resp.status} but body lacks {spec.body_contains!r}")
        return Probe(True, f"{resp.status} in {ms:.0f} ms")

    async def wait_healthy(self, spec: HealthSpec) -> str:
        """Probe until healthy, at most `retries` + 1 times; raise Unhealthy with the last answer."""
        last = Probe(False, "not probed")
        attempts = 0
        for attempt in range(spec.retries + 1):
            attempts = attempt + 1
            last = await self.probe(spec)
            if last.ok:
                return last.detail
            if attempt < spec.retries:
                await asyncio.sleep(spec.interval)
        raise Unhealthy(spec.url, last.detail, attempts)

    async def warm_up(self, spec: HealthSpec) -> int:
        for url in spec.warmup_urls:
            result = await self.probe(spec, url)
            if not result.ok:
                raise Unhealthy(url, result.detail, 1)
        return len(spec.warmup_urls)

    async def soak(self, spec: HealthSpec) -> int:
        """Health must hold for `soak_seconds`; returns how many probes passed."""
        deadline = time.monotonic() + spec.soak_seconds
        probes = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(spec.interval, max(0.0, deadline - time.monotonic())))
            result = await self.probe(spec)
            probes += 1
            if not result.ok:
                raise Unhealthy(spec.url, f"during soak: {result.detail}", probes)
        return probes


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed without an answer"
    return f"{type(exc).__name__}: {exc}"
