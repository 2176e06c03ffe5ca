"""One simulated Windows web server: its identity, accounts, faults and machine state.

The WinRM transport (wsman/auth/listeners) uses only the surface marked TRANSPORT below; the Windows
behaviour (service control manager, IIS, processes, site) lives behind it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from simfarm.accounts import same_account
from simfarm.cmd import run_command_line
from simfarm.config import (
    Endpoint,
    ErrorsAfterStart,
    Latency,
    NodeSim,
    Resets,
    SimConfig,
    UnhealthyAfterStart,
    WinRMDown,
    WrongCredentials,
)
from simfarm.events import EventLog
from simfarm.iis import Iis
from simfarm.processes import ProcessTable
from simfarm.scm import Service, ServiceControlManager, ServiceState


class SimNode:
    def __init__(self, name: str, address: str, config: SimConfig, events: EventLog, index: int = 0) -> None:
        self.name = name
        self.address = address
        self.config = config
        self.sim: NodeSim = config.nodes.get(name, NodeSim())
        # Seeded per node so one node's draws do not depend on how many nodes the farm has.
        self.rng = random.Random(f"{config.seed}:{name}")
        self._events = events
        self._winrm_watchers: list[Callable[[bool], None]] = []
        self.index = index
        self.processes = ProcessTable(self)
        self.scm = ServiceControlManager(self)
        self.iis = Iis(self)
        # Set by the unhealthy_after_start fault on the first W3SVC start after boot.
        self.site_unhealthy = False
        # Set by the errors_after_start fault: pages answer 500, /healthz does not.
        self.site_errors = False
        self._winrm_up = False
        self._booted = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- TRANSPORT surface ------------------------------------------------------------------------

    def record(self, kind: str, **fields: Any) -> None:
        self._events.record(self.name, kind, **fields)

    def accepts(self, username: str, password: str) -> bool:
        if self.has_fault(WrongCredentials):
            return False
        return same_account(username, self.config.username) and password == self.config.password

    def endpoint(self, name: str) -> Endpoint | None:
        """A JEA endpoint by configuration name (case-insensitive, as WinRM resolves them)."""
        for ep in self.config.endpoints:
            if ep.name.lower() == name.lower():
                return ep
        return None

    @property
    def latency_s(self) -> float:
        return sum(f.ms for f in self.sim.faults if isinstance(f, Latency)) / 1000.0

    @property
    def reset_share(self) -> float:
        return max((f.share for f in self.sim.faults if isinstance(f, Resets)), default=0.0)

    def winrm_running(self) -> bool:
        """Whether the WinRM service runs, i.e. whether its listeners accept connections."""
        return self.scm.state("WinRM") == ServiceState.Running

    def on_winrm_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(running)` whenever WinRM enters or leaves the Running state."""
        self._winrm_watchers.append(callback)

    def _notify_winrm(self, running: bool) -> None:
        for cb in list(self._winrm_watchers):
            cb(running)

    # --- machine state ------------------------------------------------------------------------------

    async def boot(self) -> None:
        """Power on: every service Running except what the faults say, pools started and warm."""
        self.scm.on_state(self.iis.service_changed)
        self.scm.on_state(self._service_changed)
        self.scm.set_stop_work(self.iis.service_stopping)
        self.scm.boot()
        self.iis.boot()
        self._winrm_up = self.winrm_running()
        self._booted = True
        self.record("boot", winrm=self._winrm_up)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` as one of the node's background tasks (cancelled by close())."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def spawn_detached(self, command_line: str) -> int:
        """Start a process outside any WinRM shell (Win32_Process.Create); returns its PID."""
        image = command_line.strip().split(" ", 1)[0].strip('"').rsplit("\\", 1)[-1]
        name = image[:-4] if image.lower().endswith(".exe") else image
        proc = self.processes.spawn(name or "cmd", command_line)
        self.record("process_created", pid=proc.pid, command_line=command_line)

        async def run() -> None:
            out: list[str] = []
            try:
                code = await run_command_line(self, command_line, out.append, out.append)
            finally:
                self.processes.exit(proc.pid)
            self.record("process_exited", pid=proc.pid, exit_code=code, output="".join(out))

        task = self.spawn(run())

        def killed(_source: str) -> None:
            task.cancel()

        proc.on_kill = killed
        return proc.pid

    async def close(self) -> None:
        """Stop the node's background work (transitions, detached processes, draining workers)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.scm.close()

    def _service_changed(self, svc: Service, state: ServiceState, abrupt: bool) -> None:
        if svc.name == "WinRM":
            running = state == ServiceState.Running
            if running != self._winrm_up:
                self._winrm_up = running
                self._notify_winrm(running)
        if svc.name == "W3SVC" and state == ServiceState.Running and self._booted:
            self.site_unhealthy = self.has_fault(UnhealthyAfterStart)
            self.site_errors = self.has_fault(ErrorsAfterStart)

    # --- faults -----------------------------------------------------------------------------------

    def has_fault(self, kind: type, service: str | None = None) -> bool:
        return self.fault(kind, service) is not None

    def fault(self, kind: type, service: str | None = None) -> Any:
        for f in self.sim.faults:
            if isinstance(f, kind) and (
                service is None or getattr(f, "service", "").lower() == service.lower()
            ):
                return f
        return None

    @property
    def starts_with_winrm_down(self) -> bool:
        return self.has_fault(WinRMDown)
