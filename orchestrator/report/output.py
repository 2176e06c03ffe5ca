"""What every report goes through on its way out: secret scrubbing and whole-file replacement."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from orchestrator.budget import FailureBudget
from orchestrator.inventory import FailureBudgetPolicy
from orchestrator.log import redact
from orchestrator.results import RunResult


def redacted(result: RunResult) -> RunResult:
    """`result` with every registered secret scrubbed and secret-looking keys of the plan dropped.

    The result may come straight from the coordinator's memory, where an error message can quote a
    password the journal would have scrubbed.
    """
    data = redact(result.model_dump(mode="json"), by_key=False)
    data["plan"] = redact(data["plan"])
    data["budget"] = redact(data["budget"])
    return RunResult.model_validate(data)


def write_atomically(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write `text` to a temporary file beside `path`, sync it, then rename it over `path`.

    A CI job, a browser or `tail` never reads half a report. `mode`: permissions other than the
    default 0600 (a file another account reads, like a metrics textfile).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600: reports stay private to the operator unless they share them.
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as temp:
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def budget_of(result: RunResult) -> tuple[int, int]:
    """(node failures, failures tolerated) of a run: as the run's own budget accounted them, or, for a
    run that recorded none (stopped before scheduling), from its nodes and the plan it recorded."""
    spent, limit = result.budget.get("spent"), result.budget.get("limit")
    if isinstance(spent, int) and isinstance(limit, int):
        return spent, limit
    raw = result.plan.get("failure_budget")
    policy = FailureBudgetPolicy.model_validate(raw if isinstance(raw, dict) else {})
    return result.totals.failed, FailureBudget(policy, len(result.nodes)).tolerated
