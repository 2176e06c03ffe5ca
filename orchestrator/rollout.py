"""The coordinator: validates everything, preflights the whole fleet, then drives the scheduler.

Nothing on any node changes before every node passed preflight (reachable, authenticated, services
exist, the load balancer knows it) and the plan respects the capacity floor with live health. The
scheduler (pure) decides; this module does the I/O: workflows as tasks, signals, the journal lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import structlog
from pydantic import JsonValue

from orchestrator import __version__
from orchestrator.budget import FailureBudget
from orchestrator.credentials import CredentialsError, resolve_credentials
from orchestrator.fanout import bounded_map
from orchestrator.health import HealthChecker
from orchestrator.inventory import Inventory
from orchestrator.inventory.live import check_at_run
from orchestrator.jobs import make_job, make_target
from orchestrator.journal import Journal, JournalError, JournalUnavailable, LockHeld, LockTakeover
from orchestrator.lb.base import LBError, LoadBalancer
from orchestrator.lb.registry import drain_policy
from orchestrator.lease import Heartbeat, farm_identity
from orchestrator.lifecycle import NotStarted, Skip
from orchestrator.log import register_secret
from orchestrator.plan import Plan, PlanError, make_plan
from orchestrator.precheck import InvalidInput, load_balancer, static_plan
from orchestrator.recording import RunRecorder
from orchestrator.remote.session import Session
from orchestrator.report.console import LiveProgress
from orchestrator.report.events import EventStream, RunStarted
from orchestrator.results import (
    NodeResult,
    Phase,
    Recovery,
    RunOutcome,
    RunResult,
    StaleLock,
    exit_code_for,
    utc_now,
)
from orchestrator.resume import ResumeState, remaining_plan, repair_state
from orchestrator.schedule import Done, Scheduler, Start, Wait, history_estimate
from orchestrator.watch import HealthWatch
from orchestrator.workflow import Workflow
from orchestrator.yamlsource import SourceError

log = structlog.get_logger("orchestrator.run")
T = TypeVar("T")

# How often the nodes the run is not touching are probed (a balancer's health check would be ~1 s).
_WATCH_SECONDS = 2.0
# How long a stopped run gives its sessions to close before it exits.
_CLOSE_AFTER_STOP = 2.0


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
    # Told once the run holds the lock and is recorded (live header, notifications); must not block.
    on_start: Callable[[RunStarted], None] | None = None


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
        self._sched: Scheduler | None = None
        self._stopped_because: str | None = None  # why the run ended early, for the report
        self._journal_lost: str | None = None  # the lease or the journal's database is gone: why
        # Nodes the balancer had out before the run (their lifecycle keeps the reason).
        self._left_by_operator: set[str] = set()
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
        try:
            await check_at_run(inv, utc_now())
        except SourceError as exc:
            raise InvalidInput(str(exc)) from None

        journal = self._open_journal()
        try:
            # The farm is its hosts: another inventory listing one of them is the same farm.
            takeover = journal.acquire_lock(
                inv.path,
                self.run_id,
                farm_identity(n.host for n in inv.nodes),
                lease_seconds=inv.lease.lease,
            )
        except LockHeld as held:
            journal.close()
            raise Locked(held) from None
        except BaseException:
            journal.close()
            raise
        started = utc_now()
        recovery = self._recovery(journal, takeover)
        self._estimate = history_estimate(journal.node_durations(inv.path))
        sessions = {n.name: Session(make_target(n, creds[n.name])) for n in inv.nodes}
        installed = self._install_signals()
        loop = asyncio.get_running_loop()
        heartbeat = Heartbeat(
            self._open_journal,
            self.run_id,
            inv.lease,
            lambda reason: _call_soon(loop, self._lose_journal, f"lease lost: {reason}"),
        )
        heartbeat.start()
        try:
            journal.begin_run(
                self.run_id,
                str(inv.path),
                inventory_digest(inv.path),
                planned.to_json(),
                [(n.name, n.host, n.group) for n in inv.nodes],
            )
            if recovery is not None:
                journal.record_recovery(self.run_id, recovery)
            carried = (
                {n.name: self.resume.before[n.name] for n in inv.nodes if n.name in self.resume.before}
                if self.resume
                else {}
            )
            if carried:
                # Carried forward at once: if this run dies or is refused before its preflight ends,
                # the next one still finds the earliest record here. (A node since removed from the
                # inventory is not this run's to carry.)
                journal.record_before(self.run_id, carried)
            recorder = RunRecorder(
                self.run_id,
                journal,
                self.options.recorder_events,
                self.options.progress,
            )
            announced = RunStarted(
                at=started,
                run_id=self.run_id,
                inventory_path=str(inv.path.resolve()),
                nodes=[n.name for n in inv.nodes],
                plan=planned.to_json(),
            )
            recorder.run_started(announced)
            if self.options.on_start is not None:
                self.options.on_start(announced)
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
            try:
                for flow in flows.values():
                    if flow.life.state in ("queued", "preflighted"):
                        flow.send(NotStarted())  # the run ended before its turn; recorded as such
            except JournalUnavailable as exc:
                self._lose_journal(str(exc))
            if self._journal_lost is not None and outcome == "aborted_signal" and self._stops == 0:
                # No operator's signal stopped it: the run could no longer record what it did, or
                # no longer knew it was alone on the farm.
                outcome = "internal_error"
            nodes = [flows[n.name].result for n in inv.nodes]
            result = RunResult(
                run_id=self.run_id,
                tool_version=__version__,
                inventory_path=str(inv.path.resolve()),
                started_at=started,
                ended_at=utc_now(),
                outcome=outcome,
                plan={
                    **(plan.to_json() if plan else {}),
                    **({"resumes": self.resume.run_id} if self.resume and not self.resume.repair else {}),
                },
                budget=self._budget(outcome),
                nodes=nodes,
                recovery=recovery,
            )
            try:
                journal.finish_run(
                    self.run_id, outcome, exit_code_for(outcome), result.ended_at, budget=result.budget
                )
            except JournalUnavailable as exc:
                # The report files still say how it ended; the journal shows the run incomplete,
                # and the next run repairs from it.
                log.error("the run's end is not in the journal", error=str(exc))
            return result
        finally:
            heartbeat.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            closing = [asyncio.ensure_future(s.close()) for s in sessions.values()]
            # A stopped run does not wait for slow nodes to take their leave: a close still pending
            # goes on in its daemon thread, which the process does not wait for.
            done, _ = (
                await asyncio.wait(closing, timeout=_CLOSE_AFTER_STOP if self._stops else None)
                if closing
                else (set(), set())
            )
            for closed in done:
                closed.exception()  # a close that failed is of no consequence now; retrieved, not logged
            await self.lb.close()
            try:
                journal.release_lock(inv.path, self.run_id)
            except JournalError as exc:
                # The lease expires on its own once its beat stops.
                log.error("lease not released", error=str(exc))
            journal.close()

    def _open_journal(self) -> Journal:
        inv = self.inv
        return Journal(inv.journal, outage_seconds=inv.lease.outage, environ=self.options.environ)

    def _lose_journal(self, reason: str) -> None:
        """The journal's database is gone for longer than a write waits, or the lease is lost: start
        no new node; nodes in flight go on to where their next record would be written."""
        if self._journal_lost is not None:
            return
        self._journal_lost = reason
        self._stopped_because = f"{reason}; no node was started after that"
        log.error("the run stops: no new node will start", reason=reason)
        self._stop.set()

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
        oks = await self._unless_stopped(
            bounded_map(lambda f: f.preflight(), active, limit=self.options.preflight_concurrency)
        )
        if oks is None:
            return self._stopped_in_preflight(flows), None
        if not all(oks):
            refusing = [flow for flow, ok in zip(active, oks, strict=True) if not ok]
            first = _why(refusing[0])
            self._stopped_because = f"preflight refused {len(refusing)} node(s), so none was touched: {first}"
            return "preflight_refused", None
        for flow in active:
            earlier = self.resume.before.get(flow.job.name) if self.resume else None
            if earlier is not None:
                # What ran before the *first* attempt is what must run again, not what the
                # interrupted attempt left stopped.
                flow.adopt_before(earlier)
        # Write-ahead: committed before the first change to any node, so a crash from here on
        # leaves the truth to restore.
        recorder.before({f.job.name: f.before() for f in active})
        finished = [flows[name] for name in self._finished(flows)]
        # Not preflighted, but their rotation is the balancer's to say, not unknown.
        await bounded_map(lambda f: f.observe_rotation(), finished, limit=self.options.preflight_concurrency)
        for flow in finished:
            flow.send(Skip())

        probes = await self._unless_stopped(
            bounded_map(
                lambda f: health.probe(f.job.health), flows.values(), limit=self.options.preflight_concurrency
            )
        )
        if probes is None:
            return self._stopped_in_preflight(flows), None
        # A node the balancer had out before the run is no capacity, whatever its own health says.
        healthy = {
            name
            for name, probe in zip(flows, probes, strict=True)
            if probe.ok and name not in self._left_by_operator and self._balancer_healthy.get(name, True)
        }
        for name, probe in zip(flows, probes, strict=True):
            if not probe.ok:
                log.warning("node unhealthy before the run", node=name, detail=probe.detail)
        if not healthy and self.resume is None:
            # Every node failing one check is the check's fault far more often than the farm's (a typo
            # in the URL, a wrong port): restarting them all would take each out for nothing.
            name, probe = next(zip(flows, probes, strict=True))
            example = f"{name}: {flows[name].job.health.url}: {probe.detail}"
            self._stopped_because = (
                f"the health check failed on every node before the run (e.g. {example}); "
                "check health.url. Nothing was touched."
            )
            log.error("preflight refused", reason=self._stopped_because)
            return "preflight_refused", None
        try:
            # Nodes an earlier run finished, or the operator left out, are not this run's to change.
            untouched = [*self._finished(flows), *self._left_by_operator]
            plan = self._plan = remaining_plan(make_plan(inv, healthy=healthy), untouched)
        except PlanError as exc:
            self._stopped_because = f"plan refused with live health: {inv.error_at(exc.path, exc.message)}"
            log.error("plan refused with live health", error=str(inv.error_at(exc.path, exc.message)))
            return "preflight_refused", None
        return await self._schedule(plan, flows, health), plan

    async def _schedule(self, plan: Plan, flows: dict[str, Workflow], health: HealthChecker) -> RunOutcome:
        # Giving up after one node's worth of time keeps a cron run from waiting forever on nodes that
        # someone else has to fix; the report then says which nodes were not started and why.
        sched = self._sched = Scheduler(
            plan,
            finish_by=_monotonic_deadline(plan.finish_by),
            estimate=self._estimate,
            stall_limit=max(plan.deadlines.values(), default=0.0),
            now=time.monotonic(),
            standing=self._finished(flows),
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
            floor=plan.limits.min_healthy > 0,
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
                        start_at = self._start_at(d.name) or "drain"
                        task = asyncio.create_task(flows[d.name].restart(start_at), name=d.name)
                        self._tasks[task] = d.name
                    continue
                assert isinstance(first, Wait)
                await self._wait(first, now)
                for task in [t for t in self._tasks if t.done()]:
                    name = self._tasks.pop(task)
                    if not task.cancelled() and isinstance(task.exception(), JournalUnavailable):
                        self._lose_journal(str(task.exception()))
                    ok = _succeeded(task, name)
                    sched.node_finished(name, time.monotonic(), ok)
                    watch.finished(name, ok)
        finally:
            watcher.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(watcher, *self._tasks, return_exceptions=True)

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """`work`, or None when a stop is requested first. Preflight and the health pre-check change
        nothing, so a stop ends them at once instead of after the last of thousands of hosts."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    def _stopped_in_preflight(self, flows: Mapping[str, Workflow]) -> RunOutcome:
        if self._journal_lost is None:
            self._stopped_because = "stopped by a signal during preflight; nothing was touched"
        log.warning("stopped during preflight: no node was touched")
        return "aborted_signal"

    def _budget(self, outcome: RunOutcome) -> dict[str, JsonValue]:
        """The failure budget as the run left it, and why the run stopped where it did."""
        policy = self.inv.rollout.failure_budget
        # Before scheduling (a refusal, a stop in preflight) nothing was spent of the whole budget.
        budget = self._sched.budget if self._sched is not None else FailureBudget(policy, len(self.inv.nodes))
        return {
            "policy": policy.model_dump(mode="json"),
            "limit": budget.tolerated,
            "spent": budget.failures,
            "exhausted": budget.spent,
            "stopped": self._stop_reason(outcome),
        }

    def _stop_reason(self, outcome: RunOutcome) -> str | None:
        sched = self._sched
        if self._stopped_because is not None:
            return self._stopped_because
        if outcome == "aborted_budget" and sched is not None:
            return f"failure budget spent: {sched.budget.spent}; no node was started after that"
        if outcome == "aborted_window" and sched is not None:
            waiting = sched.not_started
            finish_by = self.inv.rollout.change_window.finish_by
            assert finish_by is not None  # the scheduler ends a run for the window only with one
            first = (
                f" (the next, {waiting[0]}, needs about {sched.estimate(waiting[0]):.0f} s)"
                if waiting
                else ""
            )
            return (
                f"change window: {len(waiting)} node(s) not started{first}, as they would not finish "
                f"by {finish_by.isoformat()}"
            )
        if outcome == "aborted_capacity":
            return "capacity floor: too few healthy nodes for too long to start any other"
        if outcome == "aborted_signal":
            return "stopped by a signal; nodes in flight were " + (
                "cancelled" if self._stops >= 2 else "finished"
            )
        if outcome == "internal_error":
            return "internal error; see the log"
        return None

    def _recovery(self, journal: Journal, takeover: LockTakeover | None) -> Recovery | None:
        """An earlier run that never finished: a plain run repairs the nodes it left part-way first;
        either way a lock taken from its dead process is said, never silent."""
        stale = (
            None
            if takeover is None
            else StaleLock(
                run_id=takeover.stale_run_id,
                pid=takeover.stale_pid,
                host=takeover.stale_host,
                since=takeover.stale_since,
                controller=takeover.stale_controller,
                last_beat=takeover.stale_last_beat,
                taken_by=takeover.controller,
                why=takeover.why,
            )
        )
        if stale is not None:
            log.warning(
                "took over the lock of a run whose process is gone",
                run_id=stale.run_id,
                pid=stale.pid,
                host=stale.host,
            )
        if self.resume is None:
            self.resume = _repair(journal, self.inv.path)
            if self.resume is not None:
                log.warning(
                    "the last run did not finish: repairing the nodes it left part-way first",
                    run_id=self.resume.run_id,
                    nodes=self.resume.part_way,
                )
        if self.resume is not None:
            return Recovery(
                run_id=self.resume.run_id, lock_takeover=stale, repaired=dict(self.resume.part_way)
            )
        if stale is not None:
            return Recovery(run_id=stale.run_id, lock_takeover=stale)
        return None

    def _finished(self, flows: Mapping[str, Workflow]) -> list[str]:
        """Nodes the run being resumed finished: not in this run's plan, but counted for the floor."""
        return [name for name in flows if self._start_at(name) is None and name not in self._left_by_operator]

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
            return "preflight_refused"
        for warning in before.warnings:
            log.warning(warning)
        for node in inv.nodes:
            m = before.before[node.lb_name]
            self._balancer_healthy[node.name] = m.healthy is not False
            # Picking up an earlier run: its write-ahead record says whose a DRAIN is. MAINT is
            # never a run's own (drivers drain, they do not put servers in maintenance).
            ours = self.resume is not None and m.admin == "drain" and self.resume.drain_is_ours(node.name)
            flows[node.name].job.drained_earlier = ours
            if m.admin in ("drain", "maint") and not ours:
                reason = f"left out by the operator: {m.admin.upper()} in the load balancer before the run"
                self._left_by_operator.add(node.name)
                flow = flows[node.name]
                flow.result.rotation = "out"
                flow.send(Skip(reason))
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


def _repair(journal: Journal, inventory: Path) -> ResumeState | None:
    """What a plain run must repair first, if the latest run left nodes part-way: it is incomplete
    (its process died), or it was itself a repair that never got to the nodes it took over (refused
    at preflight, stopped first)."""
    last = journal.latest_run(inventory)
    if last is None:
        return None
    earlier = journal.recovery(last.run_id)
    repair = repair_state(
        last.run_id, journal.node_states(last.run_id), earlier.repaired if earlier is not None else None
    )
    if last.outcome == "incomplete" or (
        earlier is not None and any(n in repair.part_way for n in earlier.repaired)
    ):
        return repair
    return None


def _why(flow: Workflow) -> str:
    """A node's failure in one line: its name and the error of the phase that stopped it."""
    phase = flow.result.failed_phase
    if phase is None or phase.error is None:
        return flow.job.name
    return f"{flow.job.name}: {phase.phase}: {phase.error.message}"


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[str], None], reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over anyway
        loop.call_soon_threadsafe(callback, reason)


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
