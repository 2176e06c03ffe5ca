"""What an action is, and the service-level steps they share: a stop round and a start round, each
one pipeline when services are quick, then polls of the whole set for what is left.

Each step starts from an observation (the last read, taken after the last control, or a fresh one),
so a phase can be re-run after an interruption: a service already Stopped is not stopped again, one
already Running is not started again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from orchestrator.remote import cmdlets
from orchestrator.remote.cmdlets import ServiceState
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
    # The services as this attempt last read them, after the last control it sent (by upper-cased
    # name): the next step starts from it instead of asking again. None once anything else was sent.
    observed: dict[str, ServiceState] | None = None


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


async def read_services(ctx: ActionContext, names: Sequence[str]) -> dict[str, ServiceState]:
    """The named services' states, by upper-cased name: the action's last read when it covers them
    and nothing was sent to the node since (it was taken after the last control), else a fresh
    Get-Service."""
    seen = ctx.observed
    if seen is not None and all(n.upper() in seen for n in names):
        return {n.upper(): seen[n.upper()] for n in names}
    return await cmdlets.get_services(ctx.session, names, timeout=ctx.call_timeout)


def _statuses(states: dict[str, ServiceState] | None, names: Sequence[str]) -> dict[str, str] | None:
    if states is None or any(n.upper() not in states for n in names):
        return None
    return {n: states[n.upper()].status for n in names}


# A stop refused for one of these reasons is tried again at the next poll: 1061 while the service is
# pending, a dependent not Stopped yet, or a service that went back to Running after StopPending.
_STOP_NOT_YET = {"cannot_accept_control", "dependent_services"}


def _refused(ctx: ActionContext, errors: list[ErrorInfo], retried: set[str]) -> set[str]:
    """The services whose control Windows did not take this time; any other error fails the phase."""
    names: set[str] = set()
    for err in errors:
        name = err.target or ""
        if err.kind == "cannot_accept_control":
            ctx.note(f"{name}: 1061, cannot accept control messages now; waiting")
        elif err.kind not in retried and not (err.fqid or "").startswith("StopServiceFailed"):
            raise RemoteError(err)
        names.add(name.upper())
    return names


TimedOut = Callable[[ActionContext, str, str], Awaitable[None]]


async def stop_services(
    ctx: ActionContext,
    order: Sequence[str],
    requires: Mapping[str, Sequence[str]],
    *,
    limit: float,
    timed_out: TimedOut,
) -> None:
    """Stop `order` (dependents first) and wait until every one is Stopped.

    The first round is one pipeline: a Stop-Service for each service not Stopped yet, in stop order,
    each waited on by Windows itself (so every dependent is Stopped before the next is asked, and no
    poll is needed when the services are quick), then one Get-Service of the whole set. The call is
    bounded by `limit` as well as the call timeout; what it leaves unfinished (cut short, 1061, a
    dependent not Stopped yet) goes to the per-service path: one pipeline per poll interval with a
    `-NoWait` control for each stop root that still needs one (its dependents are Stopped; Windows
    refused it with 1061 while pending, or it went back to Running), then the Get-Service of the
    set. Each service has `limit` seconds from its stop request to reach Stopped, after which
    `timed_out(ctx, name, status)` decides: it raises to fail the phase, or returns to give the
    service another `limit` (an escalation ran). Runs until done or cancelled by the phase deadline.
    """
    below = {n: _dependents_within(n, order, requires) for n in order}
    states = _statuses(ctx.observed, order)
    ctx.observed = None
    accepted: set[str] = set()
    since: dict[str, float] = {}
    noted: set[str] = set()
    pause = backoff(ctx)
    first = True
    while True:
        waited: list[str] = []
        if states is None:
            asked: list[str] = []
        elif first:
            first = False
            asked = [n for n in order if states[n] != "Stopped"]
            waited = list(asked)
        else:
            asked = [n for n in order if _may_stop(n, states, below, accepted)]
        controls = [cmdlets.stop_request([n], wait=True) for n in waited]
        if nowait := [n for n in asked if n not in waited]:
            controls.append(cmdlets.stop_request(nowait, wait=False))
        try:
            # Waiting stops are bounded by the stop limit too, so a service that hangs is seen (and
            # timed out) by the polls below rather than at the end of the call timeout.
            timeout = min(ctx.call_timeout, limit) if waited else ctx.call_timeout
            done = await cmdlets.control_and_read(ctx.session, controls, order, timeout=timeout)
        except CallTimedOut:
            if not waited:
                raise
            # Which stops the cut pipeline got to send is not known: the next round reads the set,
            # and each service's clock starts with the request the polls send it (Windows answers
            # 1061 to one already stopping). A hang is reported late (at most twice the limit);
            # a service further down a slow chain is never timed from before it was asked.
            ctx.note(f"stop round cut short after {timeout:g}s; polling")
            states = None
        else:
            # The clocks start when the call returns: a stop Windows waited on is Stopped by then,
            # and one it did not wait on (-NoWait, or refused) was sent at the end.
            ended = time.monotonic()
            for name in asked:
                since.setdefault(name, ended)
            refused = _refused(ctx, done.errors, _STOP_NOT_YET)
            for name in asked:
                if name.upper() not in refused:
                    if name not in accepted:
                        ctx.note(f"{name}: stop requested")
                    accepted.add(name)
            states = _statuses(done.states, order)
            if states is None:
                raise RemoteError(ErrorInfo(kind="not_found", message="a service of the stop set is gone"))
            for name in order:
                if states[name] == "Stopped" and name not in noted:
                    noted.add(name)
                    ctx.note(f"{name} Stopped")
            if all(states[n] == "Stopped" for n in order):
                ctx.observed = done.states
                return
            now = time.monotonic()
            for name in order:
                if states[name] != "Stopped" and name in since and now - since[name] >= limit:
                    await timed_out(ctx, name, states[name])
                    ctx.observed = None
                    since[name] = time.monotonic()
                    accepted.discard(name)
            if any(_may_stop(n, states, below, accepted) for n in order):
                continue  # a dependent just stopped: the next one need not wait for the poll
        await asyncio.sleep(pause())


def _dependents_within(name: str, order: Sequence[str], requires: Mapping[str, Sequence[str]]) -> list[str]:
    """The services of `order` that depend on `name`, directly or not."""
    by_key = {n.upper(): [d.upper() for d in requires.get(n, ())] for n in order}
    found: set[str] = set()
    todo = [name.upper()]
    while todo:
        key = todo.pop()
        for other, deps in by_key.items():
            if key in deps and other not in found and other != name.upper():
                found.add(other)
                todo.append(other)
    return [n for n in order if n.upper() in found]


def _may_stop(name: str, states: dict[str, str], below: dict[str, list[str]], accepted: set[str]) -> bool:
    status = states[name]
    if status == "Stopped" or any(states[d] != "Stopped" for d in below[name]):
        return False
    return status in ("Running", "Paused", "StartPending") or name not in accepted


async def start_services(ctx: ActionContext, order: Sequence[str], watched: Sequence[str]) -> None:
    """Start `order` (dependencies first) and wait until every one is Running.

    One pipeline: a Start-Service per service still Stopped, in order (each waits for Running, as
    Start-Service has no -NoWait; the call timeout bounds them), then one Get-Service of `watched`,
    which verify reads instead of asking again. A start slower than the call is not a failure: the
    phase timeout decides, and the polls that follow (one Get-Service each) keep watching; 1061 is
    tried again at the next poll.
    """
    read = list(dict.fromkeys([*watched, *order]))
    states = _statuses(ctx.observed, order)
    ctx.observed = None
    pause = backoff(ctx)
    while True:
        asked = [] if states is None else [n for n in order if states[n] == "Stopped"]
        try:
            done = await cmdlets.control_and_read(
                ctx.session, [cmdlets.start_request(n) for n in asked], read, timeout=ctx.call_timeout
            )
        except CallTimedOut:
            if not asked:
                raise
            # Start-Service waits for Running with no limit of its own; a service slower than one
            # call is not a failure: the phase timeout decides, and we keep watching.
            ctx.note(f"{', '.join(asked)}: still starting after {ctx.call_timeout:g}s")
            states = None
        else:
            _refused(ctx, done.errors, set())
            states = _statuses(done.states, order)
            if states is None:
                raise RemoteError(ErrorInfo(kind="not_found", message="a service to start is gone"))
            if all(states[n] == "Running" for n in order):
                for name in order:
                    ctx.note(f"{name} Running")
                ctx.observed = done.states
                return
        await asyncio.sleep(pause())


async def kill_workers(ctx: ActionContext) -> list[int]:
    """The `kill-workers` escalation: end the IIS worker processes so a stuck stop can finish."""
    ctx.observed = None
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
