"""Two controllers, one farm, one PostgreSQL journal: one runs, the other is refused while the first
beats; when the first dies in the middle of a node's stop, the other takes the farm over once the
lease has expired, repairs the node it left and finishes. The farm itself is asked at the end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator.journal import Journal
from orchestrator.results import ExitCode
from tests.e2e.harness import SLOW, InventorySpec, _blocks, _env, wait_for_event

WATCHED = ("WAS", "W3SVC", "W3LOGSVC")
NODES = ("web-01", "web-02", "web-03")
LEASE = {"journal_lease_seconds": 2, "journal_heartbeat_seconds": 0.5}


def pg_inventory(tmp_path: Path, journal: str, spec: InventorySpec, **extra: Any) -> Path:
    data = spec.render(next(_blocks), 8080)
    data.update(journal=journal, **extra)
    source = tmp_path / "source.yaml"
    source.write_text(yaml.safe_dump(data, sort_keys=False))
    return source


def controller(name: str, inventory: Path, *args: str) -> subprocess.Popen[str]:
    env = {**_env(), "ORCHESTRATOR_CONTROLLER": name}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(inventory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stops_started(events: Path) -> list[str]:
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    return [e["node"] for e in lines if (e.get("phase"), e.get("status")) == ("stop", "started")]


def test_the_second_controller_is_refused_then_takes_over_a_dead_one(
    farm: Any, tmp_path: Path, pg_url: str
) -> None:
    f = farm(pg_inventory(tmp_path, pg_url, InventorySpec(nodes=3, sim=SLOW), **LEASE))
    before = {n: f.services(n, *WATCHED) for n in NODES}
    assert all(s == dict.fromkeys(WATCHED, "Running") for s in before.values()), before
    events = tmp_path / "a-events.jsonl"
    a = controller("ctl-a", f.inventory, "--events", str(events))
    try:
        wait_for_event(events, time.monotonic() + 60, event="run_started")
        run_a = json.loads(events.read_text().splitlines()[0])["run_id"]

        b = controller("ctl-b", f.inventory)
        _, refused = b.communicate(timeout=120)
        assert b.returncode == ExitCode.LOCKED, refused
        assert f"run {run_a} (controller ctl-a" in refused and "last beat" in refused, refused
        # Either controller reads the shared journal: the run is in progress, and whose it is.
        status = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", str(f.inventory)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_env(), "ORCHESTRATOR_CONTROLLER": "ctl-b"},
            check=False,
        ).stdout
        assert f"run {run_a} is in progress" in status and "controller ctl-a" in status, status

        # SIGKILL ctl-a the moment the next node's stop begins: no handler runs, the lease stays.
        seen = len(stops_started(events))
        deadline = time.monotonic() + 60
        while len(stops_started(events)) == seen:
            assert time.monotonic() < deadline, "no node started stopping"
            time.sleep(0.02)
        a.send_signal(signal.SIGKILL)
        a.communicate(timeout=30)
    finally:
        if a.poll() is None:
            a.kill()
            a.communicate()
    caught = stops_started(events)[-1]
    done_by_a = [
        json.loads(line)["node"]
        for line in events.read_text().splitlines()
        if json.loads(line).get("event") == "node_finished"
    ]

    with Journal(pg_url) as journal:
        held = journal.lock_holder(f.inventory)
        assert held is not None and held[0].run_id == run_a and held[0].controller == "ctl-a"
        # The lease outlives the dead controller until its last beat is older than the lease.
        deadline = time.monotonic() + 30
        while (held := journal.lock_holder(f.inventory)) is not None and held[1]:
            assert time.monotonic() < deadline, "the dead controller's lease never expired"
            time.sleep(0.1)

    report = tmp_path / "b-report.json"
    b = controller("ctl-b", f.inventory, "--report", str(report))
    out, err = b.communicate(timeout=180)
    assert b.returncode == ExitCode.SUCCEEDED, out + err
    result = json.loads(report.read_text())
    takeover = result["recovery"]["lock_takeover"]
    assert (takeover["run_id"], takeover["controller"], takeover["taken_by"]) == (run_a, "ctl-a", "ctl-b")
    assert "heartbeat stopped" in takeover["why"]
    assert f"took over the lock of run {run_a}" in err and "controller ctl-a" in err, err
    assert result["recovery"]["repaired"] == {caught: "stop"}
    for name in NODES:
        node = next(n for n in result["nodes"] if n["name"] == name)
        assert (node["outcome"], node["rotation"]) == ("done", "in"), node
        assert f.services(name, *WATCHED) == before[name], name
    # The node caught mid-stop: each service stopped once and started once over both runs; the
    # controller that took over did not stop it a second time. Nodes ctl-a finished were restarted
    # again by ctl-b, as any run after an incomplete one does: once by each run, never more.
    for name in NODES:
        for control in ("stop", "start"):
            for service in WATCHED:
                count = sum(
                    1
                    for e in f.node_events(name, "service_control")
                    if (e["control"], e["service"]) == (control, service)
                )
                expected = 2 if name in done_by_a else 1
                assert count == expected, (name, control, service, count, done_by_a, caught)


def test_two_inventories_sharing_a_host_exclude_each_other(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=2, sim=SLOW))
    # Another team's file: only web-02, under another name and spelling, in the same journal.
    other = yaml.safe_load(f.inventory.read_text())
    host = other["nodes"][1]["host"]
    other["nodes"] = [{"name": "api-02", "host": host.upper() if host.isalpha() else f"::ffff:{host}"}]
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other, sort_keys=False))
    events = tmp_path / "events.jsonl"
    first = controller("ctl-a", f.inventory, "--events", str(events))
    try:
        wait_for_event(events, time.monotonic() + 60, event="run_started")
        run_a = json.loads(events.read_text().splitlines()[0])["run_id"]
        second = controller("ctl-b", other_path)
        _, refused = second.communicate(timeout=120)
        assert second.returncode == ExitCode.LOCKED, refused
        assert f"run {run_a} (controller ctl-a" in refused, refused
        out, err = first.communicate(timeout=120)
        assert first.returncode == ExitCode.SUCCEEDED, out + err
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    # Released at the end of the first run: the other inventory's run may go now.
    again = controller("ctl-b", other_path)
    out, err = again.communicate(timeout=120)
    assert again.returncode == ExitCode.SUCCEEDED, out + err
