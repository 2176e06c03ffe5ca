"""The drain timeout is the drain's own verdict, even when a count read swallows the cancellation
that should have ended the wait (asyncio.wait_for does, on Python 3.11, when the read answers just as
the timeout fires): the node fails with `timed_out` after its drain timeout, not its whole deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from orchestrator.actions.base import PhaseFailed
from orchestrator.drain import wait_drained
from orchestrator.lb.base import DrainPolicy, Membership, Preflight


class _Busy:
    """A balancer that always counts one session on the server."""

    name = "busy"

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        raise NotImplementedError

    async def state(self, server: str) -> Membership:
        return Membership(rotation="out", healthy=True, sessions=1, admin="drain", status="DRAIN")

    async def drain(self, server: str) -> None: ...
    async def recheck(self, server: str) -> None: ...
    async def ready(self, server: str) -> None: ...
    async def close(self) -> None: ...


async def _swallowing_count() -> int:
    """A node count read that, like wait_for on 3.11, returns its answer instead of the
    cancellation that arrived with it."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0.5)  # longer than the drain timeout: the cancellation lands here
    return 1


@pytest.mark.parametrize("on_timeout", ["fail", "proceed"])
def test_a_swallowed_cancellation_does_not_stretch_the_drain_timeout(on_timeout: str) -> None:
    notes: list[str] = []
    policy = DrainPolicy(drain_timeout=0.2, on_drain_timeout=on_timeout)  # type: ignore[arg-type]

    async def drain() -> str:
        # The bound is the test's guard against a hang, far above the drain timeout.
        async with asyncio.timeout(10):
            try:
                await wait_drained(_Busy(), "web-01", policy, _swallowing_count, notes.append)
            except PhaseFailed as exc:
                return exc.info.kind
        return "proceeded"

    outcome = asyncio.run(drain())
    if on_timeout == "fail":
        assert outcome == "timed_out"
    else:
        assert outcome == "proceeded"
        assert any("after the drain timeout (0.2s)" in n for n in notes), notes
