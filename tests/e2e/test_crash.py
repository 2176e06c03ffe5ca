"""SIGKILL at seeded points over every phase of a rolling restart, then `resume` or a plain `run`.

Each point is the k-th event of a phase and status in the run's own event stream (`--events`); the
orchestrator is killed with SIGKILL (no handler runs) the moment it appears. After each, whatever
runs next must leave every node with the services it had before the first run, healthy and in
rotation; the journal must be consistent (what ran before was written ahead of every change, the
lock released, every node accounted for); and the farm's own event log must show no node restarted
more than its state required: once in all for `resume`, and for a plain `run` once more only for
the nodes the killed run had finished.

One farm serves every point (each leaves it as it found it); each point has its own inventory copy
and so its own journal.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.journal import Journal
from orchestrator.results import ExitCode
from tests.e2e.harness import Farm, InventorySpec, start_farm, stop_farm

NODES = ("web-01", "web-02", "web-03")
WATCHED = ("HTTP", "RPCSS", "WAS", "W3SVC", "W3LOGSVC")  # what iis-restart records and restores
PHASES = ("preflight", "drain", "stop", "start", "verify", "undrain")


@dataclasses.dataclass(frozen=True)
class Point:
    command: str  # what runs after the kill: resume, or the plain run cron would start
    match: dict[str, str]  # the event that triggers the kill

    @property
    def id(self) -> str:
        return "-".join([self.command, *self.match.values()])


def _node(rng: random.Random, phase: str) -> str:
    # The slow node finishes last: a kill late in its restart could come after the run's own end.
    return rng.choice(NODES if phase in PHASES[:4] else NODES[:2])


def _points() -> list[Point]:
    rng = random.Random(7)  # seeded: the same points, in the same order, on every machine
    points = [
        Point("resume", {"event": "phase", "phase": phase, "status": status, "node": _node(rng, phase)})
        for phase in PHASES
        for status in ("started", "ok")
    ]
    points += [
        Point(
            "run",
            {
                "event": "phase",
                "phase": phase,
                "status": rng.choice(["started", "ok"]),
                "node": _node(rng, phase),
            },
        )
        for phase in PHASES
    ]
    points += [
        Point("run", {"event": "run_started"}),
        Point("run", {"event": "node_finished", "node": _node(rng, "node_finished")}),
    ]
    return points


POINTS = _points()

# Fast services and every node in flight at once keep the module short; the last node is a little
# slower, so the others always finish well before the run does.
FAST = {"stop": {"low": 0.02, "high": 0.08}, "start": {"low": 0.02, "high": 0.08}}
SLOWER = {"stop": {"low": 0.12, "high": 0.14}, "start": {"low": 0.08, "high": 0.1}}
SPEC = InventorySpec(
    nodes=len(NODES),
    rollout={"strategy": "window", "window": len(NODES)},
    sim={"timings": {"default": FAST}, "nodes": {NODES[-1]: {"timings": {"default": SLOWER}}}},
)


@pytest.fixture(scope="module")
def shared_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = start_farm(SPEC, tmp_path_factory.mktemp("crash-farm"))
    try:
        yield f
    finally:
        stop_farm(f)


def _kill_at(f: Farm, events: Path, match: dict[str, str], deadline: float) -> int:
    """Start a run, SIGKILL it when its event stream shows `match`; its exit status."""
    proc = f.start_run("--events", str(events))
    try:
        seen = 0
        while time.monotonic() < deadline:
            if events.exists():
                lines = events.read_text().splitlines()
                for line in lines[seen:]:
                    e = json.loads(line)
                    if all(e.get(k) == v for k, v in match.items()):
                        proc.kill()
                        proc.communicate(timeout=30)
                        return proc.returncode
                seen = len(lines)
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        raise AssertionError(f"the run never wrote {match} (exit {proc.poll()})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def _healthy(f: Farm, node: str) -> bool:
    address = next(n["address"] for n in f.describe["nodes"] if n["name"] == node)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}:8080/healthz", timeout=10) as response:
        return bool(response.status == 200)


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_a_kill_at_any_point_is_recovered(shared_farm: Farm, tmp_path: Path, point: Point) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(shared_farm.inventory.read_text())
    f = dataclasses.replace(shared_farm, inventory=inventory, workdir=tmp_path)
    # The farm starts with every service running, and each point must leave it so (checked below
    # through Get-Service), so the next point starts from the same state.
    before = {n: dict.fromkeys(WATCHED, "Running") for n in NODES}
    since = time.time()

    assert _kill_at(f, tmp_path / "events.jsonl", point.match, time.monotonic() + 60) == -9

    with Journal(tmp_path / "journal.sqlite") as journal:
        dead = journal.latest_run(inventory)
        assert dead is not None and dead.outcome == "incomplete"
        dead_states = journal.node_states(dead.run_id)
    # Write-ahead: no node was changed before what ran on it was committed.
    for state in dead_states:
        if state.last_phase not in (None, "preflight"):
            assert state.before is not None, state
            assert state.before.services == before[state.name], state
    finished = {s.name for s in dead_states if s.outcome == "done"}

    after = f.run(command=point.command)
    assert after.code == ExitCode.SUCCEEDED, after.stdout + after.stderr

    # The farm: every service that ran runs again, every node healthy.
    for name in NODES:
        assert f.services(name, *WATCHED) == before[name], name
        assert _healthy(f, name), name
    # The report and the journal agree: every node accounted for, back in rotation, lock released.
    if after.report is not None:  # None: `resume` found nothing left to do
        expected = {n: ("skipped" if point.command == "resume" and n in finished else "done") for n in NODES}
        assert {n: after.node(n)["outcome"] for n in NODES} == expected
        assert all(after.node(n)["rotation"] == "in" for n in NODES)
        assert after.report["recovery"]["lock_takeover"]["run_id"] == dead.run_id
    else:
        assert point.command == "resume" and finished == set(NODES), after.stdout
    with Journal(tmp_path / "journal.sqlite") as journal:
        assert journal.lock_holder(inventory) is None
        last = journal.latest_run(inventory)
        assert last is not None
        if after.report is not None:
            assert (last.run_id, last.outcome) == (after.report["run_id"], "succeeded")
            assert all(s.outcome in ("done", "skipped") for s in journal.node_states(last.run_id))

    # The farm's event log: no node restarted more than its state required.
    stops = Counter(
        e["node"]
        for e in shared_farm.events()
        if e["ts"] >= since
        and e["kind"] == "service_state"
        and e["service"] == "W3SVC"
        and e["state"] == "Stopped"
    )
    again = finished if point.command == "run" else set()
    assert {n: stops[n] for n in NODES} == {n: 2 if n in again else 1 for n in NODES}, (point, finished)
