"""The remote session against a simulated node: pool reuse, and recovery when WinRM restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from simfarm.config import SimConfig
from simfarm.farm import Farm, serve_farm
from simfarm.scm import ServiceState

from orchestrator.remote import cmdlets
from orchestrator.remote.errors import RemoteError
from orchestrator.remote.session import Session, Target

ADDRESS = "127.0.60.1"
# Every test here listens on 127.0.60.x: never two at once in parallel workers.
pytestmark = pytest.mark.xdist_group("127.0.60.x")
FAST = {"timings": {"default": {"stop": {"low": 0.01, "high": 0.02}, "start": {"low": 0.01, "high": 0.02}}}}


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    f = await serve_farm(
        [("web-001", ADDRESS)], SimConfig.model_validate(FAST), tmp_path, tmp_path / "events.jsonl"
    )
    yield f
    await f.close()


def target(password: str = "Demo-Passw0rd!") -> Target:
    return Target(
        host=ADDRESS, port=5985, scheme="http", auth="ntlm", username="orchestrator-demo", password=password
    )


def pools_opened(farm: Farm) -> int:
    events = Path(farm.describe()["events"]).read_text().splitlines()
    return sum('"winrm_request"' in e and '"Create"' in e for e in events)


async def test_one_pool_serves_all_calls_and_is_rebuilt_after_winrm_restarts(farm: Farm) -> None:
    node = farm.node("web-001")
    session = Session(target())
    for _ in range(3):
        states = await cmdlets.get_services(session, ["W3SVC"], timeout=10)
        assert states["W3SVC"].status == "Running"
    assert pools_opened(farm) == 1

    # WinRM restarts under the session: its shell is gone and the first attempt fails.
    await node.scm.controller_stop("WinRM", "test")
    assert await node.scm.wait_for("WinRM", ServiceState.Stopped, 5)
    await node.scm.start("WinRM", "test")
    assert await node.scm.wait_for("WinRM", ServiceState.Running, 5)

    states = await cmdlets.get_services(session, ["WinRM"], timeout=10)
    assert states["WINRM"].status == "Running"
    assert pools_opened(farm) == 2
    assert session.connects == 2
    await session.close()


async def test_wrong_password_is_an_auth_error_and_not_retried(farm: Farm) -> None:
    session = Session(target("wrong"))
    with pytest.raises(RemoteError) as caught:
        await cmdlets.get_services(session, ["W3SVC"], timeout=10)
    assert caught.value.kind == "auth"
    assert pools_opened(farm) == 0  # never got past authentication


async def test_missing_service_is_classified_not_found(farm: Farm) -> None:
    session = Session(target())
    with pytest.raises(RemoteError) as caught:
        await cmdlets.get_services(session, ["NoSuchService"], timeout=10)
    assert caught.value.kind == "not_found"
    assert caught.value.info.fqid is not None and caught.value.info.fqid.startswith(
        "NoServiceFoundForGivenName"
    )
    await session.close()


async def test_cancelling_a_call_blocked_on_a_slow_node_returns_at_once(tmp_path: Path) -> None:
    slow = SimConfig.model_validate(
        {**FAST, "nodes": {"web-001": {"faults": [{"kind": "latency", "ms": 3000}]}}}
    )
    f = await serve_farm([("web-001", "127.0.60.2")], slow, tmp_path / "slow", tmp_path / "slow.jsonl")
    try:
        session = Session(
            Target(
                host="127.0.60.2",
                port=5985,
                scheme="http",
                auth="ntlm",
                username="orchestrator-demo",
                password="Demo-Passw0rd!",
            )
        )
        call = asyncio.create_task(cmdlets.get_services(session, ["W3SVC"], timeout=60))
        await asyncio.sleep(0.5)  # the worker is now waiting on the node's 3 s answer
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # Returned without waiting for the node; the blocked request ends in its daemon thread.
        assert time.monotonic() - started < 1.0
    finally:
        await f.close()
