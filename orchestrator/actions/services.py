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
    start_and_wait,
    stop_and_wait,
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
        # Services missing on the node raise not_found here, before anything is touched. From here
        # on names are spelled as Windows spells them (an inventory may say `w3svc`).
        found = await cmdlets.get_services(ctx.session, self.targets, timeout=timeout)
        self.targets = [found[t.upper()].name for t in self.targets]
        self.start_roots = [found[r.upper()].name if r.upper() in found else r for r in self.start_roots]
        closure: dict[str, str] = {}
        todo = list(self.targets)
        while todo:
            name = todo.pop()
            if name.upper() in closure:
                continue
            closure[name.upper()] = name
            todo.extend(await cmdlets.related_services(ctx.session, name, dependents=True, timeout=timeout))
        for name in closure.values():
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
        states = await cmdlets.get_services(ctx.session, self.watched_services(), timeout=timeout)
        ctx.services_before = {s.name: s.status for s in states.values()}
        ctx.note(f"stop order: {' -> '.join(self.stop_set)}")

    def _wanted(self, ctx: ActionContext) -> list[str]:
        # Only what ran before comes back (plus the roots): a service an operator had stopped stays so.
        was_running = [n for n in self.stop_set if ctx.services_before.get(n) == "Running"]
        wanted = graph.with_dependencies([*self.start_roots, *was_running], self.stop_set, self.requires)
        return graph.start_order(wanted, self.requires)

    async def stop(self, ctx: ActionContext) -> None:
        if self.detached:
            await self._run_detached(ctx)
            return
        for name in self.stop_set:
            try:
                await asyncio.wait_for(stop_and_wait(ctx, name), self.stop_timeout)
            except TimeoutError:
                await self._stop_timed_out(ctx, name)

    async def _stop_timed_out(self, ctx: ActionContext, name: str) -> None:
        status = await _status_or_unknown(ctx, name)
        if ctx.escalation != "kill-workers":
            raise PhaseFailed(
                ErrorInfo(
                    kind="timed_out",
                    message=f"{name} did not stop within {self.stop_timeout:g}s (now {status}); "
                    "nothing was killed",
                    target=name,
                ),
                detail="escalation is 'none': the node stays out of rotation with its services as they are",
            ) from None
        await kill_workers(ctx)
        try:
            await asyncio.wait_for(stop_and_wait(ctx, name), self.stop_timeout)
        except TimeoutError:
            raise PhaseFailed(
                ErrorInfo(
                    kind="timed_out",
                    message=f"{name} did not stop within {self.stop_timeout:g}s even after kill-workers",
                    target=name,
                )
            ) from None

    async def start(self, ctx: ActionContext) -> None:
        wanted = self._wanted(ctx)
        if self.detached_pid is not None:
            await self._wait_detached(ctx, self.detached_pid)
        for name in wanted:
            await start_and_wait(ctx, name)

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


async def _status_or_unknown(ctx: ActionContext, name: str) -> str:
    try:
        states = await cmdlets.get_services(ctx.session, [name], timeout=ctx.call_timeout)
        return states[name.upper()].status
    except Exception:  # only for the message; the timeout is the error we report
        return "unknown"


def iis_restart(*, stop_timeout: float) -> ServiceRestart:
    # Stopping WAS stops W3SVC (and other WAS dependents); starting W3SVC brings WAS back.
    return ServiceRestart("iis-restart", ["WAS"], ["W3SVC"], stop_timeout=stop_timeout, detached=False)


def http_restart() -> ServiceRestart:
    # HTTP.sys restarts for SSL changes take WinRM down (WinRM depends on HTTP): always detached.
    return ServiceRestart("http-restart", ["HTTP"], ["W3SVC", "WinRM"], stop_timeout=0, detached=True)


def services_restart(names: Sequence[str], *, stop_timeout: float, detached: bool) -> ServiceRestart:
    return ServiceRestart("services", list(names), list(names), stop_timeout=stop_timeout, detached=detached)
