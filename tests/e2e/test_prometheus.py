"""`orchestrator run --prometheus` and `report --format prometheus` against the simulated farm, the
textfile read with Prometheus' own parser."""

from __future__ import annotations

import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec, _env


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, keyed by name and labels (the inventory label left out)."""
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if k != "inventory")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(f"orchestrator_{name}", frozenset(labels.items()))]


def test_run_writes_a_node_exporter_textfile_that_prometheus_parses(farm: Any, tmp_path: Path) -> None:
    f = farm(
        InventorySpec(
            nodes=3, faults={"web-02": [{"kind": "hang_stop", "service": "W3SVC"}]}, timeouts={"stop": 1.5}
        )
    )
    textfile = tmp_path / "textfile" / "orchestrator.prom"
    run = f.run("--prometheus", str(textfile))
    assert run.code == ExitCode.PARTIAL, run.stderr
    assert run.report is not None
    # Replaced whole (no temporary file left beside it) and readable by the exporter's user.
    assert [p.name for p in textfile.parent.iterdir()] == ["orchestrator.prom"]
    assert textfile.stat().st_mode & stat.S_IROTH
    text = textfile.read_text()
    samples = _samples(text)
    assert _value(samples, "run_outcome", outcome="partial") == 1
    assert _value(samples, "run_outcome", outcome="succeeded") == 0
    assert _value(samples, "run_exit_code") == ExitCode.PARTIAL
    assert _value(samples, "run_info", run_id=run.report["run_id"], version=run.report["tool_version"]) == 1
    start, end = _value(samples, "run_start_timestamp_seconds"), _value(samples, "run_end_timestamp_seconds")
    assert 0 < start <= end
    assert abs(_value(samples, "run_duration_seconds") - (end - start)) < 1e-3
    assert _value(samples, "run_nodes", outcome="done") == 2
    assert _value(samples, "run_nodes", outcome="failed") == 1
    assert _value(samples, "run_nodes_out_of_rotation") == 1
    assert _value(samples, "node_out_of_rotation", node="web-02") == 1
    assert _value(samples, "run_failure_budget_spent") == 1
    assert _value(samples, "run_failure_budget_tolerated") == 1
    for node in ("web-01", "web-02", "web-03"):
        took = datetime.fromisoformat(run.node(node)["ended_at"]) - datetime.fromisoformat(
            run.node(node)["started_at"]
        )
        assert abs(_value(samples, "node_duration_seconds", node=node) - took.total_seconds()) < 1e-3
    families = list(text_string_to_metric_families(text))
    assert {s.labels["inventory"] for family in families for s in family.samples} == {
        str(f.inventory.resolve())
    }

    # The same metrics rebuilt from the journal.
    rebuilt = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", str(f.inventory), "--format", "prometheus"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=True,
    ).stdout
    again = _samples(rebuilt)
    for key in ("run_exit_code", "run_nodes_out_of_rotation", "run_failure_budget_spent"):
        assert _value(again, key) == _value(samples, key)
    assert _value(again, "run_nodes", outcome="failed") == 1
