"""Fan-out cost: one RunspacePool and one `Get-Service` on every node of a simulated farm.

The farm runs in its own process (`python -m simfarm.farm`), so the client's CPU (this
process, all threads: `resource.getrusage(RUSAGE_SELF)`) and the farm's CPU (psutil `cpu_times()`
of the farm process, before and after the fan-out) are measured apart. Printed, never asserted:

- farm start-up: from spawning the farm process to its `ready` line (interpreter start included);
- fan-out wall time: every node connected (NTLM over HTTP with message encryption, as the product
  does), its pool opened, `Get-Service` run and the pool closed, at most `--concurrency` at once;
- WinRM requests per node, counted from the farm's event log (`winrm_request`), by action;
- CPU time per request on each side.

Run: `.venv/bin/python bench/fanout.py [--nodes 200] [--concurrency 32]`.
"""

from __future__ import annotations

import argparse
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from farmproc import exit_on_sigterm, start_farm, stop_farm
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from simfarm.events import read_events

# A loopback block no other bench, test or demo farm uses, so runs never share listeners.
BASE_ADDRESS = "127.0.7.1"


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get_services(address: str, port: int, username: str, password: str) -> int:
    """Open a pool, run Get-Service, close the pool; the number of services returned."""
    wsman = WSMan(
        address,
        port=port,
        username=username,
        password=password,
        ssl=False,
        auth="ntlm",
        encryption="always",
        no_proxy=True,
        connection_timeout=10,
        operation_timeout=20,
        read_timeout=30,
    )
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Service")
        output = ps.invoke()
        if ps.had_errors:
            raise RuntimeError(f"{address}: Get-Service reported errors: {ps.streams.error}")
        return len(output)


def fan_out(describe: dict[str, Any], concurrency: int) -> tuple[float, float, list[str]]:
    """Wall seconds, client CPU seconds, and one line per node that failed."""
    nodes = describe["nodes"]
    user, password = describe["username"], describe["password"]
    failures: list[str] = []

    def one(node: dict[str, Any]) -> None:
        try:
            get_services(node["address"], node["winrm_http_port"], user, password)
        except Exception as exc:  # a benchmark reports failures; it does not stop at the first
            failures.append(f"{node['name']}: {exc!r}")

    cpu0, wall0 = _client_cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fanout") as pool:
        list(pool.map(one, nodes))
    return time.perf_counter() - wall0, _client_cpu() - cpu0, failures


def winrm_requests(events_path: Path) -> tuple[Counter[str], Counter[str]]:
    """Requests per node, and per action, from the farm's event log."""
    per_node: Counter[str] = Counter()
    per_action: Counter[str] = Counter()
    for event in read_events(events_path):
        if event["kind"] == "winrm_request":
            per_node[event["node"]] += 1
            per_action[str(event.get("action"))] += 1
    return per_node, per_action


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--base-address", default=BASE_ADDRESS)
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.concurrency < 1:
        parser.error("--nodes and --concurrency must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        farm = start_farm(["--nodes", str(args.nodes), "--base-address", args.base_address], Path(tmp))
        try:
            farm_cpu0 = farm.cpu_seconds()
            wall, client_cpu, failures = fan_out(farm.describe, args.concurrency)
            farm_cpu = farm.cpu_seconds() - farm_cpu0
        finally:
            stop_farm(farm.proc)
        per_node, per_action = winrm_requests(Path(farm.describe["events"]))

    requests = sum(per_node.values())
    counts = [per_node.get(n["name"], 0) for n in farm.describe["nodes"]]
    print(f"fan-out: {args.nodes} nodes, concurrency {args.concurrency}, pypsrp NTLM over HTTP")
    print(f"  farm start-up (spawn to ready)  {farm.startup_seconds:8.2f} s")
    print(f"  fan-out wall time               {wall:8.2f} s  ({args.nodes / wall:.1f} nodes/s)")
    print(
        f"  WinRM requests per node         {statistics.mean(counts):8.1f}"
        f"  (min {min(counts)}, max {max(counts)}, total {requests})"
    )
    print("    by action: " + ", ".join(f"{a} {c / args.nodes:.1f}" for a, c in per_action.most_common()))
    per_request = max(requests, 1)
    print(
        f"  client CPU                      {client_cpu:8.2f} s"
        f"  ({1000 * client_cpu / per_request:.2f} ms/request, {1000 * client_cpu / args.nodes:.1f} ms/node)"
    )
    print(
        f"  farm CPU                        {farm_cpu:8.2f} s"
        f"  ({1000 * farm_cpu / per_request:.2f} ms/request, {1000 * farm_cpu / args.nodes:.1f} ms/node)"
    )
    if failures:
        print(f"  FAILED on {len(failures)} nodes:")
        for line in failures[:10]:
            print(f"    {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
