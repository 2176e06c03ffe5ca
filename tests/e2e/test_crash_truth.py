"""A crash while a node is stopping must not turn the half-stopped state into the recorded truth.

The orchestrator is killed with SIGKILL (no handler runs) once the farm itself logged W3LOGSVC
stopped on the node in flight; whatever runs next, `resume` or the plain `run` cron starts the next
night, must bring back every service that ran before the first attempt. The farm is asked directly
(Get-Service through pypsrp), not only the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.results import ExitCode
from tests.e2e.harness import SLOW, Farm, InventorySpec, wait_for_phase

WATCHED = ("WAS", "W3SVC", "W3LOGSVC")


def _kill_while_stopping(f: Farm, events: Path) -> int:
    proc = f.start_run("--events", str(events))
    wait_for_phase(events, "web-01", "stop", time.monotonic() + 30)
    f.wait_for_farm_event(
        time.monotonic() + 30, node="web-01", kind="service_state", service="W3LOGSVC", state="Stopped"
    )
    proc.kill()
    proc.communicate(timeout=30)
    assert f.services("web-01", *WATCHED)["W3LOGSVC"] == "Stopped"  # the damage a crash leaves
    return proc.pid


@pytest.mark.parametrize("command", ["resume", "run"])
def test_after_a_kill_during_stop_every_service_that_ran_runs_again(
    farm: Any, tmp_path: Path, command: str
) -> None:
    f = farm(InventorySpec(nodes=3, sim=SLOW))
    before = {n: f.services(n, *WATCHED) for n in ("web-01", "web-02", "web-03")}
    assert all(s == dict.fromkeys(WATCHED, "Running") for s in before.values()), before
    events = tmp_path / "events.jsonl"
    dead = _kill_while_stopping(f, events)
    first = json.loads(events.read_text().splitlines()[0])
    assert (first["event"], first["nodes"]) == ("run_started", ["web-01", "web-02", "web-03"])

    after = f.run(command=command)
    assert after.code == ExitCode.SUCCEEDED, after.stdout + after.stderr
    assert after.report is not None
    recovery = after.report["recovery"]
    # The dead process's lock is taken over, and said so.
    assert recovery["lock_takeover"]["pid"] == dead
    assert f"took over the lock of run {recovery['run_id']} (pid {dead}" in after.stderr
    assert recovery["repaired"] == {"web-01": "stop"}
    assert f"took over the lock of run {recovery['run_id']} (pid {dead}" in f.run_status()
    if command == "run":
        assert "repaired first what it left part-way: web-01 at stop" in after.stderr
        # Then the run proceeds: every node is restarted, the one caught part-way from where it was.
        assert [p["phase"] for p in after.node("web-01")["phases"]][1:] == [
            "stop",
            "start",
            "verify",
            "undrain",
        ]
        assert all(after.node(n)["outcome"] == "done" for n in ("web-01", "web-02", "web-03"))
    for name in ("web-01", "web-02", "web-03"):
        assert f.services(name, *WATCHED) == before[name], name
        node = after.node(name)
        assert node["services_before"]["W3LOGSVC"] == "Running", node
        assert node["rotation"] == "in"
    # The farm's log agrees: W3LOGSVC came back on the node the crash caught.
    states = [e["state"] for e in f.node_events("web-01", "service_state") if e["service"] == "W3LOGSVC"]
    assert states[-1] == "Running", states
