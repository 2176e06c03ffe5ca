"""Pruning the journal: what goes and what always stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from orchestrator.journal import Journal
from orchestrator.results import exit_code_for, utc_now

NODES = [("web-01", "h1", None)]


def test_prune_removes_old_finished_runs_whole_but_never_the_latest(tmp_path: Path) -> None:
    inv = tmp_path / "farm.yaml"
    now = utc_now()
    with Journal(tmp_path / "j.sqlite") as journal:
        for run_id, age in (("a", 300), ("b", 200)):
            start = now - timedelta(days=age)
            journal.begin_run(run_id, inv, "d", {}, NODES, started_at=start)
            journal.record_phase(run_id, "web-01", "drain", "started", start)
            journal.finish_run(run_id, "succeeded", exit_code_for("succeeded"), start)
        assert journal.prune(inv, now - timedelta(days=100)) == ["a"]  # b is the latest: kept
        assert journal.prune(inv, now - timedelta(days=100)) == []
        latest = journal.latest_run(inv)
        assert latest is not None and latest.run_id == "b"
        journal.begin_run("c", inv, "d", {}, NODES, started_at=now)
        assert journal.prune(inv, now - timedelta(days=100)) == ["b"]
        with journal._read() as conn:
            rows = conn.execute("SELECT COUNT(*) AS n FROM node_events WHERE run_id IN ('a', 'b')").fetchone()
        assert rows["n"] == 0
