"""The farm's event log: what happened on each simulated node, as JSON lines.

Tests and benchmarks read it to prove behaviour (dependents stopped first, nothing killed, how many
WinRM requests a run cost); the orchestrator itself never does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO, Any


class EventLog:
    """Append-only JSONL sink shared by all nodes of one farm process."""

    def __init__(self, path: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the farm

    def record(self, node: str, kind: str, **fields: Any) -> None:
        if self._fh is None:
            return
        line = json.dumps({"ts": time.time(), "node": node, "kind": kind, **fields}, default=str)
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events in a log file, oldest first (for tests and benchmarks)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out
