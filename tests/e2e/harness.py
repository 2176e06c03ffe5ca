"""End-to-end harness: a simulated farm started as an operator would (`orchestrator sim`), and the
orchestrator run through its command line against it, over real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

# Each farm gets its own /24 on loopback (127.0.B.x) so tests never share listeners. Blocks 100-249
# are the harness's (1 is the demo's, 60 and 61 are fixed test addresses, 250 a host nobody serves).
_FIRST_BLOCK, _LAST_BLOCK = 100, 249


def _worker_blocks() -> Iterator[int]:
    """This test process's blocks. Parallel workers (pytest-xdist's `gwN`, `N` of
    PYTEST_XDIST_WORKER_COUNT) each take every count-th block from their own offset, so two workers
    never hand out the same block; a lone process takes them all in order."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    yield from range(_FIRST_BLOCK + int(worker.removeprefix("gw")), _LAST_BLOCK + 1, count)
    raise RuntimeError(
        f"test worker {worker} used all its loopback blocks (127.0.{_FIRST_BLOCK}-{_LAST_BLOCK}.x, one in "
        f"{count}): run fewer workers"
    )


_blocks = _worker_blocks()

# Tests that listen on (or occupy) fixed addresses share an xdist group, so parallel workers never
# run two of them at once (the Makefile runs `--dist loadgroup`).
DEMO_ADDRESSES = pytest.mark.xdist_group("127.0.1.x: the demo inventory's own addresses")

PASSWORD = "E2e-Passw0rd!"


@dataclass
class Farm:
    inventory: Path
    describe: dict[str, Any]
    proc: subprocess.Popen[bytes]
    workdir: Path

    def events(self) -> list[dict[str, Any]]:
        path = Path(self.describe["events"])
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def node_events(self, node: str, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["node"] == node and (not kinds or e["kind"] in kinds)]

    def client(self, node: str) -> Any:
        """A pypsrp Client for one node, as an operator's own script would use."""
        from pypsrp.client import Client

        address = next(n["address"] for n in self.describe["nodes"] if n["name"] == node)
        return Client(
            address,
            username=self.describe["username"],
            password=self.describe["password"],
            ssl=False,
            auth="ntlm",
            encryption="always",
            no_proxy=True,
        )

    def services(self, node: str, *names: str) -> dict[str, str]:
        """The node's services as Get-Service reports them through pypsrp (the farm's own truth)."""
        from pypsrp.powershell import PowerShell, RunspacePool
        from pypsrp.wsman import WSMan

        address = next(n["address"] for n in self.describe["nodes"] if n["name"] == node)
        wsman = WSMan(
            address,
            username=self.describe["username"],
            password=self.describe["password"],
            ssl=False,
            auth="ntlm",
            no_proxy=True,
        )
        with RunspacePool(wsman) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Service").add_parameter("Name", list(names))
            output = ps.invoke()
        return {str(_prop(o, "Name")): str(_prop(o, "Status")) for o in output}

    def wait_for_farm_event(self, deadline: float, **match: str) -> None:
        """Until the farm's own event log has a record whose fields include `match`."""
        while time.monotonic() < deadline:
            if any(all(e.get(k) == v for k, v in match.items()) for e in self.events()):
                return
            time.sleep(0.05)
        raise AssertionError(f"the farm never logged {match}")

    def start_run(self, *args: str, command: str = "run") -> subprocess.Popen[str]:
        """`orchestrator run` (or resume) in the background, for tests that signal it."""
        cmd = [sys.executable, "-m", "orchestrator", command, str(self.inventory), *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())

    def run_status(self, *args: str, timeout: float = 60) -> str:
        """`orchestrator status` (with `args`, e.g. --live): its stdout; a non-zero exit fails."""
        cmd = [sys.executable, "-m", "orchestrator", "status", str(self.inventory), *args]
        status = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), check=False)
        assert status.returncode == 0, status.stderr
        return status.stdout

    def run(
        self, *args: str, inventory: Path | None = None, timeout: float = 120, command: str = "run"
    ) -> Run:
        report = self.workdir / f"report-{time.monotonic_ns()}.json"
        cmd = [
            sys.executable,
            "-m",
            "orchestrator",
            command,
            str(inventory or self.inventory),
            "--report",
            str(report),
        ]
        proc = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=_env(), check=False
        )
        data = json.loads(report.read_text()) if report.exists() else None
        return Run(proc.returncode, proc.stdout, proc.stderr, data)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    def node(self, name: str) -> dict[str, Any]:
        assert self.report is not None, self.stderr
        return next(n for n in self.report["nodes"] if n["name"] == name)


