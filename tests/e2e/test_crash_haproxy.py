"""SIGKILL behind a real HAProxy: in the middle of a drain, between `state drain` and `state ready`
(the wait for fresh checks), during the watch after `ready`, and around them; then `resume` or the
plain `run` cron would start.

After each, every restarted server is back UP in HAProxy's own eyes, the servers an operator put in
MAINT or DRAIN before the first run are still so and their nodes untouched, every node has the
services it had before the first run and is healthy, and the farm's event log shows no restart its
state did not require. The drain the killed run left is its own (the write-ahead record says the
server was in rotation before the first run), so it is undone; the operator's MAINT and DRAIN are
not.

One farm and one HAProxy serve every point (each leaves them as it found them); each point has its
own inventory copy and so its own journal.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from simfarm.load import runtime, servers

from orchestrator.journal import Journal
from orchestrator.results import ExitCode
from tests.e2e.harness import Farm, InventorySpec, start_farm, stop_farm, wait_for_event, wait_for_phase
from tests.e2e.held import SlowRequest, wait_in_flight
from tests.e2e.test_crash import WATCHED, farm_truth, kill_at
from tests.e2e.test_lb_haproxy import haproxy_inventory

RESTARTED = ("web-01", "web-02", "web-03")
# Taken out by the operator before the first run: what HAProxy shows for each.
HELD = {"web-04": "MAINT", "web-05": "DRAIN"}
# The drain held this long by a request in flight on the node: long enough to outlast the run's
# preflight on a busy machine, so the kill always lands while the drain waits.
HOLD = 5


@dataclasses.dataclass(frozen=True)
class Point:
    command: str  # what runs after the kill: resume, or the plain run cron would start
    match: dict[str, str]  # the event of the run's own stream that arms the kill
    # Then, how HAProxy's status for the node must begin before the kill ("DOWN 1/2": checks rising).
    balancer: str | None = None
    hold: bool = False  # a request in flight on the node holds its drain open
    # After `ready`, how long the run watches the server stay UP: a window between HAProxy's UP
    # and the node's done (only where a point needs it: every run pays it).
    watch: float = 0.0
    window: int = 3  # nodes in flight at once

    @property
    def id(self) -> str:
        return "-".join([self.command, *self.match.values(), *([self.balancer] if self.balancer else [])])


def _phase(node: str, phase: str, status: str) -> dict[str, str]:
    return {"event": "phase", "phase": phase, "status": status, "node": node}


POINTS = [
    # Mid-drain: `state drain` applied, the node still serving the request that holds the drain.
    Point("resume", _phase("web-01", "drain", "started"), balancer="DRAIN", hold=True),
    Point("run", _phase("web-01", "drain", "started"), balancer="DRAIN", hold=True),
    Point("resume", _phase("web-02", "stop", "started")),
    Point("run", _phase("web-03", "verify", "ok")),
    # Between `state drain` and `state ready`: HAProxy was asked for fresh checks (health down, then
    # `rise` passing checks) while the server is still drained, and shows them rising.
    Point("resume", _phase("web-01", "undrain", "started"), balancer="DOWN"),
    Point("run", _phase("web-02", "undrain", "started"), balancer="DOWN"),
    # After `state ready`, while the run watches the server stay UP before calling the node done.
    Point("resume", _phase("web-03", "undrain", "started"), balancer="UP", watch=1.0),
    # One node at a time, so that the others are still to come when the first is done.
    Point("run", {"event": "node_finished", "node": "web-01"}, window=1),
]

FAST = {"stop": {"low": 0.02, "high": 0.06}, "start": {"low": 0.02, "high": 0.06}}
SPEC = InventorySpec(
    nodes=5,
    rollout={"strategy": "window"},
    sim={"timings": {"default": FAST}},
)


@pytest.fixture(scope="module")
def lb_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Farm, str]]:
    workdir = tmp_path_factory.mktemp("crash-lb-farm")
    inventory, (sock,) = haproxy_inventory(workdir, SPEC)
    f = start_farm(inventory, workdir)
    try:
        for node, status in HELD.items():
            assert runtime(sock, f"set server web/{node} state {status.lower()}").strip() == ""
        yield f, sock
    finally:
        stop_farm(f)


def _statuses(sock: str) -> dict[str, str]:
    return {name: row["status"] for name, row in servers(sock, "web").items()}


def _wait_statuses(sock: str, expected: dict[str, str], deadline: float) -> None:
    while (seen := _statuses(sock)) != expected:
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def _node_is(sock: str, node: str, status: str) -> Callable[[], bool]:
    return lambda: _statuses(sock)[node].startswith(status)


SETTLED = {**dict.fromkeys(RESTARTED, "UP"), **HELD}


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_a_kill_behind_haproxy_is_recovered(lb_farm: tuple[Farm, str], tmp_path: Path, point: Point) -> None:
    shared, sock = lb_farm
    inventory = tmp_path / "inventory.yaml"
    data = yaml.safe_load(shared.inventory.read_text())
    assert data["load_balancer"]["driver"] == "haproxy"
    data["load_balancer"]["watch_seconds"] = point.watch
    data["rollout"]["window"] = point.window
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    f = dataclasses.replace(shared, inventory=inventory, workdir=tmp_path)
    # Each point leaves HAProxy as it found it; the checks may still be confirming the last one.
    _wait_statuses(sock, SETTLED, time.monotonic() + 30)
    since = time.time()

    node = point.match.get("node")
    slow: tuple[SlowRequest, threading.Thread] | None = None
    if point.hold:
        assert node is not None
        address = next(n["address"] for n in f.describe["nodes"] if n["name"] == node)
        request = SlowRequest(f"http://{address}:8080/slow?seconds={HOLD}")
        slow = request, request.start()
        wait_in_flight(f, node, 1)
    then = _node_is(sock, node, point.balancer) if point.balancer and node else None
    assert kill_at(f, tmp_path / "events.jsonl", point.match, time.monotonic() + 60, then) == -9

    with Journal(tmp_path / "journal.sqlite") as journal:
        dead = journal.latest_run(inventory)
        assert dead is not None and dead.outcome == "incomplete"
        dead_states = {s.name: s for s in journal.node_states(dead.run_id)}
    for state in dead_states.values():
        if state.last_phase not in (None, "preflight"):
            # Written ahead: every service ran and the server was in rotation before the first run.
            assert state.before is not None, state
            assert state.before.services == dict.fromkeys(WATCHED, "Running"), state
            assert state.before.rotation == "in", state
    if point.hold:
        # The kill landed mid-drain: drained in HAProxy, the drain not finished, nothing stopped.
        assert node is not None
        assert (dead_states[node].last_phase, dead_states[node].last_status) == ("drain", "started")
        assert _statuses(sock)[node] == "DRAIN"
    for name in HELD:  # the operator's servers: never touched
        assert dead_states[name].last_phase in (None, "preflight"), dead_states[name]
    finished = {name for name, s in dead_states.items() if s.outcome == "done"}

    after = f.run(command=point.command)
    assert after.code == ExitCode.SUCCEEDED, after.stdout + after.stderr
    if slow is not None:
        request, thread = slow
        thread.join(30)
        assert request.status == 200, request.error  # the request the drain waited for was served

    # HAProxy: every server the runs restarted is UP again; the operator's MAINT and DRAIN are still there.
    assert _statuses(sock) == SETTLED
    assert farm_truth(f, RESTARTED) == {n: (dict.fromkeys(WATCHED, "Running"), True) for n in RESTARTED}
    if after.report is not None:
        for name in HELD:
            held = after.node(name)
            assert (held["outcome"], held["rotation"]) == ("skipped", "out"), held
        assert all(after.node(n)["rotation"] == "in" for n in RESTARTED)
        assert after.report["recovery"]["lock_takeover"]["run_id"] == dead.run_id
    else:
        assert point.command == "resume" and finished == set(RESTARTED), after.stdout
    with Journal(tmp_path / "journal.sqlite") as journal:
        assert journal.lock_holder(inventory) is None

    # The farm's event log: the held node never touched, no other restarted more than required.
    events = [e for e in shared.events() if e["ts"] >= since]
    assert [e for e in events if e["node"] in HELD and e["kind"] == "service_control"] == []
    stops = Counter(
        e["node"]
        for e in events
        if e["kind"] == "service_state" and e["service"] == "W3SVC" and e["state"] == "Stopped"
    )
    again = finished if point.command == "run" else set()
    assert {n: stops[n] for n in RESTARTED} == {n: 2 if n in again else 1 for n in RESTARTED}, (
        point,
        finished,
    )


@pytest.mark.parametrize("command", ["resume", "run"])
def test_a_server_taken_out_by_hand_mid_run_stays_out_after_a_crash(
    farm: Any, tmp_path: Path, command: str
) -> None:
    """The operator drains web-02 while the run restarts web-01: its drain is refused, nothing on it
    changes. The run is killed later; what runs next must not take that DRAIN for the dead run's
    own (the record written ahead says web-02 was in rotation before the run, yet no run drained it)."""
    spec = InventorySpec(nodes=3, sim={"timings": {"default": FAST}})
    f = farm(haproxy_inventory(tmp_path, spec)[0])
    sock = f.describe["load_balancer"]["socket"]
    events = tmp_path / "events.jsonl"
    proc = f.start_run("--events", str(events))
    try:
        wait_for_phase(events, "web-01", "drain", time.monotonic() + 30)
        assert runtime(sock, "set server web/web-02 state drain").strip() == ""
        wait_for_event(events, time.monotonic() + 30, event="phase", node="web-03", phase="stop")
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    with Journal(tmp_path / "journal.sqlite") as journal:
        dead = journal.latest_run(f.inventory)
        assert dead is not None and dead.outcome == "incomplete"
        web02 = next(s for s in journal.node_states(dead.run_id) if s.name == "web-02")
    assert (web02.last_phase, web02.last_status, web02.last_error_kind) == ("drain", "failed", "refused")
    assert web02.before is not None and web02.before.rotation == "in"

    after = f.run(command=command)
    assert after.code == ExitCode.SUCCEEDED, after.stdout + after.stderr
    assert _statuses(sock) == {"web-01": "UP", "web-02": "DRAIN", "web-03": "UP"}
    left = after.node("web-02")
    assert (left["outcome"], left["rotation"]) == ("skipped", "out"), left
    assert "left out by the operator" in left["left_out_reason"]
    assert after.report is not None and "web-02" not in after.report["recovery"]["repaired"]
    assert f.node_events("web-02", "service_control") == []  # never touched, by either run
    assert f.services("web-03", *WATCHED) == dict.fromkeys(WATCHED, "Running")
