"""The coordinator: validates everything, preflights the whole fleet, then drives the scheduler.

Nothing on any node changes before every node passed preflight (reachable, authenticated, services
exist, the load balancer knows it) and the plan respects the capacity floor with live health. The
scheduler (pure) decides; this module does the I/O: workflows as tasks, signals, the journal lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from orchestrator import __version__
from orchestrator.credentials import CredentialsError, resolve_credentials
from orchestrator.fanout import bounded_map
from orchestrator.health import HealthChecker
from orchestrator.inventory import Inventory
from orchestrator.jobs import make_job, make_target
from orchestrator.journal import Journal, LockHeld
from orchestrator.lb.base import LBError, LoadBalancer
from orchestrator.lb.registry import UnavailableDriver, build, drain_policy
from orchestrator.log import register_secret
from orchestrator.plan import Plan, PlanError, make_plan
from orchestrator.recording import RunRecorder
from orchestrator.remote.session import Session
from orchestrator.report.console import LiveProgress
from orchestrator.report.events import EventStream
from orchestrator.results import NodeResult, Phase, RunOutcome, RunResult, exit_code_for, utc_now
from orchestrator.resume import ResumeState
from orchestrator.schedule import Done, Scheduler, Start, Wait, history_estimate
from orchestrator.watch import HealthWatch
from orchestrator.workflow import Workflow

log = structlog.get_logger("orchestrator.run")

# How often the nodes the run is not touching are probed (a balancer's health check would be ~1 s).
_WATCH_SECONDS = 2.0


class InvalidInput(Exception):
    """Refused before anything was touched; the message names file, line and field where it can."""


class Locked(Exception):
    def __init__(self, held: LockHeld) -> None:
        self.held = held
        super().__init__(str(held))


@dataclass
class RunOptions:
    preflight_concurrency: int = 32
    environ: Mapping[str, str] | None = None
    recorder_events: EventStream | None = None  # when the operator asked for one
    progress: LiveProgress | None = None  # on a terminal


def static_plan(inv: Inventory) -> Plan:
    """The plan from the inventory alone (validate/plan commands, and the first gate of run)."""
    try:
        return make_plan(inv)
    except PlanError as exc:
        raise InvalidInput(str(inv.error_at(exc.path, exc.message))) from None


def load_balancer(inv: Inventory) -> LoadBalancer:
    """The inventory's balancer (several instances as one). A driver that is not available is
    refused, never silently replaced: restarting nodes that the balancer still sends traffic to is
    exactly what this tool prevents."""
    try:
        nodes = {n.lb_name: {"lb_name": n.lb_name, "name": n.name, "host": n.host} for n in inv.nodes}
        return build(inv.load_balancers or (inv.load_balancer,), nodes)
    except UnavailableDriver as exc:
        raise InvalidInput(
            str(
                inv.error_at(
                    (*inv.balancer_path(exc.index), "driver"),
                    f"the {exc.driver!r} driver is not available in this version; use 'none' (drain the "
                    "nodes by other means), 'haproxy', or see docs/load-balancers.md",
                )
            )
        ) from None


def inventory_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Rollout:
    def __init__(
        self,
        inv: Inventory,
        options: RunOptions | None = None,
        lb: LoadBalancer | None = None,
        resume: ResumeState | None = None,
    ) -> None:
        self.inv = inv
        self.options = options or RunOptions()
        self.resume = resume
        self.lb: LoadBalancer = lb or load_balancer(inv)
        self.run_id = utc_now().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # a node's health changed: the scheduler may decide otherwise now
        self._body: asyncio.Task[tuple[RunOutcome, Plan | None]] | None = None
        self._plan: Plan | None = None
        self._estimate: float | None = None  # a node's duration in earlier runs, for the change window
        self._stops = 0
        self._tasks: dict[asyncio.Task[NodeResult], str] = {}
        self._left_by_operator: dict[str, str] = {}  # node -> why the balancer had it out before the run
        self._balancer_healthy: dict[str, bool] = {}  # the balancer's own health check before the run

    # --- signals ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: start no new node, let in-flight ones finish. Second: stop at once."""
        self._stops += 1
        self._stop.set()
        if self._stops >= 2:
            log.warning("second stop request: cancelling nodes in flight", nodes=sorted(self._tasks.values()))
            # Wherever the run is (preflight included): cancelling it cancels every node in flight,
            # and each records where it was left.
            if self._body is not None:
                self._body.cancel()
        else:
            log.warning("stop requested: no new node will start; nodes in flight finish")

    def _install_signals(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            except (RuntimeError, ValueError):  # not the main thread (tests): callers use request_stop
                pass
        return installed

    # --- the run ------------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        inv = self.inv
        planned = static_plan(inv)
        creds = {}
        for node in inv.nodes:
            try:
                creds[node.name] = resolve_credentials(node, self.options.environ)
            except CredentialsError as exc:
                raise InvalidInput(str(exc)) from None
            password = creds[node.name].password
            if password is not None:
                register_secret(password.get_secret_value())

        journal = Journal(inv.journal)
        try:
            journal.acquire_lock(inv.path, self.run_id)
        except LockHeld as held:
            journal.close()
            raise Locked(held) from None
        started = utc_now()
        self._estimate = history_estimate(journal.node_durations(inv.path))
        sessions = {n.name: Session(make_target(n, creds[n.name])) for n in inv.nodes}
        installed = self._install_signals()
        try:
            journal.begin_run(
                self.run_id,
                str(inv.path),
                inventory_digest(inv.path),
                planned.to_json(),
                [(n.name, n.host, n.group) for n in inv.nodes],
            )
            recorder = RunRecorder(
                self.run_id,
                journal,
                self.options.recorder_events,
                self.options.progress,
            )
            policy = drain_policy(inv.load_balancers or (inv.load_balancer,))
            async with HealthChecker() as health:
                flows = {
                    n.name: Workflow(make_job(n, policy), sessions[n.name], self.lb, health, recorder)
                    for n in inv.nodes
                }
                self._body = asyncio.create_task(self._execute(flows, health, recorder))
                try:
                    outcome, plan = await self._body
                except asyncio.CancelledError:
                    if self._stops < 2:
                        raise  # not ours: whoever cancelled the run wants it gone
                    outcome, plan = "aborted_signal", self._plan
                except InvalidInput:
                    journal.finish_run(
                        self.run_id, "invalid_input", exit_code_for("invalid_input"), utc_now()
                    )
                    raise
                except Exception:
                    # A bug of ours: record it, finish the run honestly (nodes as far as they got),
                    # and let the reports say so rather than leaving an unfinished journal.
                    log.exception("internal error: the run stopped")
                    outcome, plan = "internal_error", None
            nodes = [flows[n.name].result for n in inv.nodes]
            for untouched in (r for r in nodes if r.outcome in ("not_started", "skipped")):
                recorder.node_state(
                    untouched.name,
                    rotation=untouched.rotation,
                    services={},
                    services_before=untouched.services_before,
                    outcome=untouched.outcome,
                    reason=untouched.left_out_reason,
                )
            result = RunResult(
                run_id=self.run_id,
                tool_version=__version__,
                inventory_path=str(inv.path.resolve()),
                started_at=started,
                ended_at=utc_now(),
                outcome=outcome,
                plan={
                    **(plan.to_json() if plan else {}),
                    **({"resumes": self.resume.run_id} if self.resume else {}),
                },
                budget={},
                nodes=nodes,
            )
            journal.finish_run(self.run_id, outcome, exit_code_for(outcome), result.ended_at)
            return result
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)
            await self.lb.close()
            journal.release_lock(inv.path, self.run_id)
            journal.close()

    async def _execute(
        self, flows: dict[str, Workflow], health: HealthChecker, recorder: RunRecorder
    ) -> tuple[RunOutcome, Plan | None]:
        inv = self.inv
        refused = await self._balancer_preflight(flows)
        if refused is not None:
            return refused, None

        # Whole-fleet preflight: read-only, bounded concurrency; one refusal stops everything.
        # A resumed run preflights only the nodes it will touch.
        active = [f for name, f in flows.items() if self._start_at(name) is not None]
        oks = await bounded_map(lambda f: f.preflight(), active, limit=self.options.preflight_concurrency)
        for flow in active:
            earlier = self.resume.services_before.get(flow.job.name) if self.resume else None
            if earlier:
                # What ran before the *first* attempt is what must run again, not what the
                # interrupted attempt left stopped.
                flow.adopt_services_before(earlier)
        if not all(oks):
            for flow in flows.values():
                if flow.result.outcome != "failed":
                    flow.result.outcome = "not_started"
            return "preflight_refused", None
        if self.resume is not None:
            for name, flow in flows.items():
                if self._start_at(name) is None:
                    flow.result.outcome = "skipped"

        probes = await bounded_map(
            lambda f: health.probe(f.job.health), flows.values(), limit=self.options.preflight_concurrency
        )
        # A node the balancer had out before the run is no capacity, whatever its own health says.
        healthy = {
            name
            for name, probe in zip(flows, probes, strict=True)
            if probe.ok and name not in self._left_by_operator and self._balancer_healthy.get(name, True)
        }
        for name, probe in zip(flows, probes, strict=True):
            if not probe.ok:
                log.warning("node unhealthy before the run", node=name, detail=probe.detail)
        try:
            plan = self._plan = make_plan(inv, healthy=healthy)
        except PlanError as exc:
            log.error("plan refused with live health", error=str(inv.error_at(exc.path, exc.message)))
            for flow in flows.values():
                flow.result.outcome = "not_started"
            return "preflight_refused", None
        return await self._schedule(plan, flows, health), plan

    async def _schedule(self, plan: Plan, flows: dict[str, Workflow], health: HealthChecker) -> RunOutcome:
        # Giving up after one node's worth of time keeps a cron run from waiting forever on nodes that
        # someone else has to fix; the report then says which nodes were not started and why.
        sched = Scheduler(
            plan,
            finish_by=_monotonic_deadline(plan.finish_by),
            estimate=self._estimate,
            stall_limit=max(plan.deadlines.values(), default=0.0),
            now=time.monotonic(),
        )
        watch = HealthWatch(
            sched,
            # A node left out by the operator is no capacity however well it answers.
            {n: f for n, f in flows.items() if n not in self._left_by_operator},
            health,
            unhealthy=plan.unhealthy,
            interval=_WATCH_SECONDS,
            limit=self.options.preflight_concurrency,
            on_change=self._wake.set,
            balancer=self._balancer_verdict,
        )
        watcher = asyncio.create_task(watch.run(), name="health-watch")
        stop_seen = False
        try:
            while True:
                if self._stop.is_set() and not stop_seen:
                    stop_seen = True
                    sched.stop_requested()
                now = time.monotonic()
                decisions = sched.next_actions(now)
                first = decisions[0]
                if isinstance(first, Done):
                    return first.outcome
                if isinstance(first, Start):
                    for d in decisions:
                        assert isinstance(d, Start)
                        sched.node_started(d.name, now)
                        start_at = self._start_at(d.name)
                        if start_at is None:
                            # Done in the run being resumed: it passes through without a touch,
                            # keeping the health it had when this run began.
                            sched.node_finished(d.name, now, ok=True)
                            if d.name in plan.unhealthy:
                                sched.health_changed(d.name, healthy=False)
                            continue
                        task = asyncio.create_task(flows[d.name].restart(start_at), name=d.name)
                        self._tasks[task] = d.name
                    continue
                assert isinstance(first, Wait)
                await self._wait(first, now)
                for task in [t for t in self._tasks if t.done()]:
                    name = self._tasks.pop(task)
                    ok = _succeeded(task, name)
                    sched.node_finished(name, time.monotonic(), ok)
                    watch.finished(name, ok)
        finally:
            watcher.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(watcher, *self._tasks, return_exceptions=True)

    async def _balancer_verdict(self, name: str) -> str | None:
        """Why the balancer does not count this node as capacity now, or None when it does."""
        server = self.inv.node(name).lb_name
        try:
            m = await self.lb.state(server)
        except LBError as exc:
            log.warning("load balancer state unreadable", node=name, error=str(exc))
            return None  # the node's own health stands; the drain phase will fail if this lasts
        if m.rotation == "out":
            return f"out of rotation in the load balancer ({m.status or m.admin})"
        if m.healthy is False:
            return f"unhealthy in the load balancer ({m.status})"
        return None

    def _start_at(self, name: str) -> Phase | None:
        if name in self._left_by_operator:
            return None
        if self.resume is None:
            return "drain"
        return self.resume.start_at.get(name, "drain")

    async def _balancer_preflight(self, flows: dict[str, Workflow]) -> RunOutcome | None:
        """Every instance reachable at admin level, every server known; the state of each server
        before the run is recorded. A server an operator took out (MAINT or DRAIN) stays out: the
        run leaves that node alone and reports it. Returns the refusal, or None to go on."""
        inv = self.inv
        try:
            before = await self.lb.preflight([n.lb_name for n in inv.nodes])
        except LBError as exc:
            if exc.kind == "unknown_server":
                bad = next((n for n in inv.nodes if repr(n.lb_name) in str(exc)), inv.nodes[0])
                log.error("load balancer does not know a node", error=str(exc))
                raise InvalidInput(
                    str(
                        inv.node_error(
                            bad.name, ("lb_name",), f"the load balancer has no server {bad.lb_name!r}"
                        )
                    )
                ) from None
            log.error(
                "load balancer refused the preflight: nothing was touched", kind=exc.kind, error=str(exc)
            )
            for flow in flows.values():
                flow.result.outcome = "not_started"
            return "preflight_refused"
        for warning in before.warnings:
            log.warning(warning)
        for node in inv.nodes:
            m = before.before[node.lb_name]
            self._balancer_healthy[node.name] = m.healthy is not False
            # Resuming: a DRAIN on a node the earlier run touched is that run's own drain.
            ours = self.resume is not None and node.name in self.resume.touched and m.admin == "drain"
            flows[node.name].job.drained_earlier = ours
            if m.admin in ("drain", "maint") and not ours:
                reason = f"left out by the operator: {m.admin.upper()} in the load balancer before the run"
                self._left_by_operator[node.name] = reason
                flow = flows[node.name]
                flow.result.outcome = "skipped"
                flow.result.rotation = "out"
                flow.result.left_out_reason = reason
                log.warning(
                    "node left out of rotation by the operator: not touched", node=node.name, state=m.admin
                )
        return None

    async def _wait(self, wait: Wait, now: float) -> None:
        """Until a node finishes, a stop is requested, a node's health changes, or `wait.until`."""
        log.debug("waiting", reason=wait.reason)
        timeout = None if wait.until is None else max(0.0, wait.until - now)
        if self._wake.is_set():
            # A health change arrived while the scheduler was deciding: decide again first.
            self._wake.clear()
            return
        events = [asyncio.create_task(self._wake.wait())]
        if not self._stop.is_set():
            events.append(asyncio.create_task(self._stop.wait()))
        try:
            await asyncio.wait({*self._tasks, *events}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for event in events:
                event.cancel()
        self._wake.clear()


def _succeeded(task: asyncio.Task[NodeResult], name: str) -> bool:
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        # A bug in the orchestrator, not a node failure: say so loudly; the node counts as failed.
        log.error("internal error while restarting node", node=name, error=repr(exc))
        return False
    return task.result().outcome == "done"


def _monotonic_deadline(finish_by: datetime | None) -> float | None:
    if finish_by is None:
        return None
    return time.monotonic() + (finish_by - utc_now()).total_seconds()


__all__ = [
    "InvalidInput",
    "Locked",
    "Rollout",
    "RunOptions",
    "inventory_digest",
    "load_balancer",
    "static_plan",
]
