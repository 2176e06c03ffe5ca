"""Nodes a run never touched say so: `not_started`, with the rotation the balancer reports."""

from __future__ import annotations

from typing import Any

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec


def test_a_refused_run_reports_every_node_not_started_with_its_rotation(farm: Any) -> None:
    f = farm(InventorySpec(nodes=3, faults={"web-02": [{"kind": "wrong_credentials"}]}))
    run = f.run()
    assert run.code == ExitCode.PREFLIGHT_REFUSED, run.stdout + run.stderr
    assert run.report is not None
    for name in ("web-01", "web-02", "web-03"):
        node = run.node(name)
        # web-02's own preflight failed, yet nothing on it was changed: not a failed node.
        assert (node["outcome"], node["rotation"]) == ("not_started", "in"), node
    assert run.node("web-02")["phases"][0]["error"]["kind"] == "auth"
    assert run.report["totals"]["failed"] == 0 and run.report["totals"]["rotation_unknown"] == 0
    # The journal says the same after the fact.
    status = f.run_status()
    rows = {r.split()[0]: r.split()[1:5] for r in status.splitlines() if r.startswith("web-")}
    assert {n: (r[0], r[3]) for n, r in rows.items()} == dict.fromkeys(rows, ("not_started", "in")), status
    assert len(rows) == 3 and rows["web-02"][1:3] == ["preflight", "auth"]
    assert "0 failed" in status and "nothing was changed on any node" in status
