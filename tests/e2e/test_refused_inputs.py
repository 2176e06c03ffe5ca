"""Input a hostile or mistaken operator could give, refused through the CLI before anything happens.

Each case runs `orchestrator run` against a simulated farm with a bad inventory or option and checks
the exit code, that the message names the file, line, column and field (or the option), that no
traceback was printed, and, in the farm's event log, that no node was contacted (exit 2) or that no
service was touched (exit 3: preflight reads, never changes).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.results import ExitCode
from tests.e2e.harness import (
    PASSWORD,
    Farm,
    InventorySpec,
    Run,
    _blocks,
    _env,
    killed_on_exit,
    start_farm,
    stop_farm,
    wait_for_phase,
)

# Whatever reaches a node: a WinRM request, a health probe, a service or pool control, a kill.
CONTACT = ("winrm_request", "http_request")
TOUCH = ("service_control", "service_control_failed", "apppool_control", "apppool_recycle", "process_killed")

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def shared_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """One farm for every refusal: each is refused before any node is contacted, and each test
    checks the events logged while it ran."""
    started: list[Farm] = []
    try:
        yield start_farm(InventorySpec(nodes=2), tmp_path_factory.mktemp("farm"), started.append)
    finally:
        for f in started:
            stop_farm(f)


@dataclass
class Refusal:
    """A test's view of the shared farm: its own directory for the inventory copy, the journal and
    outputs, and the events the farm had logged when the test began."""

    farm: Farm
    dir: Path
    seen: int

    def run(self, mutate: Mutation | None = None, *args: str, extra: str = "") -> tuple[Run, Path]:
        """`orchestrator run` on a copy of the farm's inventory changed by `mutate`, with `extra`
        YAML text appended; the journal goes beside the copy."""
        data = yaml.safe_load(self.farm.inventory.read_text())
        if mutate is not None:
            mutate(data)
        copy = self.dir / "inventory.yaml"
        copy.write_text(yaml.safe_dump(data, sort_keys=False) + extra)
        return self.farm.run(*args, inventory=copy, timeout=60), copy

    def assert_refused(self, run: Run, where: str, message: str) -> None:
        assert run.code == ExitCode.INVALID_INPUT, run.stdout + run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        assert re.search(where, run.stderr), run.stderr
        assert message in run.stderr, run.stderr
        assert run.report is None  # refused before a run existed
        logged = self.farm.events()[self.seen :]
        assert [e for e in logged if e["kind"] in CONTACT + TOUCH] == []


@pytest.fixture
def two_nodes(shared_farm: Farm, tmp_path: Path) -> Refusal:
    return Refusal(shared_farm, tmp_path, len(shared_farm.events()))


def block_of(f: Farm) -> int:
    data = yaml.safe_load(f.inventory.read_text())
    return int(data["nodes"][0]["host"].split(".")[2])


def located(file: Path, field: str) -> str:
    return rf"{re.escape(str(file))}:\d+:\d+: {re.escape(field)}: "


# --- YAML that would exhaust memory or the stack ------------------------------------------------------


def billion_laughs() -> str:
    out = 'lols:\n  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for level in range(1, 9):
        out += f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return out


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        pytest.param(billion_laughs(), "lols.l4[0]", "aliases expand to more than 10000 values", id="bomb"),
        pytest.param("loop: &loop [1, *loop]\n", "loop[1]", "recursive alias", id="recursive-alias"),
        pytest.param(
            "deep: " + "[" * 5000 + "]" * 5000 + "\n",
            "deep" + "[0]" * 32,
            "nested deeper than 32 levels",
            id="deep-nesting",
        ),
    ],
)
def test_hostile_yaml_is_refused_at_once(two_nodes: Refusal, extra: str, field: str, message: str) -> None:
    # The subprocess deadline is far beyond a bounded answer and far below an unbounded one (minutes
    # and gigabytes for the bomb, a RecursionError traceback for the others).
    run, bad = two_nodes.run(extra=extra)
    two_nodes.assert_refused(run, located(bad, field), message)


# --- values the inventory model refuses ---------------------------------------------------------------


def _set(*path: str | int, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _action(action: dict[str, Any]) -> Mutation:
    return _set("defaults", "action", value=action)


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        pytest.param(
            _set("defaults", "timeouts", "stop", value=float("inf")),
            "defaults.timeouts.stop",
            "finite number",
            id="inf-timeout",
        ),
        pytest.param(
            _set("defaults", "health", "interval", value=float("nan")),
            "defaults.health.interval",
            "finite number",
            id="nan-interval",
        ),
        pytest.param(
            _action({"type": "services", "services": ["W3*"]}),
            "defaults.action.services[0]",
            "'*' is a wildcard to PowerShell",
            id="service-star",
        ),
        pytest.param(
            _action({"type": "services", "services": ["W3SVC", "W3SVC[x]"]}),
            "defaults.action.services[1]",
            "'[' is a wildcard to PowerShell",
            id="service-bracket",
        ),
        pytest.param(
            _action({"type": "services", "services": ["W3SVC\x07"]}),
            "defaults.action.services[0]",
            "control character",
            id="service-control-character",
        ),
        pytest.param(
            _action({"type": "apppool-recycle", "app_pools": ["DefaultAppPool?"]}),
            "defaults.action.app_pools[0]",
            "'?' is a wildcard to PowerShell",
            id="apppool-wildcard",
        ),
        pytest.param(
            _set("defaults", "health", "url", value="http://{host}:99999/healthz"),
            "defaults.health.url",
            "not a valid URL",
            id="health-port-99999",
        ),
        pytest.param(
            _set("defaults", "health", "url", value="http://127.0.0.1:8080/healthz"),
            "defaults.health.url",
            "the URL's host 127.0.0.1 is not this node's host",
            id="health-url-other-host",
        ),
    ],
)
def test_values_windows_or_the_farm_would_misread_are_refused(
    two_nodes: Refusal, mutate: Mutation, field: str, message: str
) -> None:
    run, bad = two_nodes.run(mutate)
    two_nodes.assert_refused(run, located(bad, field), message)


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda b: f"127.000.{b:03d}.001", id="zero-padded"),
        pytest.param(lambda b: str((127 << 24) + (b << 8) + 1), id="integer"),
        pytest.param(lambda b: f"::ffff:127.0.{b}.1", id="ipv4-mapped"),
    ],
)
def test_one_machine_in_another_spelling_is_refused(
    two_nodes: Refusal, spelling: Callable[[int], str]
) -> None:
    host = spelling(block_of(two_nodes.farm))
    run, bad = two_nodes.run(_set("nodes", 1, "host", value=host))
    two_nodes.assert_refused(run, located(bad, "nodes[1].host"), "one machine would be restarted twice")
    assert "is also node 'web-01'" in run.stderr


def test_two_names_for_one_address_are_refused_when_the_run_resolves_them(two_nodes: Refusal) -> None:
    def add_local(data: dict[str, Any]) -> None:
        data["nodes"] += [{"name": "local-a", "host": "127.0.0.1"}, {"name": "local-b", "host": "localhost"}]

    run, bad = two_nodes.run(add_local)
    message = "localhost resolves to 127.0.0.1, as does node 'local-a'"
    two_nodes.assert_refused(run, located(bad, "nodes[3].host"), message)


def test_a_change_window_already_over_is_refused_with_the_reason(two_nodes: Refusal) -> None:
    ended = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    run, bad = two_nodes.run(_set("rollout", "change_window", value={"finish_by": ended}))
    field = "rollout.change_window.finish_by"
    two_nodes.assert_refused(run, located(bad, field), "the change window ended 3 h ago")


# --- options and local files --------------------------------------------------------------------------


def test_a_journal_that_is_not_a_database_is_refused_and_left_alone(two_nodes: Refusal) -> None:
    journal = two_nodes.dir / "journal.sqlite"
    journal.write_text("rotation notes, not a database\n")
    run, copy = two_nodes.run()
    two_nodes.assert_refused(run, located(copy, "journal"), "not an SQLite database")
    assert journal.read_text() == "rotation notes, not a database\n"


OutputCase = Callable[[Path], list[str]]


def _under_a_file(tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("a file, not a directory")
    return ["--junit", str(tmp / "notes.txt" / "junit.xml")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(lambda tmp: ["--report", str(tmp)], "is a directory; give a file name", id="report-dir"),
        pytest.param(lambda tmp: ["--events", str(tmp)], "is a directory; give a file name", id="events-dir"),
        pytest.param(_under_a_file, "notes.txt is not a directory", id="junit-under-a-file"),
        pytest.param(
            lambda tmp: ["--html", "/proc/orchestrator.html"], "cannot create files in /proc", id="html-proc"
        ),
        pytest.param(
            lambda tmp: ["--junit", str(tmp / "inventory.yaml")],
            "is also the inventory",
            id="junit-over-inventory",
        ),
        pytest.param(
            lambda tmp: ["--log-level", "verbose"],
            "--log-level: 'verbose' is not a log level",
            id="log-level",
        ),
    ],
)
def test_unusable_options_are_refused_before_any_node_is_contacted(
    two_nodes: Refusal, options: OutputCase, message: str
) -> None:
    run, _ = two_nodes.run(None, *options(two_nodes.dir))
    two_nodes.assert_refused(run, re.escape(message), message)
    assert not (two_nodes.dir / "journal.sqlite").exists()  # no run was even recorded


# --- checks that need the nodes -----------------------------------------------------------------------


def test_a_health_check_failing_on_every_node_refuses_the_run(farm: Any) -> None:
    f = farm(InventorySpec(nodes=3, health={"url": "http://{host}:8080/healthzz"}))  # a typo: 404 everywhere
    run = f.run()
    assert run.code == ExitCode.PREFLIGHT_REFUSED, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert run.report is not None
    assert [n["outcome"] for n in run.report["nodes"]] == ["not_started"] * 3
    assert (run.report["budget"]["limit"], run.report["budget"]["spent"]) == (1, 0)  # nothing spent
    stopped = run.report["budget"]["stopped"]
    assert "the health check failed on every node" in stopped and "status 404" in stopped
    assert "stopped: the health check failed on every node" in run.stdout
    assert [e for e in f.events() if e["kind"] in TOUCH] == []
    # Preflight did look: each node was asked over WinRM.
    assert {e["node"] for e in f.events() if e["kind"] == "winrm_request"} == {"web-01", "web-02", "web-03"}


@pytest.fixture
def black_holes() -> Iterator[list[tuple[str, int]]]:
    """Listening sockets on loopback that never accept: a WinRM client waits on each until its
    timeout, as it would on hosts that drop packets."""
    block = next(_blocks)
    sockets = []
    try:
        for i in range(1, 201):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((f"127.0.{block}.{i}", 0))
            s.listen(0)
            sockets.append(s)
        yield [s.getsockname() for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_preflight_of_hundreds_of_silent_hosts_stops_at_the_first_sigterm(
    black_holes: list[tuple[str, int]], tmp_path: Path
) -> None:
    inventory = tmp_path / "silent.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {
                    "credentials": {"username": "e2e", "password": PASSWORD, "inline_password": True},
                    "health": {"url": "http://{host}:8080/healthz"},
                    "transport": {"connect_timeout": 120, "operation_timeout": 120},
                },
                "nodes": [
                    {"name": f"n-{i:03d}", "host": host, "transport": {"port": port}}
                    for i, (host, port) in enumerate(black_holes, 1)
                ],
                "journal": "journal.sqlite",
            }
        )
    )
    events, report = tmp_path / "events.jsonl", tmp_path / "report.json"
    cmd = [sys.executable, "-m", "orchestrator", "run", str(inventory), "--events", str(events)]
    proc = subprocess.Popen(
        [*cmd, "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    with killed_on_exit(proc):
        wait_for_phase(events, "n-001", "preflight", time.monotonic() + 60)
        proc.send_signal(signal.SIGTERM)
        # Without the stop, preflight would take 200 / 32 rounds of 120 s timeouts.
        proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.ABORTED_SIGNAL
    data = json.loads(report.read_text())
    assert {n["outcome"] for n in data["nodes"]} == {"not_started"}
    assert data["budget"]["stopped"] == "stopped by a signal during preflight; nothing was touched"
