"""A run's lease on its farm, kept alive by a heartbeat from the running process.

The lease rows live in the journal (`Journal.acquire_lock`, `beat`, `release_lock`); this module
beats. The beat runs on a thread with a journal connection of its own, so neither a busy event loop
nor a journal call waiting out an outage on the run's connection delays it. When a beat finds the
lease gone (another controller judged this run dead and took the farm over), or cannot renew it for
a whole lease, the run is told to start no more nodes: from then on it may no longer be the only one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from orchestrator.addresses import host_key
from orchestrator.journal import Journal, JournalError

log = structlog.get_logger("orchestrator.lease")


@dataclass(frozen=True)
class LeaseTimes:
    lease: float = 30.0  # a lease outlives its last beat this long
    heartbeat: float = 5.0  # a beat this often
    outage: float = 20.0  # a journal call waits this long for an unreachable database


def farm_identity(hosts: Iterable[str]) -> list[str]:
    """The farm as its hosts, one spelling per machine: two inventories sharing one exclude each other."""
    return sorted({host_key(h) for h in hosts})


class Heartbeat:
    """Renews `run_id`'s lease every `times.heartbeat` seconds until stopped; `on_lost(reason)` is
    called once, from the beating thread, when the lease is lost or cannot be renewed in time."""

    def __init__(
        self,
        open_journal: Callable[[], Journal],
        run_id: str,
        times: LeaseTimes,
        on_lost: Callable[[str], None],
    ) -> None:
        self._open = open_journal
        self.run_id = run_id
        self.times = times
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{run_id}", daemon=True)
        self.lost: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.times.heartbeat + self.times.outage + 5)

    def _run(self) -> None:
        journal: Journal | None = None
        last = time.monotonic()
        try:
            while not self._stop.wait(self.times.heartbeat):
                try:
                    if journal is None:
                        journal = self._open()
                    renewed = journal.beat(self.run_id)
                except JournalError as exc:
                    log.warning("lease not renewed", run_id=self.run_id, error=str(exc))
                    if time.monotonic() - last > self.times.lease:
                        self._lose(f"the lease could not be renewed for {self.times.lease:g} s ({exc})")
                        return
                    continue
                if renewed is None:
                    self._lose("another controller took the farm's lease over")
                    return
                last = time.monotonic()
        finally:
            if journal is not None:
                journal.close()

    def _lose(self, reason: str) -> None:
        self.lost = reason
        log.error("lease lost: no node will start", run_id=self.run_id, reason=reason)
        self._on_lost(reason)
