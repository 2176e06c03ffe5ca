"""Service restarts: `iis-restart` (the default) and `services` (a named list).

The graceful sequence: stop dependents first with `Stop-Service -NoWait` and poll until Stopped, then
start in dependency order. Nothing is ever killed unless the inventory names the `kill-workers`
escalation, and even then only the IIS worker processes, only after the stop timed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orchestrator.actions import graph
from orchestrator.actions.base import (
    ActionContext,
    PhaseFailed,
    backoff,
    kill_workers,
    reconnect,
    start_services,
    stop_services,
)
from orchestrator.remote import cmdlets
from orchestrator.results import ErrorInfo

WINRM = "WINRM"


class ServiceRestart:
    """Stop `targets` and everything depending on them; start `start_roots` and what ran before."""

    def __init__(
        self,
        name: str,
        targets: Sequence[str],
        start_roots: Sequence[str],
        *,
        stop_timeout: float,
        detached: bool,
    ) -> None:
        self.name = name
        self.targets = list(targets)
        self.start_roots = list(start_roots)
        self.stop_timeout = stop_timeout
        self.detached = detached
        self.stop_set: list[str] = []
        self.requires: dict[str, list[str]] = {}
        self.detached_pid: int | None = None
        self._escalated: set[str] = set()

    def watched_services(self) -> Sequence[str]:
        """The restarted services and those they depend on: all must run before the node is back."""
        if not self.stop_set:
            return self.targets
        needed = {d for name in self.stop_set for d in self.requires.get(name, ())}
        return [
            *self.stop_set,
            *sorted(n for n in needed if n.upper() not in {s.upper() for s in self.stop_set}),
        ]

    async def preflight(self, ctx: ActionContext) -> None:
        timeout = ctx.call_timeout
        # One pipeline reads the targets and everything depending on them, each ServiceController with
        # its dependency arrays. Services missing on the node raise not_found here, before anything
        # is touched. From here on names are spelled as Windows spells them (an inventory may say
        # `w3svc`).
        graph_read = await cmdlets.read_service_graph(ctx.session, self.targets, timeout=timeout)
        found = graph_read.found
        self.targets = [found[t.upper()].name for t in self.targets]
        self.start_roots = [found[r.upper()].name if r.upper() in found else r for r in self.start_roots]
        closure = {key: state.name for key, state in found.items()}
        # Windows lists every dependent, direct or not; should a node list only direct ones, the
        # lookups below complete the set, one service at a time.
        todo = [d for deps in graph_read.dependents.values() for d in deps if d.upper() not in closure]
        todo += [n for n in closure.values() if n not in graph_read.dependents]
        while todo:
            name = todo.pop()
            if name.upper() in closure and name in graph_read.dependents:
                continue
            closure[name.upper()] = name
            graph_read.dependents[name] = await cmdlets.related_services(
                ctx.session, name, dependents=True, timeout=timeout
            )
            todo.extend(d for d in graph_read.dependents[name] if d.upper() not in closure)
        for name in closure.values():
            if name in graph_read.requires:
                self.requires[name] = graph_read.requires[name]
            else:
                self.requires[name] = await cmdlets.related_services(
                    ctx.session, name, dependents=False, timeout=timeout
                )
        if WINRM in closure and not self.detached:
            raise PhaseFailed(
                ErrorInfo(
                    kind="refused",
                    message=(
                        f"stopping {', '.join(self.targets)} would stop WinRM (it depends on "
                        f"{', '.join(sorted(closure))}); this action must run detached"
                    ),
                )
            )
        self.stop_set = graph.stop_order(closure.values(), self.requires)
        known = {**graph_read.nested, **found}
        watched = self.watched_services()
        if any(n.upper() not in known for n in watched):
            known.update(await cmdlets.get_services(ctx.session, watched, timeout=timeout))
        ctx.services_before = {known[n.upper()].name: known[n.upper()].status for n in watched}
        # The stop starts from this read: it is taken after the last control (there was none).
        ctx.observed = {n.upper(): known[n.upper()] for n in watched}
        ctx.note(f"stop order: {' -> '.join(self.stop_set)}")

    def _wanted(self, ctx: ActionContext) -> list[str]:
        # Only what ran before comes back (plus the roots): a service an operator had stopped stays so.
        was_running = [n for n in self.stop_set if ctx.services_before.get(n) == "Running"]
        wanted = graph.with_dependencies([*self.start_roots, *was_running], self.stop_set, self.requires)
        return graph.start_order(wanted, self.requires)

    async def stop(self, ctx: ActionContext) -> None:
        if self.detached:
            ctx.observed = None
            await self._run_detached(ctx)
            return
        await stop_services(
            ctx, self.stop_set, self.requires, limit=self.stop_timeout, timed_out=self._stop_timed_out
        )

    async def _stop_timed_out(self, ctx: ActionContext, name: str, status: str) -> None:
        """Fail the phase, or (kill-workers) end the IIS workers once and give `name` another limit."""
        if ctx.escalation != "kill-workers":
            raise PhaseFailed(
                ErrorInfo(
                    kind="timed_out",
                    message=f"{name} did not stop within {self.stop_timeout:g}s (now {status}); "
                    "nothing was killed",
                    target=name,
                ),
                detail="escalation is 'none': the node stays out of rotation with its services as they are",
            )
        if name in self._escalated:
            raise PhaseFailed(
                ErrorInfo(
                    kind="timed_out",
                    message=f"{name} did not stop within {self.stop_timeout:g}s even after kill-workers",
                    target=name,
                )
            )
        self._escalated.add(name)
        await kill_workers(ctx)

    async def start(self, ctx: ActionContext) -> None:
        wanted = self._wanted(ctx)
        if self.detached_pid is not None:
            ctx.observed = None
            await self._wait_detached(ctx, self.detached_pid)
        await start_services(ctx, wanted, self.watched_services())

    async def _run_detached(self, ctx: ActionContext) -> None:
        """Stop and start in one process outside the WinRM shell's job object: the stop takes WinRM
        down, so nothing we run inside the shell would live to start it again."""
        steps = [f"net stop {t} /y" for t in self.targets] + [f"net start {n}" for n in self._wanted(ctx)]
        command_line = "cmd.exe /c " + " & ".join(steps)
        pid = await cmdlets.create_detached_process(ctx.session, command_line, timeout=ctx.call_timeout)
        self.detached_pid = pid
        ctx.note(f"detached process {pid}: {command_line}")

    async def _wait_detached(self, ctx: ActionContext, pid: int) -> None:
        """Wait until the detached process has exited. WinRM goes away and comes back meanwhile, so
        transport errors are expected and retried; what we observe before the process exits (even
        'all Running') says nothing, since its stop may not have happened yet."""
        pause = backoff(ctx)
        connects = ctx.session.connects
        while True:
            running = await reconnect(
                ctx, lambda: cmdlets.process_running(ctx.session, pid, timeout=ctx.call_timeout)
            )
            if not running:
                again = ctx.session.connects - connects
                dropped = f"; WinRM dropped and reconnected ({again}x)" if again else ""
                ctx.note(f"detached process {pid} finished{dropped}")
                return
            await asyncio.sleep(pause())


def iis_restart(*, stop_timeout: float) -> ServiceRestart:
    # Stopping WAS stops W3SVC (and other WAS dependents); starting W3SVC brings WAS back.
    return ServiceRestart("iis-restart", ["WAS"], ["W3SVC"], stop_timeout=stop_timeout, detached=False)


def http_restart() -> ServiceRestart:
    # HTTP.sys restarts for SSL changes take WinRM down (WinRM depends on HTTP): always detached.
    return ServiceRestart("http-restart", ["HTTP"], ["W3SVC", "WinRM"], stop_timeout=0, detached=True)


def services_restart(names: Sequence[str], *, stop_timeout: float, detached: bool) -> ServiceRestart:
    return ServiceRestart("services", list(names), list(names), stop_timeout=stop_timeout, detached=detached)
