"""Requests held in flight on a node until the test releases them.

The farm's site holds `/slow?hold=KEY` until `/release?key=KEY`, and logs each Get-WebRequest with
the count it saw (`web_requests_read`): a test knows the run's drain observed the request instead
of guessing how long a run takes to reach it.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

HOLD_KEY = "drain-test"


@dataclass
class SlowRequest:
    """One request in a thread; `status` and `ended` (wall clock) once it has an outcome. The site
    answers `/slow?seconds=N` after a set time (for a run killed mid-drain: nobody has to release it)."""

    url: str
    timeout: float = 30
    status: int | None = None
    ended: float | None = None
    error: str | None = None

    def start(self) -> threading.Thread:
        def run() -> None:
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                    resp.read()
                    self.status = resp.status
            except OSError as exc:
                self.error = repr(exc)
            self.ended = time.time()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@dataclass
class HeldRequest(SlowRequest):
    """One request the site holds (`/slow?hold=KEY`) until `release`."""

    node: str = ""  # ADDR:PORT of the node's site that holds it (where the release goes)
    key: str = HOLD_KEY

    def release(self) -> None:
        with urllib.request.urlopen(f"http://{self.node}/release?key={self.key}", timeout=10) as resp:
            resp.read()


def in_flight_on(f: Any, node: str) -> int:
    """What Get-WebRequest says on the node, through pypsrp as an operator's script would ask."""
    from pypsrp.powershell import PowerShell, RunspacePool

    with RunspacePool(f.client(node).wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WebRequest")
        output = ps.invoke()
    assert not ps.had_errors
    assert all(o.adapted_properties["url"].startswith("/slow") for o in output)
    return len(output)


def wait_in_flight(f: Any, node: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while in_flight_on(f, node) < count:
        assert time.monotonic() < deadline, f"{node} never had {count} request(s) in flight"


def hold_one(f: Any, via: str) -> tuple[HeldRequest, threading.Thread]:
    """A request held on web-01 (the first node), through `via`, confirmed in flight there."""
    # `via` is a node's site or the balancer's frontend; the release goes to the node that holds it.
    held = HeldRequest(
        f"http://{via}/slow?hold={HOLD_KEY}", timeout=60, node=f"{f.describe['nodes'][0]['address']}:8080"
    )
    thread = held.start()
    wait_in_flight(f, "web-01", 1)
    return held, thread


def wait_drain_saw(f: Any, since: float, deadline: float) -> None:
    """Until the run's drain has read the node's in-flight requests and seen at least one."""
    while time.monotonic() < deadline:
        if any(e["ts"] > since and e["count"] >= 1 for e in f.node_events("web-01", "web_requests_read")):
            return
        time.sleep(0.05)
    raise AssertionError("the drain never read the node's in-flight requests")
