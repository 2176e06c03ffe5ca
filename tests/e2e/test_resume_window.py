"""A resumed run with a change window decides from real durations, end to end.

History from real runs says the slow nodes take seconds; a run dies after finishing only the fast
one; its resume has less window left than the next node needs, so that node is not started, the
farm shows it untouched, and the report and the command line say why. (A resume that fed the
finished node to the scheduler as an instant start would have estimated ~0 s and started it.)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from orchestrator.journal import Journal
from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec
from tests.e2e.test_crash import kill_at

FAST = {"stop": {"low": 0.02, "high": 0.05}, "start": {"low": 0.02, "high": 0.05}}
SLOW = {"stop": {"low": 1.0, "high": 1.0}, "start": {"low": 0.3, "high": 0.3}}
# Shorter than any slow node took in the history: whatever the machine's pace, it cannot fit.
WINDOW = 3.0


def _set_rollout(inventory: Path, drop: tuple[str, ...] = (), **rollout: Any) -> None:
    data = yaml.safe_load(inventory.read_text())
    for key in drop:
        del data["rollout"][key]
    data["rollout"].update(rollout)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_resume_does_not_start_a_node_the_window_left_too_short_for(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(
        nodes=3,
        rollout={"strategy": "window", "window": 3},
        sim={
            "timings": {"default": FAST},
            "nodes": {name: {"timings": {"default": SLOW}} for name in ("web-02", "web-03")},
        },
    )
    f = farm(spec)
    history = f.run()
    assert history.code == ExitCode.SUCCEEDED, history.stdout + history.stderr
    with Journal(f.workdir / "journal.sqlite") as journal:
        slowest = max(journal.node_durations(f.inventory))
    assert slowest > WINDOW  # the history the resume estimates from

    # One node a batch, a long pause between: the run dies after web-01, before web-02 is touched.
    _set_rollout(f.inventory, ("window",), strategy="batch", batch=1, pause_seconds=60)
    finished = {"event": "node_finished", "node": "web-01"}
    assert kill_at(f, tmp_path / "events.jsonl", finished, time.monotonic() + 60) == -9
    with Journal(f.workdir / "journal.sqlite") as journal:
        dead = journal.latest_run(f.inventory)
        assert dead is not None and dead.outcome == "incomplete"
        states = {s.name: s for s in journal.node_states(dead.run_id)}
    assert states["web-01"].outcome == "done"
    assert all(states[n].last_phase in (None, "preflight") for n in ("web-02", "web-03"))

    since = time.time()
    finish_by = datetime.now(UTC) + timedelta(seconds=WINDOW)
    _set_rollout(f.inventory, change_window={"finish_by": finish_by.isoformat()})
    resumed = f.run(command="resume")

    assert resumed.code == ExitCode.ABORTED_WINDOW, resumed.stdout + resumed.stderr
    assert "web-02 at drain" in resumed.stdout and "web-03 at drain" in resumed.stdout
    assert resumed.report is not None
    assert resumed.report["outcome"] == "aborted_window"
    assert resumed.report["plan"]["resumes"] == dead.run_id
    stopped = resumed.report["budget"]["stopped"]
    assert stopped.startswith("change window: 2 node(s) not started (the next, web-02, needs about"), stopped
    # The estimate is the history's, not a 0 s start made up for the node the dead run finished.
    needs = float(stopped.split("needs about ")[1].split(" s")[0])
    assert needs >= round(slowest) - 1 and needs > WINDOW, stopped
    assert stopped.endswith(f"as they would not finish by {finish_by.isoformat()}"), stopped
    assert f"stopped: {stopped}" in resumed.stdout  # the command line says it too
    assert resumed.node("web-01")["outcome"] == "skipped"
    for name in ("web-02", "web-03"):
        node = resumed.node(name)
        assert (node["outcome"], node["rotation"]) == ("not_started", "in"), node
    # The farm: nothing was stopped or drained on the nodes the window left out.
    assert [e for e in f.events() if e["ts"] >= since and e["kind"] == "service_control"] == []
