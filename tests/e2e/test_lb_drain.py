"""The drain waits for the requests the node itself has in flight (Get-WebRequest over the run's
WinRM session) and for the balancer's count; each drain-timeout policy.

The long request is held by the farm's site until the test releases it (tests/e2e/held.py): the
tests know the drain observed the request instead of guessing how long a run takes to reach it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from simfarm.load import servers

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec, killed_on_exit
from tests.e2e.held import hold_one, wait_drain_saw
from tests.e2e.test_lb_haproxy import haproxy_inventory


def _first_stop(f: Any, node: str) -> float:
    controls = f.node_events(node, "service_control")
    return float(min(e["ts"] for e in controls if e["control"] == "stop"))


def _drain(report: dict[str, Any], node: str) -> dict[str, Any]:
    found = next(n for n in report["nodes"] if n["name"] == node)
    phase: dict[str, Any] = next(p for p in found["phases"] if p["phase"] == "drain")
    return phase


def _with_balancer(f: Any, lb: dict[str, Any]) -> None:
    data = yaml.safe_load(f.inventory.read_text())
    data["load_balancer"] = lb
    f.inventory.write_text(yaml.safe_dump(data, sort_keys=False))


def test_behind_haproxy_the_drain_waits_for_both_counts(farm: Any, tmp_path: Path) -> None:
    inventory, _ = haproxy_inventory(tmp_path, InventorySpec(nodes=1))
    f = farm(inventory)
    held, thread = hold_one(f, f.describe["load_balancer"]["frontend"])
    since = time.time()
    report = tmp_path / "report.json"
    proc = f.start_run("--report", str(report))
    with killed_on_exit(proc):
        wait_drain_saw(f, since, time.monotonic() + 60)
        assert f.node_events("web-01", "service_control") == []  # held back while the request runs
        held.release()
        out, err = proc.communicate(timeout=90)
    thread.join(30)
    assert proc.returncode == ExitCode.SUCCEEDED, out + err
    assert held.status == 200, held.error
    assert held.ended is not None and _first_stop(f, "web-01") >= held.ended
    assert "at most: balancer 1, node 1" in _drain(json.loads(report.read_text()), "web-01")["detail"]


def test_without_a_balancer_the_node_count_holds_the_stop_back_drain_timeout_fail(farm: Any) -> None:
    # The `none` driver cannot count sessions: only the node's own count sees this request.
    f = farm(InventorySpec(nodes=1))
    _with_balancer(f, {"driver": "none", "drain_timeout": 0.5})
    held, thread = hold_one(f, f"{f.describe['nodes'][0]['address']}:8080")
    run = f.run()
    node = run.node("web-01")
    assert node["outcome"] == "failed" and node["rotation"] == "out"
    drain = _drain(run.report or {}, "web-01")
    assert drain["error"]["kind"] == "timed_out" and "still in flight" in drain["error"]["message"]
    assert "node 1" in drain["error"]["message"] and "balancer" not in drain["error"]["message"]
    assert f.node_events("web-01", "service_control") == []  # never stopped
    held.release()
    thread.join(30)
    assert held.status == 200, held.error  # and the request finished


def test_drain_timeout_proceed_stops_the_node_anyway(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=1))
    _with_balancer(f, {"driver": "none", "drain_timeout": 0.5, "on_drain_timeout": "proceed"})
    held, thread = hold_one(f, f"{f.describe['nodes'][0]['address']}:8080")
    events = tmp_path / "run-events.jsonl"
    report = tmp_path / "report.json"
    proc = f.start_run("--events", str(events), "--report", str(report))
    with killed_on_exit(proc):
        # The farm's own log, not the run's stop phase event: the phase is announced before its
        # first control reaches the node, and a request released in between ends before the stop.
        f.wait_for_farm_event(time.monotonic() + 60, kind="service_control", node="web-01", control="stop")
        # IIS's graceful stop lets the request finish: end it now rather than at shutdownTimeLimit.
        held.release()
        out, err = proc.communicate(timeout=90)
    thread.join(30)
    assert proc.returncode == ExitCode.SUCCEEDED, out + err
    assert (
        "proceeding (on_drain_timeout: proceed)" in _drain(json.loads(report.read_text()), "web-01")["detail"]
    )
    assert held.ended is not None and _first_stop(f, "web-01") < held.ended  # stopped while it ran


def test_resume_after_a_drain_timeout_behind_haproxy_finishes_the_node(farm: Any, tmp_path: Path) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=1), lb={"drain_timeout": 0.5})
    f = farm(inventory)
    held, thread = hold_one(f, f.describe["load_balancer"]["frontend"])
    run = f.run()
    assert run.node("web-01")["outcome"] == "failed"
    assert _drain(run.report or {}, "web-01")["error"]["kind"] == "timed_out"
    assert servers(sock, "web")["web-01"]["status"] == "DRAIN"  # left drained, not stopped
    held.release()
    thread.join(30)
    assert held.status == 200, held.error
    # The DRAIN found now is the earlier run's own, not an operator's: resume takes the node further.
    resumed = f.run(command="resume")
    assert resumed.code == ExitCode.SUCCEEDED, resumed.stdout + resumed.stderr
    assert resumed.node("web-01")["outcome"] == "done"
    assert servers(sock, "web")["web-01"]["status"] == "UP"
