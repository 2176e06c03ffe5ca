"""Client load through a balancer's frontend, failures counted at the client, and a sampler of
HAProxy's own view of the servers during the run.

A request fails when it gets no answer (connection refused or reset, timeout) or a status other
than 200: that is what a user would see. Bounded in rate, count and time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from simfarm.haproxy import runtime_command


@dataclass
class Load:
    sent: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


async def generate(
    url: str, rate: float, stop: asyncio.Event, *, max_seconds: float, request_timeout: float = 10
) -> Load:
    """`rate` requests per second (each on its own schedule, not waiting for the previous one) until
    `stop` is set or `max_seconds` passed; returns once every request sent has an outcome."""
    load = Load()
    limit = aiohttp.ClientTimeout(total=request_timeout)
    connector = aiohttp.TCPConnector(limit=200)
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status == 200:
                    load.ok += 1
                else:
                    load.failures[f"HTTP {resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.failures[type(exc).__name__] += 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession(timeout=limit, connector=connector) as session:
        while not stop.is_set() and loop.time() - start < max_seconds:
            task = asyncio.create_task(one(session))
            pending.add(task)
            task.add_done_callback(pending.discard)
            load.sent += 1
            next_at = start + load.sent / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.gather(*pending)
    return load


# One runtime API command, as the farm itself sends them.
runtime = runtime_command


def servers(address: str, backend: str) -> dict[str, dict[str, str]]:
    """`show stat` rows of a backend's servers, by server name."""
    lines = runtime(address, "show stat -1 4 -1").splitlines()
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return {r["svname"]: r for r in rows if r["pxname"] == backend}


class Sampler:
    """Samples, in a thread, each server's status (`show stat`) and admin bits (`show servers
    state`): how many were serving (UP, including a transition such as `UP 1/2`: still in rotation
    and sent traffic), and which were ever drained."""

    def __init__(self, address: str, backend: str, interval: float = 0.1) -> None:
        self.address = address
        self.backend = backend
        self.interval = interval
        self.samples: list[tuple[float, dict[str, str]]] = []
        self.admin: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = servers(self.address, self.backend)
                self.samples.append((time.monotonic(), {name: r["status"] for name, r in rows.items()}))
                state = runtime(self.address, f"show servers state {self.backend}").splitlines()[2:]
                for fields in (line.split() for line in state if line.strip()):
                    self.admin.setdefault(fields[3], set()).add(int(fields[6]))
            except OSError:
                pass
            self._stop.wait(self.interval)

    def min_up(self) -> int:
        return min(sum(1 for s in statuses.values() if s.startswith("UP")) for _, statuses in self.samples)

    def seen(self, server: str, status: str) -> bool:
        return any(statuses.get(server) == status for _, statuses in self.samples)

    def drained(self, server: str) -> bool:
        """Whether the server's DRAIN bit was ever set (it stays set from drain until ready)."""
        return any(bits & 0x18 for bits in self.admin.get(server, ()))
