"""Journal housekeeping through the command line: a run prunes its inventory's finished runs older
than `journal_keep_days`, and never one without a recorded end."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from orchestrator.journal import Journal
from orchestrator.results import ExitCode, exit_code_for, utc_now
from tests.e2e.harness import _env

DEMO = Path(__file__).parents[2] / "inventories" / "demo.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )


def test_a_run_prunes_old_finished_runs_and_keeps_incomplete_ones(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    # Nothing listens there: the run is refused at preflight, quickly, having touched nothing.
    data["nodes"] = [{"name": "web-01", "host": "127.0.250.1"}]
    data["groups"] = {}
    data["rollout"] = {"failure_budget": {"max_failures": 0}}
    data["defaults"]["transport"]["connect_timeout"] = 2
    data["journal"] = "journal.sqlite"
    data["journal_keep_days"] = 30
    inv = tmp_path / "farm.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    other = tmp_path / "other.yaml"
    other.write_text(inv.read_text())

    now = utc_now()
    nodes = [("web-01", "127.0.250.1", None)]
    with Journal(tmp_path / "journal.sqlite") as journal:
        for run_id, path, age, finished in [
            ("old-finished", inv, 400, True),
            ("old-unfinished", inv, 400, False),
            ("recent", inv, 10, True),
            ("old-of-another-inventory", other, 400, True),
        ]:
            started = now - timedelta(days=age)
            journal.begin_run(run_id, path, "digest", {}, nodes, started_at=started)
            if finished:
                journal.finish_run(
                    run_id, "succeeded", exit_code_for("succeeded"), started + timedelta(minutes=5)
                )

    run = _cli("run", str(inv), "--log-level", "info")
    assert run.returncode == ExitCode.PREFLIGHT_REFUSED, run.stdout + run.stderr
    assert '"journal pruned"' in run.stderr and '"runs": 1' in run.stderr

    def recorded(run_id: str, path: Path = inv) -> bool:
        result = _cli("report", str(path), "--run", run_id)
        assert result.returncode in (0, ExitCode.INVALID_INPUT), result.stderr
        return result.returncode == 0

    assert not recorded("old-finished")
    assert recorded("old-unfinished")  # no end recorded: never pruned
    assert recorded("recent")
    assert recorded("old-of-another-inventory", other)  # another inventory keeps its own history
    with Journal(tmp_path / "journal.sqlite") as journal:
        latest = journal.latest_run(inv)
        assert latest is not None and latest.outcome == "preflight_refused"
