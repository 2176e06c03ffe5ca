"""The journal's PostgreSQL goes away during a run. A short outage is waited out and the run
finishes; a long one stops the run from starting nodes and ends it with a clear outcome, and the next
run repairs. Either way the farm's own event log shows no service stopped or started twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.results import ExitCode
from tests.e2e.harness import SLOW, Farm, InventorySpec, _env, killed_on_exit, wait_for_line, wait_for_phase
from tests.e2e.test_two_controllers import pg_inventory
from tests.pgserver import PgServer

WATCHED = ("WAS", "W3SVC", "W3LOGSVC")
NODES = ("web-01", "web-02", "web-03")


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own: it is stopped and started again under the run."""
    server = PgServer.create()
    try:
        yield server
    finally:
        server.destroy()


def start(f: Farm, pg: PgServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(f.inventory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(), **pg.env()},
    )


def controls(f: Farm, name: str) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for e in f.node_events(name, "service_control"):
        key = (e["control"], e["service"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_short_database_outage_is_waited_out(farm: Any, tmp_path: Path, own_pg: PgServer) -> None:
    url = own_pg.create_database("journal")
    spec = InventorySpec(nodes=3, sim=SLOW)
    f = farm(pg_inventory(tmp_path, url, spec, journal_outage_seconds=60, journal_heartbeat_seconds=1))
    events = tmp_path / "events.jsonl"
    report = tmp_path / "report.json"
    proc = start(f, own_pg, "--events", str(events), "--report", str(report))
    with killed_on_exit(proc):
        wait_for_phase(events, "web-02", "stop", time.monotonic() + 60)
        own_pg.stop()
        # The run notices at its next record and waits; the database comes back a moment later.
        wait_for_line(proc, "journal unreachable: retrying", time.monotonic() + 60)
        own_pg.start()
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == ExitCode.SUCCEEDED, out + err
    assert "journal reachable again" in err
    result = json.loads(report.read_text())
    assert [n["outcome"] for n in result["nodes"]] == ["done"] * 3
    for name in NODES:
        assert f.services(name, *WATCHED) == dict.fromkeys(WATCHED, "Running")
        assert set(controls(f, name).values()) == {1}, (name, controls(f, name))
    # The journal has every record, the outage notwithstanding.
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", str(f.inventory)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), **own_pg.env()},
        check=True,
    ).stdout
    assert "succeeded (exit 0)" in status, status


def test_a_long_outage_stops_the_run_and_the_next_run_repairs(
    farm: Any, tmp_path: Path, own_pg: PgServer
) -> None:
    url = own_pg.create_database("journal")
    spec = InventorySpec(nodes=3, sim=SLOW)
    f = farm(pg_inventory(tmp_path, url, spec, journal_outage_seconds=1, journal_heartbeat_seconds=1))
    events = tmp_path / "events.jsonl"
    report = tmp_path / "report.json"
    proc = start(f, own_pg, "--events", str(events), "--report", str(report))
    with killed_on_exit(proc):
        wait_for_phase(events, "web-01", "stop", time.monotonic() + 60)
        own_pg.stop()
        out, err = proc.communicate(timeout=180)
    # No node started after the journal was lost; the outcome says why.
    assert proc.returncode == ExitCode.INTERNAL, out + err
    result = json.loads(report.read_text())
    assert result["outcome"] == "internal_error"
    assert "unreachable" in result["budget"]["stopped"], result["budget"]
    assert [n["outcome"] for n in result["nodes"]][1:] == ["not_started", "not_started"]
    assert controls(f, "web-02") == {} and controls(f, "web-03") == {}

    own_pg.start()
    again = start(f, own_pg, "--report", str(report))
    out, err = again.communicate(timeout=180)
    assert again.returncode == ExitCode.SUCCEEDED, out + err
    result = json.loads(report.read_text())
    assert result["recovery"]["repaired"].keys() == {"web-01"}, result["recovery"]
    for name in NODES:
        assert f.services(name, *WATCHED) == dict.fromkeys(WATCHED, "Running")
        # web-01 was part-way when the journal went: the repair finished it without a second stop.
        assert set(controls(f, name).values()) == {1}, (name, controls(f, name))
