"""Workflow bookkeeping with a balancer double: what the node is recorded as when undrain is not
confirmed. (Every real phase runs end to end against the simulated farm in tests/e2e.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.actions.services import iis_restart
from orchestrator.health import HealthChecker, HealthSpec
from orchestrator.lb.base import Membership, Preflight
from orchestrator.lifecycle import PreflightPassed
from orchestrator.remote.session import Session, Target
from orchestrator.workflow import NodeJob, Timeouts, Workflow


class NeverConfirms:
    """Accepts `ready` but keeps reporting the server out of rotation."""

    name = "stuck"

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        return Preflight()

    async def state(self, lb_name: str) -> Membership:
        return Membership(rotation="out", healthy=None, sessions=0)

    async def recheck(self, lb_name: str) -> None:
        return None

    async def drain(self, lb_name: str) -> None:
        return None

    async def ready(self, lb_name: str) -> None:
        return None

    async def close(self) -> None:
        return None


class Recorded:
    def __init__(self) -> None:
        self.rotations: list[str] = []
        self.states: list[dict[str, Any]] = []

    def phase(self, node: str, phase: str, status: str, detail: str = "", error: Any = None) -> None:
        return None

    def node_state(self, node: str, **fields: Any) -> None:
        self.states.append(fields)

    def rotation(self, node: str, rotation: str) -> None:
        self.rotations.append(rotation)


async def test_undrain_that_is_not_confirmed_leaves_the_rotation_unknown() -> None:
    job = NodeJob(
        name="web-01",
        host="127.0.0.1",
        group=None,
        lb_name="web-01",
        action=iis_restart(stop_timeout=1),
        health=HealthSpec(url="http://127.0.0.1:9/healthz"),
        timeouts=Timeouts(undrain=0.3, node=10),
        call_timeout=1,
    )
    # Nothing listens on port 9: the one remote call (the final snapshot) fails at once.
    session = Session(
        Target(host="127.0.0.1", port=9, scheme="http", auth="ntlm", username="u", password="p")
    )
    recorder = Recorded()
    async with HealthChecker() as health:
        flow = Workflow(job, session, NeverConfirms(), health, recorder)
        flow.send(PreflightPassed())  # as the coordinator does once the whole fleet passed
        result = await flow.restart(start_at="undrain")
    assert result.outcome == "failed"
    # Resumed past drain it was out; once `ready` was sent it may take traffic: unknown, not out.
    assert recorder.rotations == ["out", "unknown"]
    assert result.rotation == "unknown"
    assert result.left_out_reason is not None and result.left_out_reason.startswith("undrain failed")
    assert recorder.states[-1]["rotation"] == "unknown" and recorder.states[-1]["outcome"] == "failed"
