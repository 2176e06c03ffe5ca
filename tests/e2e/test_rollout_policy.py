"""Policy and special actions end to end: concurrency limits, http-restart, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec, down_intervals, max_concurrent


def test_window_never_takes_down_more_nodes_than_allowed(farm: Any) -> None:
    f = farm(InventorySpec(nodes=6, rollout={"strategy": "window", "window": 2, "max_unavailable": 2}))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stderr
    intervals = down_intervals(f)
    assert set(intervals) == {f"web-0{i}" for i in range(1, 7)}
    assert max_concurrent(intervals) == 2  # the window was used, and never exceeded


def test_batches_follow_the_plan(farm: Any) -> None:
    f = farm(InventorySpec(nodes=4, rollout={"strategy": "batch", "batch": [1, 3]}))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stderr
    intervals = down_intervals(f)
    canary_end = intervals["web-01"][1]
    # Batch 2 starts only once batch 1 (the canary) is back.
    assert all(intervals[n][0] > canary_end for n in ("web-02", "web-03", "web-04"))
    assert max_concurrent(intervals) == 3


def test_http_restart_survives_the_loss_of_winrm(farm: Any) -> None:
    f = farm(
        InventorySpec(nodes=1, action={"type": "http-restart", "detached": True}, timeouts={"start": 30})
    )
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    seen = [(e["service"], e["state"]) for e in f.node_events("web-01", "service_state")]
    assert ("HTTP", "Stopped") in seen and ("WinRM", "Stopped") in seen
    assert seen.index(("WinRM", "Stopped")) < len(seen) - seen[::-1].index(("WinRM", "Running")) - 1
    node = run.node("web-01")
    for svc in ("HTTP", "WAS", "W3SVC", "WinRM"):
        assert node["services_after"][svc] == "Running", node["services_after"]
    start = next(p for p in node["phases"] if p["phase"] == "start")
    assert "WinRM dropped and reconnected" in start["detail"]


def test_action_that_would_stop_winrm_is_refused_unless_detached(farm: Any) -> None:
    f = farm(InventorySpec(nodes=1, action={"type": "services", "services": ["HTTP"]}))
    run = f.run()
    assert run.code == ExitCode.PREFLIGHT_REFUSED
    error = run.node("web-01")["phases"][0]["error"]
    assert error["kind"] == "refused" and "WinRM" in error["message"]
    assert [e for e in f.events() if e["kind"] == "service_control"] == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["rollout"].update(window=0), "rollout.window"),
        (lambda d: d["nodes"][1].update(name="web-01"), "nodes[1].name"),
        (lambda d: d["defaults"].update(helth={}), "did you mean 'health'"),
    ],
)
def test_invalid_inventory_touches_no_node(farm: Any, tmp_path: Any, mutate: Any, expected: str) -> None:
    f = farm(InventorySpec(nodes=2))
    data = yaml.safe_load(f.inventory.read_text())
    mutate(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    run = f.run(inventory=bad)
    assert run.code == ExitCode.INVALID_INPUT
    assert str(bad) in run.stderr and expected in run.stderr
    assert [e for e in f.events() if e["kind"] in ("service_control", "winrm_request")] == []


def test_services_action_restarts_dependents_whatever_the_spelling(farm: Any) -> None:
    f = farm(InventorySpec(nodes=1, action={"type": "services", "services": ["w3svc"]}))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    seen = [(e["service"], e["state"]) for e in f.node_events("web-01", "service_state")]
    # W3LOGSVC depends on W3SVC: stopped first, and started again because it ran before.
    assert [s for s, state in seen if state == "Stopped"] == ["W3LOGSVC", "W3SVC"]
    assert [s for s, state in seen if state == "Running"] == ["W3SVC", "W3LOGSVC"]
    assert run.node("web-01")["services_after"] == {
        "W3SVC": "Running",
        "W3LOGSVC": "Running",
        "WAS": "Running",
        "HTTP": "Running",
    }


def test_a_short_change_window_uses_the_durations_of_earlier_runs(farm: Any) -> None:
    f = farm(InventorySpec(nodes=2, timeouts={"node": 900}))
    data = yaml.safe_load(f.inventory.read_text())
    closes = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    windowed = f.inventory.with_name("windowed.yaml")
    data["rollout"]["change_window"] = {"finish_by": closes}
    windowed.write_text(yaml.safe_dump(data, sort_keys=False))

    # No history yet: a node is expected to take its full 900 s deadline, which overruns the window.
    first = f.run(inventory=windowed)
    assert first.code == ExitCode.ABORTED_WINDOW, first.stdout + first.stderr
    assert [first.node(n)["outcome"] for n in ("web-01", "web-02")] == ["not_started", "not_started"]
    assert first.report is not None
    assert first.report["budget"]["stopped"] == (
        f"change window: 2 node(s) not started (the next, web-01, needs about 900 s), as they would not "
        f"finish by {datetime.fromisoformat(closes).isoformat()}"
    )
    assert "stopped: change window: 2 node(s) not started" in first.stdout

    # One run without a window (the same inventory file, so the same history) ...
    windowed.write_text(f.inventory.read_text())
    assert f.run(inventory=windowed).code == ExitCode.SUCCEEDED
    # ... and nodes are now expected to take seconds: the same window lets them start.
    windowed.write_text(yaml.safe_dump(data, sort_keys=False))
    again = f.run(inventory=windowed)
    assert again.code == ExitCode.SUCCEEDED, again.stdout + again.stderr
