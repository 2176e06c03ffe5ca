"""Rollout cost and scheduling quality: the real coordinator against a simulated farm.

The farm runs in its own process (`python -m simfarm.farm --inventory ...`); the
coordinator (`Rollout(inventory).run()`, as `orchestrator run` calls it) runs in this one, so this
process's CPU time (`time.process_time`, every thread included) is the orchestrator's alone (the
farm's is read with psutil, for comparison).
Printed, never asserted.

Part 1, cost: a rolling `iis-restart` of `--nodes` (200) nodes whose services stop and start at
once (sim timings 0..0.001 s), strategy window `--window`. Prints orchestrator CPU seconds per node,
WinRM requests per node (the farm's `winrm_request` events, authentication legs not included; split
into the fleet-wide preflight and the restart itself) and wall time.

Part 2, scheduling: `--spread-nodes` (40) nodes whose services take a seeded spread of durations
(stop and start uniform 0.2-2 s per service, seed `--seed`), run twice on a freshly started farm
with the same seed, so every node draws the same durations in both runs: strategy batch (`--batch`)
and strategy window (`--window`). Each run's makespan is set against an ideal schedule computed from
that run's own measured node durations.

Definitions (part 2):
- a node's duration: from its `drain` phase starting to its `node_finished` event (after the final
  service read), taken from the run's event stream: the time it held a slot;
- makespan: from the first node's drain to the last node's finish. The fleet-wide preflight and the
  health probe before it are excluded (they precede any scheduling) and shown as "preflight";
- ideal, batch: the plan's batches run back to back, each as long as its longest node:
  sum over batches of max(duration). This is the best any batch scheduler can do with those nodes
  in that plan; the gap is pure coordination overhead (noticing a batch ended, starting the next);
- ideal, window N: the same nodes in the same order replayed with zero overhead (each node starts
  the moment a slot frees up: greedy list scheduling), and, for reference, the lower bound no order
  can beat, max(longest node, sum(durations) / N). Makespan over the replay is the coordinator's
  overhead; the replay over the bound is the price of the inventory order.

Run: `.venv/bin/python bench/rollout.py [--nodes 200] [--spread-nodes 40]` (about 3 minutes on 2
cores; `--nodes 50 --spread-nodes 20` for a quick look). The farms listen on 127.0.8.x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from farmproc import SITE_PORT, exit_on_sigterm, restart_defaults, start_farm, stop_farm
from simfarm.events import read_events as read_farm_events

from orchestrator.inventory import load_inventory
from orchestrator.log import configure_logging
from orchestrator.report.events import EventStream, NodeFinished, PhaseEvent, read_events
from orchestrator.results import RunResult
from orchestrator.rollout import Rollout, RunOptions

# A loopback block of its own, so the bench never shares listeners with tests or the demo.
BASE_BLOCK = "127.0.8"
INSTANT = {"low": 0.0, "high": 0.001}
SPREAD = {"low": 0.2, "high": 2.0}


# --- one run ------------------------------------------------------------------------------------


def write_inventory(
    path: Path, nodes: int, rollout: dict[str, Any], timing: dict[str, float], seed: int
) -> None:
    if not 1 <= nodes <= 254:
        raise SystemExit(f"{nodes} nodes do not fit in {BASE_BLOCK}.1-254")
    names = [f"web-{i:03d}" for i in range(1, nodes + 1)]
    inventory = {
        "version": 1,
        "defaults": restart_defaults(),
        "nodes": [{"name": n, "host": f"{BASE_BLOCK}.{i}"} for i, n in enumerate(names, 1)],
        # The bench measures the coordinator, not its safety stops: nothing may hold the run back.
        "rollout": {"min_healthy": 0, "failure_budget": {"max_failures": nodes}, **rollout},
        "load_balancer": {"driver": "none"},
        "journal": "journal.sqlite",
        "sim": {
            "seed": seed,
            "site_port": SITE_PORT,
            "timings": {"default": {"stop": timing, "start": timing}},
        },
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")


@dataclass
class Run:
    result: RunResult
    wall: float
    cpu: float
    farm_cpu: float
    farm_events: list[dict[str, Any]]
    run_events: Path | None


def run_rollout(
    workdir: Path,
    nodes: int,
    rollout: dict[str, Any],
    timing: dict[str, float],
    seed: int,
    *,
    with_events: bool,
) -> Run:
    """A fresh farm and journal, one coordinator run in this process, the farm stopped by PID.

    `with_events` adds the JSONL event stream (`orchestrator run --events`); without it the run costs
    what a plain `orchestrator run` costs (the journal is always written).
    """
    workdir.mkdir(parents=True)
    inventory = workdir / "inventory.yaml"
    write_inventory(inventory, nodes, rollout, timing, seed)
    run_events = workdir / "run-events.jsonl" if with_events else None
    farm = start_farm(["--inventory", str(inventory)], workdir)
    try:
        inv = load_inventory(inventory)
        with contextlib.ExitStack() as stack:
            stream = stack.enter_context(EventStream(run_events)) if run_events else None
            farm_cpu0 = farm.cpu_seconds()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = asyncio.run(Rollout(inv, RunOptions(recorder_events=stream)).run())
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            farm_cpu = farm.cpu_seconds() - farm_cpu0
    finally:
        stop_farm(farm.proc)
    return Run(result, wall, cpu, farm_cpu, read_farm_events(farm.describe["events"]), run_events)


def _outcome(run: Run) -> str:
    failed = [n.name for n in run.result.nodes if n.outcome != "done"]
    if not failed:
        return run.result.outcome
    return f"{run.result.outcome}, {len(failed)} not done: {', '.join(failed[:5])}"


# --- part 1: cost ---------------------------------------------------------------------------------


def first_drain(run: Run) -> float:
    starts = [p.started_at.timestamp() for n in run.result.nodes for p in n.phases if p.phase == "drain"]
    return min(starts, default=float("inf"))


def report_cost(run: Run, nodes: int, window: int) -> None:
    requests = [e for e in run.farm_events if e["kind"] == "winrm_request"]
    restart_from = first_drain(run)
    per_node = Counter(e["node"] for e in requests)
    counts = [per_node.get(n.name, 0) for n in run.result.nodes]
    preflight = sum(1 for e in requests if e["ts"] < restart_from)
    by_action = Counter(str(e.get("action")) for e in requests)
    print(f"rollout cost: {nodes} nodes, iis-restart, window {window}, instant services")
    print(f"  outcome                         {_outcome(run)}")
    print(f"  wall time                       {run.wall:8.2f} s  ({nodes / run.wall:.1f} nodes/s)")
    print(f"  orchestrator CPU                {run.cpu:8.2f} s  ({1000 * run.cpu / nodes:.1f} ms/node)")
    print(
        f"  farm CPU (for comparison)       {run.farm_cpu:8.2f} s"
        f"  ({1000 * run.farm_cpu / nodes:.1f} ms/node)"
    )
    print(
        f"  WinRM requests per node         {sum(counts) / nodes:8.1f}"
        f"  (min {min(counts)}, max {max(counts)};"
        f" preflight {preflight / nodes:.1f}, restart {(len(requests) - preflight) / nodes:.1f})"
    )
    print("    by action: " + ", ".join(f"{a} {c / nodes:.1f}" for a, c in by_action.most_common()))


# --- part 2: scheduling ---------------------------------------------------------------------------


def node_spans(path: Path) -> dict[str, tuple[float, float]]:
    """(drain started, node finished) per node, from the run's event stream."""
    began: dict[str, datetime] = {}
    spans: dict[str, tuple[float, float]] = {}
    for event in read_events(path):
        if isinstance(event, PhaseEvent) and event.phase == "drain" and event.status == "started":
            began[event.node] = event.at
        elif isinstance(event, NodeFinished) and event.node in began:
            spans[event.node] = (began[event.node].timestamp(), event.at.timestamp())
    return spans


