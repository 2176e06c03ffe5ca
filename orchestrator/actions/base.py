"""What an action is, and the service-level steps they share: stop, start and wait by polling.

Each step observes before it acts, so a phase can be re-run after an interruption: a service already
Stopped is not stopped again, one already Running is not started again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from orchestrator.remote import cmdlets
from orchestrator.remote.errors import CallTimedOut, RemoteError
from orchestrator.remote.session import Session
from orchestrator.results import ErrorInfo

Note = Callable[[str], None]
T = TypeVar("T")


class PhaseFailed(Exception):
    """A phase could not reach its goal; `info` says why, `detail` what was left in which state."""

    def __init__(self, info: ErrorInfo, detail: str = "") -> None:
        self.info = info
        self.detail = detail
        super().__init__(info.message)


@dataclass
class ActionContext:
    session: Session
    call_timeout: float
    escalation: str  # none | kill-workers
    note: Note  # records progress lines into the phase's detail and the event stream
    poll_min: float = 0.1
    poll_max: float = 1.0
    # Filled by preflight and used by the later phases (and recorded in the result).
    services_before: dict[str, str] = field(default_factory=dict)
    pools_before: dict[str, str] = field(default_factory=dict)  # app pool -> state, when the action has any


class Action(Protocol):
    name: str

    async def preflight(self, ctx: ActionContext) -> None:
        """Read what the action will touch; refuse what it must not do. Changes nothing."""

    async def stop(self, ctx: ActionContext) -> None: ...

    async def start(self, ctx: ActionContext) -> None: ...

    def watched_services(self) -> Sequence[str]:
        """Services whose state goes into the result before and after."""
        ...


def backoff(ctx: ActionContext) -> Callable[[], float]:
    """Poll intervals that start short (fast services) and grow (slow ones), capped."""
    delay = ctx.poll_min

    def nxt() -> float:
        nonlocal delay
        current = delay
        delay = min(delay * 1.5, ctx.poll_max)
        return current

    return nxt


async def service_status(ctx: ActionContext, name: str) -> str:
    states = await cmdlets.get_services(ctx.session, [name], timeout=ctx.call_timeout)
    return states[name.upper()].status


async def stop_and_wait(ctx: ActionContext, name: str) -> None:
    """Stop one service (its dependents must already be stopped) and wait until Stopped.

    Runs until cancelled by the phase's deadline: the caller owns the timeout.
    """
    pause = backoff(ctx)
    sent = False
    while True:
        status = await service_status(ctx, name)
        if status == "Stopped":
            ctx.note(f"{name} Stopped")
            return
        if status in ("Running", "Paused", "StartPending") or not sent:
            busy = await cmdlets.stop_service(ctx.session, name, timeout=ctx.call_timeout)
            if busy is None:
                if not sent:
                    ctx.note(f"{name}: stop requested")
                sent = True
            # 1061 while pending: the service cannot take controls right now; keep waiting.
        await asyncio.sleep(pause())


async def start_and_wait(ctx: ActionContext, name: str) -> None:
    """Start one service (its dependencies must already run) and wait until Running."""
    pause = backoff(ctx)
    while True:
        status = await service_status(ctx, name)
        if status == "Running":
            ctx.note(f"{name} Running")
            return
        if status == "Stopped":
            try:
                await cmdlets.start_service(ctx.session, name, timeout=ctx.call_timeout)
            except CallTimedOut:
                # Start-Service waits for Running with no limit of its own; a service slower than
                # one call is not a failure: the phase timeout decides, and we keep watching.
                ctx.note(f"{name}: still starting after {ctx.call_timeout:g}s")
        await asyncio.sleep(pause())


async def kill_workers(ctx: ActionContext) -> list[int]:
    """The `kill-workers` escalation: end the IIS worker processes so a stuck stop can finish."""
    pids = await cmdlets.worker_process_ids(ctx.session, timeout=ctx.call_timeout)
    for pid in pids:
        await cmdlets.stop_process(ctx.session, pid, timeout=ctx.call_timeout)
    ctx.note(f"escalation kill-workers: stopped w3wp {sorted(pids)}")
    return pids


async def reconnect(ctx: ActionContext, probe: Callable[[], Awaitable[T]]) -> T:
    """Retry `probe` (a remote call) with backoff until it succeeds or the phase deadline cancels us;
    transport errors are expected while WinRM itself restarts. Auth errors are not retried: they will
    not heal by waiting."""
    pause = backoff(ctx)
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await probe()
        except RemoteError as err:
            # The session has already dropped its dead pool: the next call logs on again.
            if err.kind != "transport":
                raise
        else:
            if attempts > 1:
                ctx.note(f"WinRM reachable again after {attempts} attempts")
            return result
        await asyncio.sleep(pause())