def _prop(obj: Any, name: str) -> Any:
    # Which of the adapted or extended bags a property lands in is the serializer's business.
    if name in obj.adapted_properties:
        return obj.adapted_properties[name]
    return obj.extended_properties[name]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class InventorySpec:
    """A small inventory for a farm of `nodes` on its own loopback block, fast timings."""

    nodes: int = 3
    faults: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] = field(default_factory=dict)
    timeouts: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)

    def render(self, block: int, port: int) -> dict[str, Any]:
        names = [f"web-{i:02d}" for i in range(1, self.nodes + 1)]
        return {
            "version": 1,
            "defaults": {
                "credentials": {"username": "e2e", "password": PASSWORD, "inline_password": True},
                "action": {"type": "iis-restart", **self.action},
                "health": {
                    "url": f"http://{{host}}:{port}/healthz",
                    "retries": 8,
                    "interval": 0.2,
                    **self.health,
                },
                "timeouts": {"stop": 5, "start": 5, "verify": 10, "node": 60, **self.timeouts},
            },
            "nodes": [{"name": n, "host": f"127.0.{block}.{i}"} for i, n in enumerate(names, 1)],
            "rollout": {
                "failure_budget": {"max_failures": 1},
                **(self.rollout or {"strategy": "window", "window": 1}),
            },
            "load_balancer": {"driver": "none"},
            "journal": "journal.sqlite",
            "sim": {
                "seed": block,
                "username": "e2e",
                "password": PASSWORD,
                "site_port": port,
                "timings": {
                    "default": {"stop": {"low": 0.05, "high": 0.2}, "start": {"low": 0.05, "high": 0.2}}
                },
                "nodes": {name: {"faults": faults} for name, faults in self.faults.items()},
                **self.sim,
            },
        }


def down_intervals(farm: Farm) -> dict[str, tuple[float, float]]:
    """Per node: from the first stop control to the last service reaching Running."""
    spans: dict[str, list[float]] = {}
    for e in farm.events():
        if e["kind"] == "service_control" and e["control"] == "stop":
            spans.setdefault(e["node"], [e["ts"], e["ts"]])
        elif e["kind"] == "service_state" and e["state"] == "Running" and e["node"] in spans:
            spans[e["node"]][1] = e["ts"]
    return {n: (a, b) for n, (a, b) in spans.items()}


def max_concurrent(intervals: dict[str, tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals.values()] + [(b, -1) for _, b in intervals.values()])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def wait_for_event(events: Path, deadline: float, **match: str) -> None:
    """Until the run's event stream has a line whose fields include `match`."""
    while time.monotonic() < deadline:
        if events.exists():
            for line in events.read_text().splitlines():
                e = json.loads(line)
                if all(e.get(key) == value for key, value in match.items()):
                    return
        time.sleep(0.05)
    raise AssertionError(f"no event with {match}")


def wait_for_phase(events: Path, node: str, phase: str, deadline: float) -> None:
    """Until the run's event stream shows `node` entering `phase`."""
    wait_for_event(events, deadline, event="phase", node=node, phase=phase)


def wait_for_line(proc: subprocess.Popen[str], text: str, deadline: float) -> None:
    """Until the process writes a stderr line containing `text`."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stderr.readline()
            if not line:
                break
            if text in line:
                return
    raise AssertionError(f"the run never logged {text!r}")


def interrupt_twice_during_stop(proc: subprocess.Popen[str], events: Path, node: str) -> None:
    """Ctrl-C twice while `node` stops; returns once the run has exited."""
    wait_for_phase(events, node, "stop", time.monotonic() + 30)
    proc.send_signal(signal.SIGINT)
    # Standard signals do not queue: a second SIGINT sent before the first is handled merges with it.
    wait_for_line(proc, "stop requested", time.monotonic() + 30)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)


# Services slow enough that a run can be caught in the middle of a node.
SLOW = {"timings": {"default": {"stop": {"low": 0.8, "high": 0.8}, "start": {"low": 0.3, "high": 0.3}}}}


def start_farm(
    spec: InventorySpec | Path, workdir: Path, track: Callable[[Farm], None] | None = None
) -> Farm:
    """A farm for `spec` (or a copy of an inventory file) in `workdir`, started as an operator
    would (`orchestrator sim`) and ready. `track` is told the farm before it is waited for, so a
    farm that never becomes ready is stopped all the same."""
    inventory = workdir / "inventory.yaml"
    if isinstance(spec, Path):
        inventory.write_text(spec.read_text())
    else:
        inventory.write_text(yaml.safe_dump(spec.render(next(_blocks), 8080), sort_keys=False))
    describe = workdir / "farm.json"
    # stderr to a file: a pipe nobody reads would fill up and stall the farm.
    with open(workdir / "sim.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "sim",
                "--inventory",
                str(inventory),
                "--describe",
                str(describe),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=_env(),
        )
    f = Farm(inventory, {}, proc, workdir)
    if track is not None:
        track(f)
    try:
        _wait_ready(proc, workdir / "sim.log", deadline=time.monotonic() + 60)
    except BaseException:
        stop_farm(f)
        raise
    f.describe = json.loads(describe.read_text())
    return f


@contextlib.contextmanager
def killed_on_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The run, killed on the way out if it is still going (a test that failed before it ended)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def stop_farm(f: Farm) -> None:
    f.proc.terminate()
    try:
        f.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        f.proc.kill()
        f.proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"ready\n" in buf:
                return
    raise AssertionError(f"farm did not become ready: {buf!r}\n{log.read_text()}")
