"""The demo inventory exactly as shipped: `orchestrator sim` on it, then `orchestrator run` on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.results import ExitCode
from tests.e2e.harness import DEMO_ADDRESSES, down_intervals, max_concurrent

pytestmark = DEMO_ADDRESSES

DEMO = Path(__file__).parents[2] / "inventories" / "demo.yaml"


def test_demo_inventory_restarts_every_node_gracefully_and_verified(farm: Any, tmp_path: Path) -> None:
    f = farm(DEMO)  # the demo's own addresses (127.0.1.x), credentials and faults
    policy = yaml.safe_load(DEMO.read_text())["rollout"]
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert run.report is not None
    names = [n["name"] for n in run.report["nodes"]]
    assert len(names) == 6
    events = f.events()
    assert [e for e in events if e["kind"] == "process_killed"] == []
    for name in names:
        mine = [e for e in events if e["node"] == name]
        stopped = [e["service"] for e in mine if e["kind"] == "service_state" and e["state"] == "Stopped"]
        assert stopped == ["W3LOGSVC", "W3SVC", "WAS"], stopped  # dependents first
        running = [e for e in mine if e["kind"] == "service_state" and e["state"] == "Running"]
        assert [e["service"] for e in running] == ["WAS", "W3SVC", "W3LOGSVC"]
        # Health was checked on the node itself after its services came back, before it was done.
        probes = [e for e in mine if e["kind"] == "http_request" and e["path"] == "/healthz"]
        after_start = [p for p in probes if p["ts"] > running[-1]["ts"] and p["status"] == 200]
        assert after_start, f"{name}: no health check after the restart"
        node = run.node(name)
        assert node["outcome"] == "done" and node["rotation"] == "in"
        verify = next(p for p in node["phases"] if p["phase"] == "verify")
        assert verify["outcome"] == "ok" and "/healthz" in verify["detail"]
    assert max_concurrent(down_intervals(f)) <= min(policy["window"], policy["max_unavailable"])
    # web-04 answers 1061 twice while pending (the demo's fault): the run waited it out.
    busy = [e for e in events if e["node"] == "web-04" and e["kind"] == "service_control_failed"]
    assert len(busy) == 2