def pending_seconds(
    farm_events: list[dict[str, Any]], spans: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Per node, how long at least one service was StopPending or StartPending during its restart:
    the farm's own work (state changes at boot fall outside the node's span)."""
    pending: dict[str, set[str]] = {}
    since: dict[str, float] = {}
    total: Counter[str] = Counter()
    for event in farm_events:
        span = spans.get(event["node"])
        if event["kind"] != "service_state" or span is None or not span[0] <= event["ts"] <= span[1]:
            continue
        node, busy = event["node"], pending.setdefault(event["node"], set())
        was_busy = bool(busy)
        if event["state"] in ("StopPending", "StartPending"):
            busy.add(event["service"])
        else:
            busy.discard(event["service"])
        if busy and not was_busy:
            since[node] = event["ts"]
        elif was_busy and not busy:
            total[node] += event["ts"] - since[node]
    return dict(total)


def plan_batches(result: RunResult) -> list[list[str]]:
    """The batches the run followed (planned with live health, so read back from the result)."""
    raw = result.plan.get("batches")
    if not isinstance(raw, list):
        return []
    return [[str(name) for name in batch] for batch in raw if isinstance(batch, list)]


def ideal_batch(batches: list[list[str]], duration: dict[str, float]) -> float:
    return sum(max((duration[n] for n in batch if n in duration), default=0.0) for batch in batches)


def ideal_window(order: list[str], duration: dict[str, float], window: int) -> float:
    """Greedy list scheduling in plan order: a node starts the moment one of `window` slots frees."""
    slots = [0.0] * window
    end = 0.0
    for name in order:
        start = heapq.heappop(slots)
        finish = start + duration[name]
        end = max(end, finish)
        heapq.heappush(slots, finish)
    return end


def report_schedule(label: str, run: Run, window: int | None) -> None:
    assert run.run_events is not None, "scheduling runs record their event stream"
    spans = node_spans(run.run_events)
    print(f"  {label}")
    print(f"    outcome                       {_outcome(run)}")
    if not spans:
        return
    duration = {n: end - begin for n, (begin, end) in spans.items()}
    first = min(begin for begin, _ in spans.values())
    makespan = max(end for _, end in spans.values()) - first
    batches = plan_batches(run.result)
    order = [n for batch in batches for n in batch if n in duration]
    values = sorted(duration.values())
    work = sum(pending_seconds(run.farm_events, spans).values())
    print(
        f"    node durations                {values[0]:.2f}-{values[-1]:.2f} s,"
        f" mean {sum(values) / len(values):.2f}, sum {sum(values):.1f}"
    )
    print(
        f"    services pending (farm)       mean {work / len(values):.2f} s, sum {work:.1f}"
        f" (the rest of a node's duration is the workflow's)"
    )
    print(f"    preflight                     {first - run.result.started_at.timestamp():8.2f} s")
    if window is None:
        ideal = ideal_batch(batches, duration)
        print(f"    makespan                      {makespan:8.2f} s")
        print(f"    ideal (sum of batch maxima)   {ideal:8.2f} s   {_versus(makespan, ideal)}")
        return
    replay = ideal_window(order, duration, window)
    bound = max(values[-1], sum(values) / window)
    print(f"    makespan                      {makespan:8.2f} s")
    print(f"    ideal (zero-overhead replay)  {replay:8.2f} s   {_versus(makespan, replay)}")
    label = f"bound max(longest, sum/{window})"
    print(f"    {label:<30s}{bound:8.2f} s   {_versus(makespan, bound, 'bound')}")


def _versus(makespan: float, ideal: float, name: str = "ideal") -> str:
    return f"makespan/{name} {makespan / ideal:.3f} (+{1000 * (makespan - ideal):.0f} ms)"


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200, help="nodes in the cost run (0 skips it)")
    parser.add_argument("--spread-nodes", type=int, default=40, help="nodes in each scheduling run (0 skips)")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if min(args.batch, args.window) < 1 or min(args.nodes, args.spread_nodes) < 0:
        parser.error("--batch and --window must be at least 1, node counts at least 0")
    configure_logging("warning", stream=sys.stderr)
    started = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        if args.nodes:
            window = {"strategy": "window", "window": args.window}
            run = run_rollout(Path(tmp, "cost"), args.nodes, window, INSTANT, args.seed, with_events=False)
            report_cost(run, args.nodes, args.window)
            runs.append(run)
        if args.spread_nodes:
            n = args.spread_nodes
            print(
                f"scheduling: {n} nodes, iis-restart, stop/start uniform"
                f" {SPREAD['low']}-{SPREAD['high']} s per service, seed {args.seed}"
            )
            batch = run_rollout(
                Path(tmp, "batch"),
                n,
                {"strategy": "batch", "batch": args.batch},
                SPREAD,
                args.seed,
                with_events=True,
            )
            report_schedule(f"batch {args.batch}", batch, None)
            runs.append(batch)
            slide = run_rollout(
                Path(tmp, "window"),
                n,
                {"strategy": "window", "window": args.window},
                SPREAD,
                args.seed,
                with_events=True,
            )
            report_schedule(f"window {args.window}", slide, args.window)
            runs.append(slide)
    print(f"total {time.perf_counter() - started:.1f} s")
    # Figures from a run that did not restart every node measure something else: say so by exit code.
    return 0 if all(r.result.outcome == "succeeded" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
