"""`orchestrator status FILE --live` against the simulated farm: every node read now, beside the
journal, with what was changed by hand since the run marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec


def test_live_status_marks_what_changed_on_the_farm_since_the_run(farm: Any) -> None:
    f = farm(
        InventorySpec(
            nodes=3, faults={"web-02": [{"kind": "hang_stop", "service": "W3SVC"}]}, timeouts={"stop": 1.5}
        )
    )
    run = f.run()
    assert run.code == ExitCode.PARTIAL, run.stderr
    # Someone stops a service on web-03 by hand after the run.
    _output, streams, had_errors = f.client("web-03").execute_ps("Stop-Service -Name W3LOGSVC")
    assert not had_errors, streams
    touched_before = len([e for e in f.events() if e["kind"] == "service_control"])

    lines = f.run_status("--live", "--concurrency", "2", timeout=120).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("node") and "services now" in line)
    rows = {
        line.split()[1] if line.startswith("!") else line.split()[0]: line for line in lines[header + 1 :]
    }
    assert rows["web-03"].startswith("! web-03")
    assert "W3LOGSVC: journal Running, now Stopped" in rows["web-03"]
    assert "health now" in lines[header] and "ok: 200" in rows["web-03"]
    assert rows["web-01"].startswith("  web-01") and rows["web-01"].rstrip().endswith("as recorded")
    assert "failed, rotation out" in rows["web-02"] and "W3SVC StopPending" in rows["web-02"]
    assert rows["web-02"].rstrip().endswith("as recorded")
    assert "- (none)" in rows["web-01"]  # the none driver has no balancer to ask
    assert lines[-1] == "1 of 3 nodes differ from the journal"
    # Reading is read-only: no service was controlled by the status command.
    assert len([e for e in f.events() if e["kind"] == "service_control"]) == touched_before


def test_live_status_reads_haproxy_and_marks_a_server_put_in_maint_by_hand(farm: Any, tmp_path: Path) -> None:
    from simfarm.load import runtime

    from tests.e2e.test_lb_haproxy import haproxy_inventory

    inventory, (sock,) = haproxy_inventory(
        tmp_path, InventorySpec(nodes=2, rollout={"strategy": "window", "window": 1, "min_healthy": 1})
    )
    f = farm(inventory)
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert runtime(sock, "set server web/web-01 state maint").strip() == ""

    lines = f.run_status("--live", timeout=120).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("node") and "balancer" in line)
    rows = {line[2:].split()[0]: line for line in lines[header + 1 : -1]}
    assert rows["web-01"].startswith("! web-01")
    assert "out (MAINT)" in rows["web-01"] and rows["web-01"].endswith("rotation: journal in, balancer out")
    assert rows["web-02"].startswith("  web-02") and "in (UP" in rows["web-02"]
    assert rows["web-02"].rstrip().endswith("as recorded")
    assert lines[-1] == "1 of 2 nodes differ from the journal"
