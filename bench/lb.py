"""What draining is worth: the same farm behind a real HAProxy, the same client load through its
frontend, three ways to restart IIS everywhere.

1. `orchestrator run` with the haproxy driver: drain, wait for no request, stop, start, verify,
   fresh health in DRAIN, ready.
2. `iisreset` on every node at once over WinRS (what a hurried operator does).
3. The same rolling restart without draining (`driver: none`, `node_drain: false`): HAProxy's own
   health checks have to notice each node going away.

For each: failed client requests (any answer but 200, or none) of those sent, and how long the
restart took. Each scenario gets a fresh farm. Usage: python bench/lb.py [--nodes 4] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from farmproc import start_farm, stop_farm
from pypsrp.client import Client
from simfarm.load import Load, generate, servers

BLOCK = "127.0.60"
PASSWORD = "Bench-Passw0rd!"


def inventory(nodes: int, journal: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {
            "credentials": {"username": "bench", "password": PASSWORD, "inline_password": True},
            "action": {"type": "iis-restart"},
            "health": {"url": "http://{host}:8080/healthz", "retries": 20, "interval": 0.25},
            "timeouts": {"stop": 20, "start": 20, "verify": 20, "node": 120},
        },
        "nodes": [{"name": f"web-{i:02d}", "host": f"{BLOCK}.{i}"} for i in range(1, nodes + 1)],
        "rollout": {"strategy": "window", "window": 1, "min_healthy": nodes - 1},
        "load_balancer": {
            "driver": "haproxy",
            "haproxy": {"socket": f"{BLOCK}.250:9999", "backend": "web"},
            "drain_timeout": 30,
        },
        "journal": str(journal),
        "sim": {
            "seed": 3,
            "username": "bench",
            "password": PASSWORD,
            "site_port": 8080,
            "haproxy": {"frontend": f"{BLOCK}.250:8000"},
            "timings": {"default": {"stop": {"low": 0.2, "high": 0.8}, "start": {"low": 0.2, "high": 0.6}}},
        },
    }


@dataclass
class Outcome:
    name: str
    load: Load
    seconds: float
    detail: str


def _orchestrator(inv: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(inv)], capture_output=True, text=True, check=False
    )
    return f"exit {proc.returncode}"


def _iisreset_everywhere(farm: dict[str, Any], socket: str) -> str:
    def one(node: dict[str, Any]) -> int:
        client = Client(
            node["address"],
            username=farm["username"],
            password=farm["password"],
            ssl=False,
            auth="ntlm",
            encryption="always",
            no_proxy=True,
        )
        _out, _err, rc = client.execute_cmd("iisreset")
        return int(rc)

    with ThreadPoolExecutor(len(farm["nodes"])) as pool:
        codes = list(pool.map(one, farm["nodes"]))
    # The restart is over for the clients once the balancer has every server back.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if {r["status"] for r in servers(socket, "web").values()} == {"UP"}:
            break
        time.sleep(0.1)
    return f"iisreset exit codes {sorted(set(codes))}"


async def _under_load(frontend: str, rate: float, work: Any) -> tuple[Load, float, str]:
    stop = asyncio.Event()
    load_task = asyncio.create_task(generate(f"http://{frontend}/", rate, stop, max_seconds=600))
    await asyncio.sleep(1)  # steady traffic before the restart begins
    started = time.perf_counter()
    detail = await asyncio.to_thread(work)
    seconds = time.perf_counter() - started
    await asyncio.sleep(1)  # and after it: late failures count too
    stop.set()
    return await load_task, seconds, detail


def scenario(name: str, nodes: int, rate: float, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True)
    inv = inventory(nodes, workdir / "journal.sqlite")
    farm_inv = workdir / "farm.yaml"
    farm_inv.write_text(yaml.safe_dump(inv, sort_keys=False))
    run_inv = workdir / "run.yaml"
    if name == "no drain":
        inv["load_balancer"] = {"driver": "none", "node_drain": False}
    run_inv.write_text(yaml.safe_dump(inv, sort_keys=False))
    farm = start_farm(["--inventory", str(farm_inv)], workdir)
    try:
        lb = farm.describe["load_balancer"]
        if name == "iisreset all":
            work = lambda: _iisreset_everywhere(farm.describe, lb["socket"])  # noqa: E731
        else:
            work = lambda: _orchestrator(run_inv)  # noqa: E731
        load, seconds, detail = asyncio.run(_under_load(lb["frontend"], rate, work))
    finally:
        stop_farm(farm.proc)
    return Outcome(name, load, seconds, detail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-lb-") as tmp:
        for k, name in enumerate(("rolling, drained", "iisreset all", "no drain")):
            results.append(scenario(name, args.nodes, args.rate, Path(tmp) / str(k)))
    print(f"{args.nodes} nodes behind HAProxy, {args.rate:g} req/s through its frontend")
    print(f"{'restart':<18} {'failed':>7} {'sent':>6} {'seconds':>8}  failures / detail")
    for r in results:
        kinds = ", ".join(f"{k} x{n}" for k, n in r.load.failures.most_common()) or "-"
        print(f"{r.name:<18} {r.load.failed:>7} {r.load.sent:>6} {r.seconds:>8.1f}  {kinds} ({r.detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
