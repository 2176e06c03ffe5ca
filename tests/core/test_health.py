"""The health probe against real HTTP(S) servers on loopback: status, body, TLS with a private CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from simfarm.certs import FarmCA

from orchestrator.health import HealthChecker, HealthSpec, Unhealthy

ADDRESS = "127.0.61.1"
# Every test here listens on 127.0.61.1: never two at once in parallel workers.
pytestmark = pytest.mark.xdist_group("127.0.61.x")


async def _serve(app: web.Application, port: int, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, ADDRESS, port, ssl_context=tls).start()
    return runner


def _app(status: int = 200, body: str = "OK") -> web.Application:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_get("/healthz", handler)
    return app


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An https health endpoint whose certificate a private CA issued: (url, CA bundle)."""
    ca = FarmCA.create(tmp_path / "pki")
    cert = ca.issue("web-01", ADDRESS)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.cert_file, cert.key_file)
    runner = await _serve(_app(), 18443, tls)
    yield f"https://{ADDRESS}:18443/healthz", ca.ca_file
    await runner.cleanup()


async def test_https_health_url_verified_against_the_inventorys_ca(https: tuple[str, Path]) -> None:
    url, ca_file = https
    async with HealthChecker() as checker:
        assert (await checker.probe(HealthSpec(url=url, ca_file=str(ca_file)))).ok
        # The system's CAs do not know the private CA: verification fails, clearly.
        refused = await checker.probe(HealthSpec(url=url))
        assert not refused.ok and "certificate" in refused.detail.lower()
        # Turned off (per node, with a warning at load time): the answer alone counts.
        assert (await checker.probe(HealthSpec(url=url, tls_verify=False))).ok


async def test_status_and_body_expectations() -> None:
    runner = await _serve(_app(status=503, body="Service Unavailable"), 18080)
    try:
        async with HealthChecker() as checker:
            url = f"http://{ADDRESS}:18080/healthz"
            probe = await checker.probe(HealthSpec(url=url))
            assert not probe.ok and probe.detail == "status 503, expected 200"
            assert (await checker.probe(HealthSpec(url=url, expect_status=503))).ok
            wrong_body = await checker.probe(HealthSpec(url=url, expect_status=503, body_contains="OK!"))
            assert not wrong_body.ok and "body lacks 'OK!'" in wrong_body.detail
            with pytest.raises(Unhealthy) as caught:
                await checker.wait_healthy(HealthSpec(url=url, retries=2, interval=0))
            assert caught.value.attempts == 3
    finally:
        await runner.cleanup()


async def test_nothing_listening_is_a_clear_failure() -> None:
    async with HealthChecker() as checker:
        probe = await checker.probe(HealthSpec(url=f"http://{ADDRESS}:18081/healthz", timeout=2))
    assert not probe.ok and probe.detail.startswith("cannot connect")
