"""Journal write cost on each store: what one phase record and one lease beat take.

A run writes a few records per phase per node, each committed before the run moves on, so their
latency is part of every node's time. Measured on a SQLite file (WAL, synchronous=FULL) and on a
private PostgreSQL server on loopback (tests/pgserver.py; fsync off there, so the figure is the
client and protocol cost, not a disk's). Printed, never asserted.

Run: `.venv/bin/python bench/journal.py [--records 2000]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.journal import Journal
from orchestrator.store import PgJournal
from tests.pgserver import PgServer

NODES = [(f"web-{i:03d}", f"10.0.{i // 250}.{i % 250 + 1}", None) for i in range(100)]


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    spent = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        spent.append(time.perf_counter() - start)
    return spent


def measure(name: str, journal: Journal, inventory: Path, records: int) -> None:
    journal.acquire_lock(inventory, "bench", [h for _, h, _ in NODES])
    journal.begin_run("bench", inventory, "d", {}, NODES)
    phases = timed(
        records, lambda i: journal.record_phase("bench", NODES[i % len(NODES)][0], "stop", "started")
    )
    beats = timed(max(records // 10, 1), lambda _: journal.beat("bench"))
    start = time.perf_counter()
    journal.run_result("bench")
    rebuild = time.perf_counter() - start
    print(
        f"{name:10s} phase record: median {statistics.median(phases) * 1e3:.2f} ms, "
        f"p95 {sorted(phases)[int(len(phases) * 0.95)] * 1e3:.2f} ms; "
        f"lease beat (100 hosts): median {statistics.median(beats) * 1e3:.2f} ms; "
        f"result of {records} records rebuilt in {rebuild * 1e3:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "farm.yaml"
        with Journal(Path(tmp) / "journal.sqlite") as journal:
            measure("sqlite", journal, inventory, args.records)
        server = PgServer.create()
        try:
            url = server.create_database("bench")
            target = PgJournal(url, "BENCH_JOURNAL_PW")
            with Journal(target, environ={"BENCH_JOURNAL_PW": server.password}) as journal:
                measure("postgresql", journal, inventory, args.records)
        finally:
            server.destroy()


if __name__ == "__main__":
    main()
