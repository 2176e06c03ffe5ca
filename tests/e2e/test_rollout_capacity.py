"""Capacity floor and signals end to end."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from orchestrator.results import ExitCode
from tests.e2e.harness import (
    SLOW,
    InventorySpec,
    interrupt_twice_during_stop,
    killed_on_exit,
    wait_for_event,
    wait_for_line,
    wait_for_phase,
)


def test_a_node_unhealthy_before_the_run_counts_against_the_floor(farm: Any) -> None:
    f = farm(InventorySpec(nodes=3, rollout={"strategy": "window", "window": 1, "min_healthy": 2}))
    # Someone stopped IIS on web-02 before the run: it is out of rotation already.
    f.client("web-02").execute_ps("Stop-Service -Name W3SVC -Force")
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert run.report is not None
    assert run.report["plan"]["unhealthy"] == ["web-02"]
    # Taking web-01 first would have left one healthy node; the unhealthy one goes first.
    firsts = {
        n: min(e["ts"] for e in f.node_events(n, "service_control")) for n in ("web-01", "web-02", "web-03")
    }
    assert min(firsts, key=lambda n: firsts[n]) == "web-02"
    assert all(run.node(n)["outcome"] == "done" for n in ("web-01", "web-02", "web-03"))


def test_a_floor_that_cannot_be_met_ends_the_run_instead_of_waiting_forever(farm: Any) -> None:
    f = farm(
        InventorySpec(
            nodes=4,
            faults={"web-01": [{"kind": "start_failure", "service": "W3SVC"}]},
            rollout={
                "strategy": "window",
                "window": 1,
                "min_healthy": 3,
                "failure_budget": {"max_failures": 2},
            },
            timeouts={"node": 3},
        )
    )
    run = f.run()
    assert run.code == ExitCode.ABORTED_CAPACITY, run.stdout + run.stderr
    assert run.node("web-01")["outcome"] == "failed"
    assert [run.node(n)["outcome"] for n in ("web-02", "web-03", "web-04")] == ["not_started"] * 3


def test_first_sigint_lets_the_node_in_flight_finish_and_starts_no_other(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=3, sim=SLOW))
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events), "--report", str(tmp_path / "r.json"))
    wait_for_phase(events, "web-01", "stop", time.monotonic() + 30)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.ABORTED_SIGNAL
    report = json.loads((tmp_path / "r.json").read_text())
    outcomes = {n["name"]: (n["outcome"], n["rotation"]) for n in report["nodes"]}
    assert outcomes == {
        "web-01": ("done", "in"),
        "web-02": ("not_started", "in"),
        "web-03": ("not_started", "in"),
    }
    assert f.node_events("web-02", "service_control") == []


def test_second_sigint_stops_at_once_and_says_what_was_left(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=2, sim=SLOW))
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events), "--report", str(tmp_path / "r.json"))
    interrupt_twice_during_stop(proc, events, "web-01")
    assert proc.returncode == ExitCode.ABORTED_SIGNAL
    node = next(n for n in json.loads((tmp_path / "r.json").read_text())["nodes"] if n["name"] == "web-01")
    assert node["outcome"] == "interrupted"
    assert node["rotation"] == "out"  # drained by us and not put back: the report says so
    assert node["phases"][-1]["outcome"] == "cancelled"
    status = f.run_status()
    assert "web-01" in status and "interrupted" in status


def test_a_canary_whose_health_does_not_hold_during_the_bake_stops_the_rollout(
    farm: Any, tmp_path: Path
) -> None:
    f = farm(
        InventorySpec(
            nodes=3,
            rollout={
                "strategy": "batch",
                "batch": [1, 2],
                # Far longer than the run may take: the canary's failure must end the bake early.
                "canary": {"bake_seconds": 900},
                "failure_budget": {"max_failures": 1},
            },
        )
    )
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events), "--report", str(tmp_path / "r.json"))
    wait_for_event(events, time.monotonic() + 60, event="node_finished", node="web-01")
    # The canary is back and baking; then its site breaks.
    f.client("web-01").execute_ps("Stop-Service -Name W3SVC -Force")
    with killed_on_exit(proc):
        proc.communicate(timeout=120)  # a run that sat through the bake would still be waiting
    assert proc.returncode == ExitCode.ABORTED_BUDGET
    report = json.loads((tmp_path / "r.json").read_text())
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["web-01"]["outcome"] == "failed"
    assert "canary bake" in nodes["web-01"]["left_out_reason"]
    assert nodes["web-02"]["outcome"] == "not_started" and nodes["web-03"]["outcome"] == "not_started"
    assert f.node_events("web-02", "service_control") == []


def test_a_node_that_breaks_during_the_run_counts_against_the_floor_at_once(
    farm: Any, tmp_path: Path
) -> None:
    # Slow stops, so web-01 is still restarting when web-03 breaks and the watch sees it.
    slower = {"timings": {"default": {"stop": {"low": 2.0, "high": 2.0}, "start": {"low": 0.2, "high": 0.2}}}}
    f = farm(
        InventorySpec(nodes=3, sim=slower, rollout={"strategy": "window", "window": 1, "min_healthy": 2})
    )
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events), "--report", str(tmp_path / "r.json"), "--log-level", "info")
    wait_for_phase(events, "web-01", "stop", time.monotonic() + 30)
    f.client("web-03").execute_ps("Stop-Service -Name W3SVC -Force")  # someone else's doing
    broke = time.time()
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.SUCCEEDED, stderr
    assert '"node unhealthy (outside this run)"' in stderr and "web-03" in stderr
    first_control = {
        n: min(e["ts"] for e in f.node_events(n, "service_control") if e["ts"] > broke)
        for n in ("web-02", "web-03")
    }
    # With web-03 down, taking web-02 out would have left one healthy node: web-03 went first (it
    # costs no capacity), and web-02 only once web-03 was back.
    web03_back = max(e["ts"] for e in f.node_events("web-03", "service_state") if e["state"] == "Running")
    assert first_control["web-03"] < first_control["web-02"]
    assert web03_back < first_control["web-02"]


def test_second_sigint_during_preflight_stops_at_once_with_nothing_touched(farm: Any, tmp_path: Path) -> None:
    # web-02 takes a minute to answer anything: a run that waited for its pending answer (or went
    # on with its preflight) could not exit within the generous bound below, however loaded the
    # machine; one that abandons it exits in moments.
    f = farm(InventorySpec(nodes=2, faults={"web-02": [{"kind": "latency", "ms": 60000}]}))
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events), "--report", str(tmp_path / "r.json"))
    with killed_on_exit(proc):
        wait_for_phase(events, "web-02", "preflight", time.monotonic() + 30)
        proc.send_signal(signal.SIGINT)
        wait_for_line(proc, "stop requested", time.monotonic() + 30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=45)
    assert proc.returncode == ExitCode.ABORTED_SIGNAL
    report = json.loads((tmp_path / "r.json").read_text())
    assert [n["outcome"] for n in report["nodes"]] == ["not_started", "not_started"]
    assert [e for e in f.events() if e["kind"] == "service_control"] == []
