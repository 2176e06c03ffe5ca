"""The simulated farm as a separate process, for the benchmarks: start, wait for `ready`, stop.

A separate process keeps the farm's CPU apart from the client's, and is stopped by its PID whatever
happens to the benchmark (SIGTERM first, so a clean shutdown flushes the event log).
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from simfarm.config import SimConfig

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
SITE_PORT = 8080


def restart_defaults() -> dict[str, Any]:
    """The inventory defaults the rollout benchmarks share: an iis-restart of the farm's own sites."""
    sim = SimConfig()
    return {
        # The simulated farm's own demo account: inline on purpose, as in inventories/demo.yaml.
        "credentials": {"username": sim.username, "password": sim.password, "inline_password": True},
        "action": {"type": "iis-restart"},
        "health": {"url": f"http://{{host}}:{SITE_PORT}/healthz", "retries": 100, "interval": 0.05},
        "timeouts": {"stop": 30, "start": 30, "verify": 30, "node": 120},
    }


@dataclass
class FarmProcess:
    proc: subprocess.Popen[str]
    describe: dict[str, Any]
    startup_seconds: float

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)


def start_farm(farm_args: list[str], workdir: Path) -> FarmProcess:
    """`python -m simfarm.farm FARM_ARGS`, waited for; the workdir keeps its event log."""
    describe = workdir / "farm.json"
    log = workdir / "farm.log"
    command = [
        sys.executable,
        "-m",
        "simfarm.farm",
        *farm_args,
        "--describe",
        str(describe),
        "--workdir",
        str(workdir / "farm"),
    ]
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        _wait_ready(proc, log)
        return FarmProcess(proc, json.loads(describe.read_text()), time.perf_counter() - started)
    except BaseException:
        stop_farm(proc)
        raise


def _wait_ready(proc: subprocess.Popen[str], log: Path) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                raise RuntimeError(f"the farm exited before it was ready:\n{log.read_text()}")
    raise RuntimeError(f"the farm was not ready within {READY_TIMEOUT:g}s")


def stop_farm(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (a clean shutdown flushes the event log), SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def exit_on_sigterm(signum: int, _frame: object) -> None:
    # Unwinding (not dying) is what lets the benchmark's `finally` stop the farm it started.
    raise SystemExit(128 + signum)
