"""One simulated Windows web server: its identity, accounts, faults and machine state.

The WinRM transport (wsman/auth/listeners) uses only the surface marked TRANSPORT below; the Windows
behaviour (service control manager, IIS, processes, site) lives behind it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from orchestrator.sim.config import Endpoint, Latency, NodeSim, Resets, SimConfig, WinRMDown, WrongCredentials
from orchestrator.sim.events import EventLog


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

    # --- TRANSPORT surface ------------------------------------------------------------------------

    def record(self, kind: str, **fields: Any) -> None:
        self._events.record(self.name, kind, **fields)

    def accepts(self, username: str, password: str) -> bool:
        if self.has_fault(WrongCredentials):
            return False
        return _user_key(username) == _user_key(self.config.username) and password == self.config.password

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
        raise NotImplementedError  # filled in by the service control manager

    def on_winrm_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(running)` whenever WinRM enters or leaves the Running state."""
        self._winrm_watchers.append(callback)

    def _notify_winrm(self, running: bool) -> None:
        for cb in list(self._winrm_watchers):
            cb(running)

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


def _user_key(username: str) -> str:
    # Windows accepts DOMAIN\\user, user@domain and user alike for a local account; case-insensitive.
    user = username.split("\\")[-1].split("@")[0]
    return user.lower()
