"""The rolling restart against the simulated farm, one scenario per fault, through the CLI.

Each test asserts what the operator sees (exit code, report) and what really happened on the nodes
(the farm's event log): what was stopped, in which order, that nothing was killed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from orchestrator.remote.cmdlets import CMDLETS
from orchestrator.results import ExitCode
from tests.e2e.harness import Farm, InventorySpec

CONTROL = ("service_control",)


def controls(farm: Farm, node: str) -> list[tuple[str, str]]:
    return [(e["service"], e["control"]) for e in farm.node_events(node, *CONTROL)]


def states(farm: Farm, node: str) -> list[tuple[str, str]]:
    return [(e["service"], e["state"]) for e in farm.node_events(node, "service_state")]


def killed(farm: Farm) -> list[dict[str, Any]]:
    return [e for e in farm.events() if e["kind"] == "process_killed"]


def touched(farm: Farm) -> list[dict[str, Any]]:
    return [e for e in farm.events() if e["kind"] in ("service_control", "process_killed")]


def test_clean_run_restarts_every_node_gracefully(farm: Any) -> None:
    f = farm(InventorySpec(nodes=3))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stderr
    assert run.report is not None and run.report["outcome"] == "succeeded"
    for node in ("web-01", "web-02", "web-03"):
        seen = states(f, node)
        stopped = [svc for svc, state in seen if state == "Stopped"]
        assert stopped[:3] == ["W3LOGSVC", "W3SVC", "WAS"], seen  # dependents first
        running = [svc for svc, state in seen if state == "Running"]
        assert running[-3:] == ["WAS", "W3SVC", "W3LOGSVC"], seen  # dependencies first
        assert run.node(node)["rotation"] == "in"
        assert run.node(node)["services_after"]["W3SVC"] == "Running"
    assert killed(f) == []


def test_hang_in_stop_pending_fails_the_node_without_killing(farm: Any) -> None:
    f = farm(
        InventorySpec(
            nodes=3, faults={"web-01": [{"kind": "hang_stop", "service": "W3SVC"}]}, timeouts={"stop": 1.5}
        )
    )
    run = f.run()
    assert run.code == ExitCode.PARTIAL, run.stdout + run.stderr
    node = run.node("web-01")
    assert node["outcome"] == "failed"
    assert node["rotation"] == "out"
    assert "stop failed" in node["left_out_reason"]
    failed = [p for p in node["phases"] if p["outcome"] == "failed"]
    assert failed[0]["phase"] == "stop" and failed[0]["error"]["kind"] == "timed_out"
    assert "nothing was killed" in failed[0]["error"]["message"]
    assert killed(f) == []
    # The node was never started again: its services are left as they were.
    assert ("W3SVC", "start") not in controls(f, "web-01")
    # The budget (1 failure) was not exceeded, so the others were restarted.
    assert run.node("web-02")["outcome"] == "done" and run.node("web-03")["outcome"] == "done"
    assert run.report is not None and run.report["totals"]["out_of_rotation"] == 1


def test_control_busy_1061_is_waited_out(farm: Any) -> None:
    f = farm(
        InventorySpec(nodes=1, faults={"web-01": [{"kind": "control_busy", "service": "W3SVC", "count": 3}]})
    )
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    rejected = [e for e in f.node_events("web-01", "service_control_failed") if e.get("service") == "W3SVC"]
    assert rejected, "the fault should have answered 1061 at least once"
    assert ("W3SVC", "Stopped") in states(f, "web-01") and ("W3SVC", "Running") in states(f, "web-01")
    # Every 1061 the node answered is in the stop phase's detail: the operator sees what was waited for.
    stop = next(p for p in run.node("web-01")["phases"] if p["phase"] == "stop")
    assert stop["detail"].count("W3SVC: 1061") == len(rejected), stop["detail"]


def test_a_chain_of_slow_services_is_not_failed_for_its_total(farm: Any) -> None:
    # Each service takes 1.6 s to stop, within its 2 s limit; the three together take longer. WAS is
    # asked only once W3SVC has stopped, after the first round was cut short: its 2 s start then.
    slow = {"timings": {"default": {"stop": {"low": 1.6, "high": 1.6}, "start": {"low": 0.05, "high": 0.05}}}}
    f = farm(InventorySpec(nodes=1, sim=slow, timeouts={"stop": 2}))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    stop = next(p for p in run.node("web-01")["phases"] if p["phase"] == "stop")
    assert "stop round cut short after 2s; polling" in stop["detail"], stop["detail"]
    stopped = [svc for svc, state in states(f, "web-01") if state == "Stopped"]
    assert stopped == ["W3LOGSVC", "W3SVC", "WAS"]


def test_a_restart_is_a_handful_of_pipelines(farm: Any) -> None:
    # Services that stop and start at once: what remains is the product's own remote round trips.
    instant = {"low": 0.0, "high": 0.001}
    f = farm(InventorySpec(nodes=2, sim={"timings": {"default": {"stop": instant, "start": instant}}}))
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    for node in ("web-01", "web-02"):
        actions = [e["action"] for e in f.node_events(node, "winrm_request")]
        # One pool; one pipeline each for the preflight read, the stop round (each stop waited for
        # by Windows, then the read after it) and the start round whose read serves verify and the
        # final state; a poll at most, should the machine be slow enough for a call to be cut short.
        assert actions.count("Create") == 1 and actions.count("Delete") == 1, actions
        assert 3 <= actions.count("Command") <= 4, actions
        running = [svc for svc, state in states(f, node) if state == "Running"]
        assert running[-3:] == ["WAS", "W3SVC", "W3LOGSVC"]
        assert run.node(node)["services_after"] == {
            "W3LOGSVC": "Running",
            "W3SVC": "Running",
            "WAS": "Running",
            "HTTP": "Running",
            "RPCSS": "Running",
        }


def test_access_denied_is_classified_and_fails_fast(farm: Any) -> None:
    stop_timeout = 300.0
    f = farm(
        InventorySpec(
            nodes=2,
            faults={"web-01": [{"kind": "access_denied", "service": "W3SVC"}]},
            timeouts={"stop": stop_timeout, "node": 2 * stop_timeout},
        )
    )
    # A run that waited for the stop timeout would still be running at this deadline.
    run = f.run(timeout=stop_timeout / 3)
    node = run.node("web-01")
    assert node["outcome"] == "failed"
    errors = [p["error"] for p in node["phases"] if p["error"]]
    assert errors[0]["kind"] == "access_denied", errors
    assert errors[0]["code"] == 5
    stop = next(p for p in node["phases"] if p["phase"] == "stop")
    # Fails on the first refusal rather than waiting for the stop timeout.
    assert stop["outcome"] == "failed" and stop["attempts"] == 1
    took = datetime.fromisoformat(stop["ended_at"]) - datetime.fromisoformat(stop["started_at"])
    assert took.total_seconds() < stop_timeout / 10
    # Its dependent was stopped first, W3SVC itself refused once (OpenService), nothing killed.
    assert controls(f, "web-01") == [("W3LOGSVC", "stop")] and killed(f) == []


def test_wrong_credentials_refuse_the_run_before_anything_is_touched(farm: Any) -> None:
    f = farm(InventorySpec(nodes=3, faults={"web-02": [{"kind": "wrong_credentials"}]}))
    run = f.run()
    assert run.code == ExitCode.PREFLIGHT_REFUSED, run.stdout + run.stderr
    node = run.node("web-02")
    assert node["phases"][0]["phase"] == "preflight"
    assert node["phases"][0]["error"]["kind"] == "auth"
    assert all(run.node(n)["outcome"] == "not_started" for n in ("web-01", "web-03"))
    assert touched(f) == []
    assert run.report is not None
    assert run.report["budget"]["stopped"].startswith(
        "preflight refused 1 node(s), so none was touched: web-02: preflight: "
    )


def test_winrm_down_refuses_the_run_before_anything_is_touched(farm: Any) -> None:
    f = farm(InventorySpec(nodes=2, faults={"web-01": [{"kind": "winrm_down"}]}))
    run = f.run()
    assert run.code == ExitCode.PREFLIGHT_REFUSED
    assert run.node("web-01")["phases"][0]["error"]["kind"] == "transport"
    assert touched(f) == []


def test_start_failure_fails_the_node_and_leaves_it_out(farm: Any) -> None:
    f = farm(InventorySpec(nodes=2, faults={"web-01": [{"kind": "start_failure", "service": "W3SVC"}]}))
    run = f.run()
    node = run.node("web-01")
    assert node["outcome"] == "failed"
    failed = next(p for p in node["phases"] if p["outcome"] == "failed")
    assert failed["phase"] == "start"
    assert node["rotation"] == "out"


def test_unhealthy_after_start_is_never_counted_done(farm: Any) -> None:
    f = farm(
        InventorySpec(nodes=2, faults={"web-01": [{"kind": "unhealthy_after_start"}]}, health={"retries": 2})
    )
    run = f.run()
    node = run.node("web-01")
    assert node["outcome"] == "failed"
    failed = next(p for p in node["phases"] if p["outcome"] == "failed")
    assert failed["phase"] == "verify" and failed["error"]["kind"] == "health"
    assert node["rotation"] == "out"
    assert not any(p["phase"] == "undrain" for p in node["phases"])


def test_spent_budget_starts_no_further_node(farm: Any) -> None:
    faults = {n: [{"kind": "start_failure", "service": "W3SVC"}] for n in ("web-01", "web-02")}
    f = farm(InventorySpec(nodes=4, faults=faults, rollout={"failure_budget": {"max_failures": 1}}))
    run = f.run()
    assert run.code == ExitCode.ABORTED_BUDGET, run.stdout + run.stderr
    assert run.node("web-03")["outcome"] == "not_started"
    assert run.node("web-04")["outcome"] == "not_started"
    assert controls(f, "web-03") == [] and controls(f, "web-04") == []
    # Exit 5 says why: what was tolerated, what was spent, and that the run stopped for it.
    assert run.report is not None
    budget = run.report["budget"]
    assert (budget["limit"], budget["spent"]) == (1, 2)
    assert budget["exhausted"] == "2 failures exceed the 1 tolerated"
    assert budget["stopped"].startswith("failure budget spent: 2 failures exceed the 1 tolerated")
    assert "stopped: failure budget spent" in run.stdout
    # The journal keeps it: `status` after the fact says the same.
    assert "stopped: failure budget spent: 2 failures exceed the 1 tolerated" in f.run_status()


def test_kill_workers_only_when_the_inventory_names_it(farm: Any) -> None:
    fault = {"web-01": [{"kind": "hang_stop", "service": "W3SVC"}]}
    f = farm(
        InventorySpec(nodes=1, faults=fault, timeouts={"stop": 1.5}, action={"escalation": "kill-workers"})
    )
    run = f.run()
    stop = next(p for p in run.node("web-01")["phases"] if p["phase"] == "stop")
    kills = killed(f)
    # Under load a failure here must say what the run saw, not only what the farm logged.
    seen = f"{kills}\nstop phase: {stop}\n{run.stderr[-3000:]}"
    assert kills and all(k["process"] == "w3wp" for k in kills), seen
    assert {k["source"] for k in kills} == {"powershell"}, seen  # our Stop-Process, not IIS itself
    assert "kill-workers" in stop["detail"], seen


def test_a_jea_endpoint_exposing_only_the_products_cmdlets_is_enough(farm: Any, tmp_path: Path) -> None:
    # NoLanguage: cmdlets only, several statements per pipeline allowed, nothing else visible.
    jea = {"name": "OrchestratorJEA", "visible_cmdlets": list(CMDLETS)}
    f = farm(InventorySpec(nodes=1, sim={"endpoints": [jea]}))
    data = yaml.safe_load(f.inventory.read_text())
    data["defaults"]["transport"] = {"configuration_name": "OrchestratorJEA"}
    inventory = tmp_path / "jea.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    run = f.run(inventory=inventory)
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    stopped = [svc for svc, state in states(f, "web-01") if state == "Stopped"]
    assert stopped == ["W3LOGSVC", "W3SVC", "WAS"]
    assert run.node("web-01")["services_after"]["W3SVC"] == "Running"
