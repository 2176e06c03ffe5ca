"""`orchestrator status --live` cost: every node of a simulated farm read now (services over WinRM,
health URL), through the product's own `read_farm`, at several fan-out limits.

The farm runs in its own process (`python -m simfarm.farm --nodes N`). Printed, never asserted:
wall time per limit, WinRM requests per node (from the farm's event log), this process's CPU time.

Run: `.venv/bin/python bench/live_status.py [--nodes 100] [--concurrency 1,4,16,32]`. The farm
listens on 127.0.9.x.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from farmproc import exit_on_sigterm, start_farm, stop_farm
from simfarm.events import read_events

from orchestrator.inventory import load_inventory
from orchestrator.lb.none import NoBalancer
from orchestrator.live_status import read_farm

BASE_ADDRESS = "127.0.9.1"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def inventory_for(describe: dict[str, Any], path: Path) -> Path:
    port = describe["nodes"][0]["site_port"]
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {
                    "credentials": {
                        "username": describe["username"],
                        "password": describe["password"],
                        "inline_password": True,
                    },
                    "health": {"url": f"http://{{host}}:{port}/healthz"},
                },
                "nodes": [{"name": n["name"], "host": n["address"]} for n in describe["nodes"]],
                "journal": "journal.sqlite",
            },
            sort_keys=False,
        )
    )
    return path


def winrm_requests(events: Path) -> int:
    return Counter(e["kind"] for e in read_events(events))["winrm_request"]


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--concurrency", default="1,4,16,32", help="comma-separated fan-out limits")
    args = parser.parse_args(argv)
    limits = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-live-status-") as tmp:
        farm = start_farm(["--nodes", str(args.nodes), "--base-address", BASE_ADDRESS], Path(tmp))
        try:
            inv = load_inventory(inventory_for(farm.describe, Path(tmp) / "farm.yaml"))
            events = Path(farm.describe["events"])
            print(f"status --live: {args.nodes} nodes, services and health read, pypsrp NTLM over HTTP")
            for limit in limits:
                before, cpu0, wall0 = winrm_requests(events), _cpu(), time.perf_counter()
                nodes = asyncio.run(read_farm(inv, {}, NoBalancer(), concurrency=limit))
                wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
                time.sleep(0.5)  # the farm's event log is flushed as it goes; let the last lines land
                requests = winrm_requests(events) - before
                failed = [n for n in nodes if n.error is not None]
                print(
                    f"  concurrency {limit:3d}: {wall:6.2f} s wall ({args.nodes / wall:5.1f} nodes/s), "
                    f"{requests / args.nodes:.1f} WinRM requests/node, client CPU {cpu:.2f} s"
                    + (f", {len(failed)} FAILED: {failed[0].error}" if failed else "")
                )
        finally:
            stop_farm(farm.proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
