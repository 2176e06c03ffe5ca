"""How far the orchestrator is from the protocol floor: a hand-written pypsrp script and
`orchestrator run`, side by side on the same simulated farm, in one invocation.

Part 1, ratio (`--nodes`, 50): trials interleaved (baseline, orchestrator, baseline, ...), each on a
freshly started farm built from the same inventory (iis-restart, instant services, window 10):

- baseline: a script of its own process, as an operator would write it: per node open a
  RunspacePool, `Restart-Service W3SVC -Force`, `Get-Service W3SVC`, close; `--threads` (10) threads;
- orchestrator: `python -m orchestrator run inventory.yaml`, a process of its own as cron runs it.

Both are child processes, so their client CPU (user + system, from `getrusage(RUSAGE_CHILDREN)`)
includes interpreter start-up and imports, like the wall time. Farm CPU is psutil's `cpu_times()`
of the farm process around the client; WinRM requests per node are the farm's `winrm_request`
events (the NTLM 401 legs are not logged, so not counted); health probes per node are the site's
`/healthz` requests. Each figure is the median over `--trials` (2), with the orchestrator/baseline
ratio.

Part 2, scale (`--scale`, 50,100,200): one orchestrator run per fleet size, same measures, plus the
health probes in total: the cost per node should stay flat, the probes grow as N.

Printed, never asserted. Run: `.venv/bin/python bench/floor.py [--nodes 50] [--trials 2]
[--scale 50,100,200,500]`. The farms listen on 127.13.x.y, a block nothing else uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from farmproc import SITE_PORT, FarmProcess, exit_on_sigterm, restart_defaults, start_farm, stop_farm
from simfarm.events import read_events

INSTANT = {"low": 0.0, "high": 0.001}
CLIENT_TIMEOUT = 900.0


def host_of(index: int) -> str:
    """127.13.X.Y, 250 nodes per /24, so a fleet of 1000 fits."""
    return f"127.13.{index // 250}.{index % 250 + 1}"


def write_inventory(path: Path, nodes: int, window: int) -> None:
    inventory = {
        "version": 1,
        "defaults": restart_defaults(),
        "nodes": [{"name": f"web-{i + 1:04d}", "host": host_of(i)} for i in range(nodes)],
        # What is measured is the cost of a restart, not the safety stops: nothing may hold the run.
        "rollout": {
            "strategy": "window",
            "window": window,
            "min_healthy": 1,
            "failure_budget": {"max_failures": nodes},
        },
        "load_balancer": {"driver": "none"},
        "journal": "journal.sqlite",
        "sim": {
            "seed": 7,
            "site_port": SITE_PORT,
            "timings": {"default": {"stop": INSTANT, "start": INSTANT}},
        },
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")


# --- the hand-written baseline (runs in a child process: `floor.py --baseline DESCRIBE`) ---------


def baseline(describe_path: Path, threads: int) -> int:
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    describe = json.loads(describe_path.read_text())
    user, password = describe["username"], describe["password"]

    def one(node: dict[str, Any]) -> str | None:
        wsman = WSMan(
            node["address"],
            port=node["winrm_http_port"],
            username=user,
            password=password,
            ssl=False,
            auth="ntlm",
            encryption="always",
            no_proxy=True,
        )
        try:
            with wsman, RunspacePool(wsman) as pool:
                ps = PowerShell(pool)
                ps.add_cmdlet("Restart-Service").add_parameter("Name", "W3SVC").add_parameter("Force")
                ps.invoke()
                ps = PowerShell(pool)
                ps.add_cmdlet("Get-Service").add_parameter("Name", "W3SVC")
                out = ps.invoke()
                status = str(out[0].adapted_properties["Status"]) if out else "missing"
        except Exception as exc:  # a benchmark reports failures; it does not stop at the first
            return f"{node['name']}: {exc!r}"
        return None if status in ("Running", "4") else f"{node['name']}: W3SVC {status}"

    with ThreadPoolExecutor(max_workers=threads) as pool:
        failures = [f for f in pool.map(one, describe["nodes"]) if f]
    for line in failures[:10]:
        print(line, file=sys.stderr)
    return 1 if failures else 0


# --- one trial --------------------------------------------------------------------------------


@dataclass
class Trial:
    who: str
    nodes: int
    ok: bool
    wall: float
    client_cpu: float
    farm_cpu: float
    requests: int
    probes: int
    by_action: dict[str, int]

    def per_node(self, value: float) -> float:
        return value / self.nodes


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_trial(workdir: Path, who: str, nodes: int, window: int, threads: int) -> Trial:
    workdir.mkdir(parents=True)
    inventory = workdir / "inventory.yaml"
    write_inventory(inventory, nodes, window)
    farm = start_farm(["--inventory", str(inventory)], workdir)
    try:
        if who == "baseline":
            command = [
                sys.executable,
                __file__,
                "--baseline",
                str(workdir / "farm.json"),
                "--threads",
                str(threads),
            ]
        else:
            command = [sys.executable, "-m", "orchestrator", "run", str(inventory)]
        ok, wall, client, farm_cpu = _measure(farm, command, workdir / f"{who}.log")
    finally:
        stop_farm(farm.proc)
    events = read_events(farm.describe["events"])
    by_action = Counter(str(e.get("action")) for e in events if e["kind"] == "winrm_request")
    requests = sum(by_action.values())
    probes = sum(1 for e in events if e["kind"] == "http_request" and e.get("path") == "/healthz")
    return Trial(who, nodes, ok, wall, client, farm_cpu, requests, probes, dict(by_action))


def _measure(farm: FarmProcess, command: list[str], log: Path) -> tuple[bool, float, float, float]:
    # The farm is a child too, but it is not reaped until it is stopped: RUSAGE_CHILDREN grows by
    # the client alone here.
    cpu0, farm0, wall0 = _children_cpu(), farm.cpu_seconds(), time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=CLIENT_TIMEOUT).returncode
    wall = time.perf_counter() - wall0
    return rc == 0, wall, _children_cpu() - cpu0, farm.cpu_seconds() - farm0


# --- report -----------------------------------------------------------------------------------


def _median(trials: list[Trial], value: Callable[[Trial], float]) -> float:
    return statistics.median(value(t) for t in trials)


def report_ratio(trials: list[Trial], nodes: int) -> None:
    by_who = {who: [t for t in trials if t.who == who] for who in ("baseline", "orchestrator")}
    rows: list[tuple[str, Callable[[Trial], float], str]] = [
        ("client CPU per node", lambda t: 1000 * t.per_node(t.client_cpu), "ms"),
        ("farm CPU per node", lambda t: 1000 * t.per_node(t.farm_cpu), "ms"),
        ("WinRM requests per node", lambda t: t.per_node(t.requests), ""),
        ("health probes per node", lambda t: t.per_node(t.probes), ""),
        ("wall time", lambda t: t.wall, "s"),
    ]
    runs = len(by_who["baseline"])
    print(f"ratio: {nodes} nodes, iis-restart, instant services, median of {runs} trials each")
    print(f"  {'':26s}{'baseline':>12s}{'orchestrator':>14s}{'ratio':>8s}")
    for label, value, unit in rows:
        base, orch = _median(by_who["baseline"], value), _median(by_who["orchestrator"], value)
        ratio = f"{orch / base:7.2f}x" if base else "      -"
        print(f"  {label:26s}{base:10.1f}{unit:>2s}{orch:12.1f}{unit:>2s}{ratio}")
    for who, runs_of in by_who.items():
        actions = Counter[str]()
        for t in runs_of:
            actions.update(t.by_action)
        total = sum(t.nodes for t in runs_of)
        print(
            f"  {who} requests by action: "
            + ", ".join(f"{a} {c / total:.1f}" for a, c in actions.most_common())
        )
    failed = [t for t in trials if not t.ok]
    if failed:
        print(f"  FAILED trials: {', '.join(t.who for t in failed)} (see the logs)")


def report_scale(trials: list[Trial]) -> None:
    print("scale: orchestrator run, iis-restart, instant services, window 10")
    print(
        f"  {'nodes':>6s}{'client ms/node':>16s}{'farm ms/node':>14s}{'requests/node':>15s}"
        f"{'probes/node':>13s}{'probes total':>14s}{'wall s':>9s}  outcome"
    )
    for t in trials:
        print(
            f"  {t.nodes:6d}{1000 * t.per_node(t.client_cpu):16.1f}{1000 * t.per_node(t.farm_cpu):14.1f}"
            f"{t.per_node(t.requests):15.1f}{t.per_node(t.probes):13.1f}{t.probes:14d}{t.wall:9.1f}"
            f"  {'ok' if t.ok else 'FAILED'}"
        )


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50, help="nodes in the ratio trials (0 skips them)")
    parser.add_argument("--trials", type=int, default=2, help="trials of each side, interleaved")
    parser.add_argument("--scale", default="50,100,200", help="fleet sizes of the scale runs ('' skips)")
    parser.add_argument("--threads", type=int, default=10, help="the baseline's threads")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline is not None:
        return baseline(args.baseline, args.threads)
    scale = [int(n) for n in args.scale.split(",") if n.strip()]
    if min([args.trials, args.threads, args.window, *scale]) < 1 or args.nodes < 0:
        parser.error("trials, threads, window and fleet sizes must be at least 1")
    started = time.perf_counter()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        if args.nodes:
            trials = [
                run_trial(Path(tmp, f"{who}-{i}"), who, args.nodes, args.window, args.threads)
                for i in range(args.trials)
                for who in ("baseline", "orchestrator")
            ]
            report_ratio(trials, args.nodes)
            ok = all(t.ok for t in trials)
        if scale:
            runs = [
                run_trial(Path(tmp, f"scale-{n}"), "orchestrator", n, args.window, args.threads)
                for n in scale
            ]
            report_scale(runs)
            ok = ok and all(t.ok for t in runs)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
