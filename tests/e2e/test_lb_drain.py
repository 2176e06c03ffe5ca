"""The drain waits for the requests the node itself has in flight (Get-WebRequest over the run's
WinRM session) and for the balancer's count; each drain-timeout policy."""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from simfarm.load import servers

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec
from tests.e2e.test_lb_haproxy import haproxy_inventory


@dataclass
class SlowRequest:
    """One long request in a thread; `status` and `ended` (wall clock) once it has an outcome."""

    url: str
    status: int | None = None
    ended: float | None = None
    error: str | None = None

    def start(self) -> threading.Thread:
        def run() -> None:
            try:
                with urllib.request.urlopen(self.url, timeout=30) as resp:
                    resp.read()
                    self.status = resp.status
            except OSError as exc:
                self.error = repr(exc)
            self.ended = time.time()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


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
    while time.monotonic() < deadline:
        if in_flight_on(f, node) >= count:
            return
    raise AssertionError(f"{node} never had {count} request(s) in flight")


def _first_stop(f: Any, node: str) -> float:
    controls = f.node_events(node, "service_control")
    return float(min(e["ts"] for e in controls if e["control"] == "stop"))


def _drain(run: Any, node: str) -> dict[str, Any]:
    phase: dict[str, Any] = next(p for p in run.node(node)["phases"] if p["phase"] == "drain")
    return phase


# Long enough to outlast the run's preflight on a busy machine: the request is confirmed in flight
# before the run starts, and must still be in flight when the drain begins.
LONG = 6


def test_behind_haproxy_the_drain_waits_for_both_counts(farm: Any, tmp_path: Path) -> None:
    inventory, _ = haproxy_inventory(tmp_path, InventorySpec(nodes=1))
    f = farm(inventory)
    slow = SlowRequest(f"http://{f.describe['load_balancer']['frontend']}/slow?seconds={LONG}")
    thread = slow.start()
    wait_in_flight(f, "web-01", 1)
    run = f.run()
    thread.join(30)
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert slow.status == 200, slow.error
    assert slow.ended is not None and _first_stop(f, "web-01") >= slow.ended
    assert "at most: balancer 1, node 1" in _drain(run, "web-01")["detail"]


def test_without_a_balancer_the_node_count_holds_the_stop_back_drain_timeout_fail(farm: Any) -> None:
    # The `none` driver cannot count sessions: only the node's own count sees this request.
    spec = InventorySpec(nodes=1)
    f = farm(spec)
    data = yaml.safe_load(f.inventory.read_text())
    data["load_balancer"] = {"driver": "none", "drain_timeout": 0.5}
    f.inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    address = f.describe["nodes"][0]["address"]
    slow = SlowRequest(f"http://{address}:8080/slow?seconds={LONG}")
    thread = slow.start()
    wait_in_flight(f, "web-01", 1)
    run = f.run()
    thread.join(30)
    node = run.node("web-01")
    assert node["outcome"] == "failed" and node["rotation"] == "out"
    drain = _drain(run, "web-01")
    assert drain["error"]["kind"] == "timed_out" and "still in flight" in drain["error"]["message"]
    assert "node 1" in drain["error"]["message"] and "balancer" not in drain["error"]["message"]
    assert f.node_events("web-01", "service_control") == []  # never stopped
    assert slow.status == 200, slow.error  # and the request finished


def test_drain_timeout_proceed_stops_the_node_anyway(farm: Any, tmp_path: Path) -> None:
    inventory, _ = haproxy_inventory(
        tmp_path, InventorySpec(nodes=1), lb={"drain_timeout": 0.5, "on_drain_timeout": "proceed"}
    )
    f = farm(inventory)
    slow = SlowRequest(f"http://{f.describe['load_balancer']['frontend']}/slow?seconds={LONG}")
    thread = slow.start()
    wait_in_flight(f, "web-01", 1)
    run = f.run()
    thread.join(30)
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert "proceeding (on_drain_timeout: proceed)" in _drain(run, "web-01")["detail"]
    assert slow.ended is not None and _first_stop(f, "web-01") < slow.ended  # stopped while it ran


def test_resume_after_a_drain_timeout_behind_haproxy_finishes_the_node(farm: Any, tmp_path: Path) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=1), lb={"drain_timeout": 0.5})
    f = farm(inventory)
    slow = SlowRequest(f"http://{f.describe['load_balancer']['frontend']}/slow?seconds={LONG}")
    thread = slow.start()
    wait_in_flight(f, "web-01", 1)
    run = f.run()
    assert run.node("web-01")["outcome"] == "failed" and _drain(run, "web-01")["error"]["kind"] == "timed_out"
    assert servers(sock, "web")["web-01"]["status"] == "DRAIN"  # left drained, not stopped
    thread.join(30)
    assert slow.status == 200, slow.error
    # The DRAIN found now is the earlier run's own, not an operator's: resume takes the node further.
    resumed = f.run(command="resume")
    assert resumed.code == ExitCode.SUCCEEDED, resumed.stdout + resumed.stderr
    assert resumed.node("web-01")["outcome"] == "done"
    assert servers(sock, "web")["web-01"]["status"] == "UP"
