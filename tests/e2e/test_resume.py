"""`orchestrator resume`: nodes left out of rotation are brought back; finished ones are not touched."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.results import ExitCode
from tests.e2e.harness import SLOW, InventorySpec, interrupt_twice_during_stop, wait_for_phase


def test_resume_brings_back_a_node_an_operator_unstuck(farm: Any) -> None:
    f = farm(
        InventorySpec(
            nodes=3, faults={"web-01": [{"kind": "hang_stop", "service": "W3SVC"}]}, timeouts={"stop": 1.5}
        )
    )
    first = f.run()
    assert first.code == ExitCode.PARTIAL
    assert first.report is not None
    assert first.node("web-01")["rotation"] == "out"
    # The operator looks at web-01 and ends the stuck worker by hand; W3SVC then finishes stopping.
    f.client("web-01").execute_ps("Stop-Process -Name w3wp -Force")
    touched_before = len([e for e in f.events() if e["kind"] == "service_control"])

    resumed = f.run(command="resume")
    assert resumed.code == ExitCode.SUCCEEDED, resumed.stdout + resumed.stderr
    assert "changed since run" not in resumed.stderr  # the same inventory as the first run
    assert resumed.report is not None
    assert resumed.report["plan"]["resumes"] == first.report["run_id"]
    node = resumed.node("web-01")
    assert node["outcome"] == "done" and node["rotation"] == "in"
    assert [p["phase"] for p in node["phases"]] == ["preflight", "stop", "start", "verify", "undrain"]
    # What ran before the first attempt runs again, though the first attempt left it stopped.
    assert node["services_after"]["W3LOGSVC"] == "Running" and node["services_after"]["W3SVC"] == "Running"
    assert [resumed.node(n)["outcome"] for n in ("web-02", "web-03")] == ["skipped", "skipped"]
    later = [e for e in f.events() if e["kind"] == "service_control"][touched_before:]
    assert {e["node"] for e in later} == {"web-01"}  # the finished nodes were not touched again

    again = f.run(command="resume")
    assert again.code == ExitCode.SUCCEEDED and "nothing to resume" in again.stdout


def test_resume_finishes_a_run_stopped_at_once(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=2, sim=SLOW))
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events))
    interrupt_twice_during_stop(proc, events, "web-01")
    assert proc.returncode == ExitCode.ABORTED_SIGNAL

    resumed = f.run(command="resume")
    assert resumed.code == ExitCode.SUCCEEDED, resumed.stdout + resumed.stderr
    assert "web-01 at stop" in resumed.stdout and "web-02 at drain" in resumed.stdout
    for name in ("web-01", "web-02"):
        assert resumed.node(name)["outcome"] == "done"
        assert resumed.node(name)["rotation"] == "in"
    status = f.run_status()
    assert "succeeded" in status
    assert json.loads(json.dumps(resumed.report))["totals"]["out_of_rotation"] == 0


def test_after_a_crash_status_says_so_and_resume_finishes_the_run(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=2, sim=SLOW))
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events))
    wait_for_phase(events, "web-01", "stop", time.monotonic() + 30)
    proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up, the lock stays
    proc.communicate(timeout=30)

    status = f.run_status()
    assert "incomplete" in status and "did not finish: its process is gone" in status
    assert "web-01" in status and "interrupted" in status

    # The operator adjusts the inventory before resuming: allowed, and said.
    f.inventory.write_text(f.inventory.read_text() + "# stop timeout reviewed after the crash\n")
    resumed = f.run(command="resume")
    assert resumed.code == ExitCode.SUCCEEDED, resumed.stdout + resumed.stderr
    assert "changed since run" in resumed.stderr
    assert "web-01 at stop" in resumed.stdout
    assert all(resumed.node(n)["outcome"] == "done" for n in ("web-01", "web-02"))
    assert "succeeded" in f.run_status()
