"""How fast hostile or large inventories are answered: refused (bounds) or loaded (no false refusal).

Printed, never asserted. Each case is parsed in this process, the median of `--repeat` runs:

- a "billion laughs" file (nine levels of nine aliases: 9**9 values once expanded);
- a recursive alias, and 5000 levels of nested flow lists;
- a valid inventory of `--nodes` nodes that all name one anchor (loaded, not refused).

Run: `.venv/bin/python bench/inputs.py [--nodes 5000] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from orchestrator.inventory import parse_inventory
from orchestrator.yamlsource import SourceError

HEAD = """version: 1
defaults:
  credentials: {username_env: U, password_env: P}
  health: {url: "http://{host}:8080/healthz"}
"""


def bomb() -> str:
    lols = ", ".join(['"lol"'] * 9)
    out = HEAD + f"nodes: [{{name: a, host: 10.0.0.1}}]\nsim:\n  l0: &l0 [{lols}]\n"
    for level in range(1, 9):
        out += f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return out


def large(nodes: int) -> str:
    anchor = "sim: &t {stop: 30, start: 30, verify: 60}\n"
    rows = "".join(
        f"  - {{name: web-{i:05d}, host: 10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}, timeouts: *t}}\n"
        for i in range(nodes)
    )
    return HEAD + anchor + "nodes:\n" + rows


def timed(text: str, repeat: int) -> tuple[float, str]:
    times, outcome = [], ""
    for _ in range(repeat):
        began = time.perf_counter()
        try:
            inv = parse_inventory(text, "bench.yaml")
            outcome = f"loaded, {len(inv.nodes)} nodes"
        except SourceError as exc:
            outcome = f"refused: {exc.message}"
        times.append(time.perf_counter() - began)
    return statistics.median(times), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "billion laughs": bomb(),
        "recursive alias": HEAD + "nodes: &n [*n]\n",
        "5000 nested lists": HEAD + "nodes: " + "[" * 5000 + "]" * 5000 + "\n",
        f"{args.nodes} nodes sharing an anchor": large(args.nodes),
    }
    for name, text in cases.items():
        seconds, outcome = timed(text, args.repeat)
        print(f"{name:32} {len(text) / 1024:9.1f} KiB {seconds * 1000:9.1f} ms  {outcome}")


if __name__ == "__main__":
    main()
