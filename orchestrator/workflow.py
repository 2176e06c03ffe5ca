"""One node's phases: preflight, drain, stop, start, verify, undrain.

This is the only place that sequences a node. Each phase has its own timeout inside the node's
overall deadline; each observes before it acts, so a resumed run can re-enter at any phase. A node is
put back in rotation only after verify passed, and a failed node is recorded with the phase, the
classified error and whether it is out of rotation (the journal is written before we move on).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from orchestrator.actions.base import Action, ActionContext, PhaseFailed, read_services
from orchestrator.drain import rejoin, take_out, wait_drained
from orchestrator.health import HealthChecker, HealthSpec, Unhealthy
from orchestrator.journal import Before
from orchestrator.lb.base import DrainPolicy, LBError, LoadBalancer
from orchestrator.lifecycle import (
    Begin,
    Effect,
    Event,
    Lifecycle,
    PhaseFinished,
    PreflightFailed,
    PreflightPassed,
    Record,
    Signal,
)
from orchestrator.lifecycle import PhaseFailed as PhaseFailedEvent
from orchestrator.remote import cmdlets
from orchestrator.remote.errors import RemoteError
from orchestrator.remote.session import Session
from orchestrator.results import (
    ErrorInfo,
    NodeOutcome,
    NodeResult,
    Phase,
    PhaseOutcome,
    PhaseResult,
    PhaseStatus,
    Rotation,
    utc_now,
)


@dataclass(frozen=True)
class Timeouts:
    preflight: float = 60
    drain: float = 300
    stop: float | None = 120  # None: bounded only by the node deadline (the action times itself)
    start: float = 120
    verify: float = 120
    undrain: float = 60
    node: float = 900

    def of(self, phase: Phase) -> float | None:
        value = getattr(self, phase)
        return None if value is None else float(value)


@dataclass
class NodeJob:
    """Everything the workflow needs to know about one node, already resolved from the inventory."""

    name: str
    host: str
    group: str | None
    lb_name: str
    action: Action
    health: HealthSpec
    timeouts: Timeouts
    escalation: str = "none"
    call_timeout: float = 20
    poll_max: float = 1.0
    drain: DrainPolicy = field(default_factory=DrainPolicy)
    drained_earlier: bool = False  # resumed: the balancer's DRAIN on this node is the earlier run's


class Recorder(Protocol):
    """Where progress goes (journal, event stream, console, log). Called before the workflow moves
    on, so a crash right after leaves an accurate record."""

    def phase(
        self, node: str, phase: Phase, status: PhaseStatus, detail: str = "", error: ErrorInfo | None = None
    ) -> None: ...

    def node_state(
        self,
        node: str,
        *,
        rotation: Rotation,
        services: dict[str, str],
        outcome: NodeOutcome,
        reason: str | None,
    ) -> None: ...

    def rotation(self, node: str, rotation: Rotation) -> None:
        """The node left or rejoined rotation; recorded at once, so a crash cannot hide it."""
        ...


@dataclass
class Workflow:
    job: NodeJob
    session: Session
    lb: LoadBalancer
    health: HealthChecker
    recorder: Recorder
    result: NodeResult = field(init=False)
    ctx: ActionContext = field(init=False)
    life: Lifecycle = field(init=False)
    _notes: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.life = Lifecycle(self.job.name)
        self.result = NodeResult(
            name=self.job.name, host=self.job.host, group=self.job.group, outcome="not_started"
        )
        self.ctx = ActionContext(
            session=self.session,
            call_timeout=self.job.call_timeout,
            escalation=self.job.escalation,
            note=self._notes.append,
            poll_max=self.job.poll_max,
        )

    # --- entry points ---------------------------------------------------------------------------

    def send(self, event: Event) -> list[Effect]:
        """Feed the node's lifecycle (the only owner of its fate) and mirror its decision in the
        result. Records that need no remote call are made here; the rest is returned."""
        effects = self.life.send(event)
        self.result.outcome = self.life.outcome
        self.result.left_out_reason = self.life.reason
        rest: list[Effect] = []
        for effect in effects:
            if isinstance(effect, Record) and not effect.observe:
                self._record_node(effect)
            else:
                rest.append(effect)
        return rest

    async def preflight(self) -> bool:
        """Read-only checks; True when the node may be restarted. Touches nothing."""
        error = await self._phase("preflight", self._preflight)
        self.send(PreflightPassed() if error is None else PreflightFailed())
        return error is None

    async def observe_rotation(self) -> None:
        """Read the node's rotation from the balancer (read-only), for a node this run leaves alone."""
        try:
            membership = await asyncio.wait_for(self.lb.state(self.job.lb_name), self.job.timeouts.preflight)
        except (LBError, TimeoutError):
            return  # stays unknown: said as it is
        self._rotation(membership.rotation)

    def before(self) -> Before:
        """What ran on the node before this run changes it (after preflight, or adopted)."""
        return Before(
            services=dict(self.result.services_before),
            pools=dict(self.ctx.pools_before),
            rotation=self.result.rotation,
        )

    def adopt_before(self, before: Before) -> None:
        """Picking up an earlier run's node: what ran before *its* first change decides what must
        run again, not what it left stopped."""
        self.ctx.services_before = dict(before.services)
        self.ctx.pools_before = dict(before.pools)
        self.result.services_before = dict(before.services)

    async def restart(self, start_at: Phase = "drain") -> NodeResult:
        """Run the phases from `start_at` to the end within the node's deadline, as the lifecycle
        asks, feeding each phase's result back to it."""
        self.result.started_at = utc_now()
        effects = self.send(Begin(start_at))
        if start_at not in ("preflight", "drain"):
            self._rotation("out")  # resumed past drain: the earlier run took it out of rotation
        steps: dict[Phase, Callable[[], Awaitable[None]]] = {
            "drain": self._drain,
            "stop": lambda: self.job.action.stop(self.ctx),
            "start": lambda: self.job.action.start(self.ctx),
            "verify": self._verify,
            "undrain": self._undrain,
        }
        deadline = time.monotonic() + self.job.timeouts.node
        final: Record | None = None
        try:
            while effects:
                effect = effects.pop(0)
                if isinstance(effect, Record):
                    final = effect
                    continue
                error = await self._phase(effect.phase, steps[effect.phase], deadline)
                event: Event = (
                    PhaseFinished(effect.phase)
                    if error is None
                    else PhaseFailedEvent(
                        effect.phase,
                        error.message,
                        self.result.rotation,
                        timed_out=error.kind in ("timed_out", "deadline"),
                    )
                )
                effects.extend(self.send(event))
        except asyncio.CancelledError:
            (final,) = (e for e in self.send(Signal(self.result.rotation)) if isinstance(e, Record))
            raise
        finally:
            # A bug of ours leaves the lifecycle in its phase: recorded as interrupted there.
            await self._finish(final or Record(self.life.outcome, self.life.reason, observe=True))
        return self.result

    # --- phases ---------------------------------------------------------------------------------

    async def _preflight(self) -> None:
        # The balancer first: a node refused by its own checks still has a known rotation.
        membership = await self.lb.state(self.job.lb_name)
        self._rotation(membership.rotation)
        await self.job.action.preflight(self.ctx)
        self.result.services_before = dict(self.ctx.services_before)

    async def _drain(self) -> None:
        await take_out(self.lb, self.job.lb_name, self._rotation, drained_earlier=self.job.drained_earlier)
        await wait_drained(
            self.lb, self.job.lb_name, self.job.drain, self._in_flight_on_node, self._notes.append
        )

    async def _in_flight_on_node(self) -> int | None:
        return await cmdlets.requests_in_flight(self.session, timeout=self.job.call_timeout)

    async def _verify(self) -> None:
        services = self.job.action.watched_services()
        states = await read_services(self.ctx, services)
        expected = self._expected()
        not_running = sorted(
            s.name for s in states.values() if s.status != "Running" and s.name.upper() in expected
        )
        if not_running:
            raise PhaseFailed(ErrorInfo(kind="health", message=f"not Running: {', '.join(not_running)}"))
        try:
            detail = await self.health.wait_healthy(self.job.health)
            self._notes.append(f"health {self.job.health.url}: {detail}")
            if self.job.health.warmup_urls:
                self._notes.append(f"{await self.health.warm_up(self.job.health)} warm-up requests")
            if self.job.health.soak_seconds > 0:
                self._notes.append(f"soak: {await self.health.soak(self.job.health)} probes held")
        except Unhealthy as exc:
            raise PhaseFailed(ErrorInfo(kind="health", message=str(exc), target=exc.url)) from None

    async def _undrain(self) -> None:
        await rejoin(self.lb, self.job.lb_name, self.job.drain, self._rotation, self._notes.append)

    def _expected(self) -> set[str]:
        """Upper-cased names of the services that must run: those that ran before (an operator's
        stopped service is left alone and not counted against health). Windows names are
        case-insensitive, and inventories do not always spell them as Get-Service does."""
        before = {name.upper(): status for name, status in self.result.services_before.items()}
        watched = (n.upper() for n in self.job.action.watched_services())
        return {n for n in watched if before.get(n, "Running") == "Running"}

    # --- bookkeeping ----------------------------------------------------------------------------

    def _rotation(self, rotation: Rotation) -> None:
        if rotation != self.result.rotation:
            self.recorder.rotation(self.job.name, rotation)
        self.result.rotation = rotation

    async def _phase(
        self, phase: Phase, step: Callable[[], Awaitable[None]], deadline: float | None = None
    ) -> ErrorInfo | None:
        """Run one phase within its timeout; the error that failed it, or None."""
        started = utc_now()
        self._notes.clear()
        self.recorder.phase(self.job.name, phase, "started")
        timeout = self.job.timeouts.of(phase)
        by_deadline = False
        if deadline is not None and (timeout is None or deadline - time.monotonic() < timeout):
            timeout, by_deadline = max(0.0, deadline - time.monotonic()), True
        error: ErrorInfo | None = None
        detail = ""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation (a
            # second SIGINT) that arrives as the phase finishes, and the node would go on.
            async with asyncio.timeout(timeout):
                await step()
        except TimeoutError:
            kind = "deadline" if by_deadline else "timed_out"
            what = "node deadline" if by_deadline else f"{phase} timeout"
            error = ErrorInfo(
                kind=kind, message=f"{phase} did not finish within the {what} ({timeout or 0:g}s)"
            )
        except PhaseFailed as exc:
            error, detail = exc.info, exc.detail
        except RemoteError as exc:
            error = exc.info
        except LBError as exc:
            error = ErrorInfo(kind="lb", message=str(exc))
        except asyncio.CancelledError:
            self._record(phase, started, "cancelled", ErrorInfo(kind="cancelled", message="run stopped"))
            raise
        self._record(phase, started, "failed" if error else "ok", error, detail)
        return error

    def _record(
        self,
        phase: Phase,
        started: datetime,
        outcome: PhaseOutcome,
        error: ErrorInfo | None,
        extra: str = "",
    ) -> None:
        detail = "; ".join([*self._notes, extra] if extra else self._notes)
        self.result.phases.append(
            PhaseResult(
                phase=phase,
                started_at=started,
                ended_at=utc_now(),
                outcome=outcome,
                detail=detail,
                error=error,
            )
        )
        self.recorder.phase(self.job.name, phase, outcome, detail, error)

    async def _finish(self, record: Record) -> None:
        self.result.ended_at = utc_now()
        try:
            states = await asyncio.wait_for(
                read_services(self.ctx, self.job.action.watched_services()),
                self.job.call_timeout,
            )
            self.result.services_after = {s.name: s.status for s in states.values()}
        except (RemoteError, TimeoutError):
            pass  # the node may be unreachable; services_after stays empty rather than guessed
        self._record_node(record)

    def _record_node(self, record: Record) -> None:
        self.recorder.node_state(
            self.job.name,
            rotation=self.result.rotation,
            services=self.result.services_after,
            outcome=record.outcome,
            reason=record.reason,
        )
