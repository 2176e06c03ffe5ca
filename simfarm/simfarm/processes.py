"""The processes of a simulated node, as Get-Process and Win32_Process see them.

They belong to the machine, not to IIS: service hosts, w3wp workers and processes started by cmd or
Invoke-CimMethod all live here; IIS only spawns and watches its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simfarm.node import SimNode


class AccessDeniedError(Exception):
    """Terminating a protected process (System, the RPC host): Win32 error 5."""


@dataclass
class Process:
    pid: int
    name: str
    command_line: str
    start_time: float = field(default_factory=time.time)
    protected: bool = False
    # What dies with the process (in-flight requests, hosted services); None when nothing does.
    on_kill: Callable[[str], None] | None = None


class ProcessTable:
    """The node's processes as Get-Process sees them; PIDs are multiples of 4, as on Windows."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._by_pid: dict[int, Process] = {}

    def spawn(
        self,
        name: str,
        command_line: str,
        *,
        protected: bool = False,
        on_kill: Callable[[str], None] | None = None,
    ) -> Process:
        while True:
            pid = self._node.rng.randrange(1000, 20000) * 4
            if pid not in self._by_pid:
                break
        proc = Process(pid, name, command_line, protected=protected, on_kill=on_kill)
        self._by_pid[pid] = proc
        return proc

    def add_fixed(self, pid: int, name: str) -> Process:
        proc = Process(pid, name, name, protected=True)
        self._by_pid[pid] = proc
        return proc

    def exit(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def all(self) -> list[Process]:
        return sorted(self._by_pid.values(), key=lambda p: (p.name.lower(), p.pid))

    def get(self, pid: int) -> Process | None:
        return self._by_pid.get(pid)

    def kill(self, pid: int, source: str) -> None:
        """TerminateProcess: everything the process was doing is lost."""
        proc = self._by_pid.get(pid)
        if proc is None:
            return
        if proc.protected:
            raise AccessDeniedError(pid)
        del self._by_pid[pid]
        self._node.record("process_killed", pid=pid, process=proc.name, source=source)
        if proc.on_kill is not None:
            proc.on_kill(source)
