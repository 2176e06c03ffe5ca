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

from orchestrator.actions.base import Action, ActionContext, PhaseFailed
from orchestrator.drain import rejoin, take_out, wait_drained
from orchestrator.health import HealthChecker, HealthSpec, Unhealthy
from orchestrator.lb.base import DrainPolicy, LBError, LoadBalancer
from orchestrator.remote import cmdlets
from orchestrator.remote.errors import RemoteError
from orchestrator.remote.session import Session
from orchestrator.results import (
    PHASES,
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
        services_before: dict[str, str],
        outcome: str,
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
    _notes: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
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

    async def preflight(self) -> bool:
        """Read-only checks; True when the node may be restarted. Touches nothing."""
        ok = await self._phase("preflight", self._preflight)
        if not ok:
            self.result.outcome = "failed"
        return ok

    def adopt_services_before(self, services: dict[str, str]) -> None:
        """Resuming: the states recorded before the first attempt decide what must run again."""
        self.ctx.services_before = dict(services)
        self.result.services_before = dict(services)

    async def restart(self, start_at: Phase = "drain") -> NodeResult:
        """Run the phases from `start_at` to the end within the node's deadline."""
        self.result.started_at = utc_now()
        self.result.outcome = "interrupted"
        phases = PHASES[PHASES.index(start_at) :]
        if "drain" not in phases:
            self._rotation("out")  # resumed past drain: the earlier run took it out of rotation
        steps: dict[Phase, Callable[[], Awaitable[None]]] = {
            "preflight": self._preflight,
            "drain": self._drain,
            "stop": lambda: self.job.action.stop(self.ctx),
            "start": lambda: self.job.action.start(self.ctx),
            "verify": self._verify,
            "undrain": self._undrain,
        }
        deadline = time.monotonic() + self.job.timeouts.node
        try:
            for phase in phases:
                if not await self._phase(phase, steps[phase], deadline):
                    self.result.outcome = "failed"
                    break
            else:
                self.result.outcome = "done"
        finally:
            await self._finish()
        return self.result

    def bake_failed(self, detail: str) -> None:
        """A canary whose health did not hold during the bake: not done after all."""
        self.result.outcome = "failed"
        self.result.left_out_reason = f"health did not hold during the canary bake: {detail}"
        self.recorder.node_state(
            self.job.name,
            rotation=self.result.rotation,
            services=self.result.services_after,
            services_before=self.result.services_before,
            outcome="failed",
            reason=self.result.left_out_reason,
        )

    # --- phases ---------------------------------------------------------------------------------

    async def _preflight(self) -> None:
        await self.job.action.preflight(self.ctx)
        self.result.services_before = dict(self.ctx.services_before)
        membership = await self.lb.state(self.job.lb_name)
        self._rotation(membership.rotation)

    async def _drain(self) -> None:
        await take_out(self.lb, self.job.lb_name, self._rotation, drained_earlier=self.job.drained_earlier)
        await wait_drained(
            self.lb, self.job.lb_name, self.job.drain, self._in_flight_on_node, self._notes.append
        )

    async def _in_flight_on_node(self) -> int | None:
        return await cmdlets.requests_in_flight(self.session, timeout=self.job.call_timeout)

    async def _verify(self) -> None:
        services = self.job.action.watched_services()
        states = await cmdlets.get_services(self.session, services, timeout=self.job.call_timeout)
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
    ) -> bool:
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
            await asyncio.wait_for(step(), timeout)
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
        return error is None

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
        # Preflight only reads: whatever it finds, it did not take the node out.
        if error is not None and phase != "preflight" and self.result.rotation != "in":
            self.result.left_out_reason = f"{phase} failed: {error.message}"

    async def _finish(self) -> None:
        self.result.ended_at = utc_now()
        try:
            states = await asyncio.wait_for(
                cmdlets.get_services(
                    self.session, self.job.action.watched_services(), timeout=self.job.call_timeout
                ),
                self.job.call_timeout,
            )
            self.result.services_after = {s.name: s.status for s in states.values()}
        except (RemoteError, TimeoutError):
            pass  # the node may be unreachable; services_after stays empty rather than guessed
        outcome: NodeOutcome = self.result.outcome
        self.recorder.node_state(
            self.job.name,
            rotation=self.result.rotation,
            services=self.result.services_after,
            services_before=self.result.services_before,
            outcome=outcome,
            reason=self.result.left_out_reason,
        )
