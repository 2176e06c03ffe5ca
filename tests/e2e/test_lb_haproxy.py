"""Rolling restarts behind a real HAProxy started by the simulated farm: no request lost under load,
the capacity floor held in HAProxy's own eyes, an operator's MAINT respected, a reload survived."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from simfarm.load import Sampler, generate, runtime, servers

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec, _blocks, killed_on_exit, wait_for_line
from tests.e2e.held import hold_one, wait_drain_saw

# Faster checks than the demo's 1 s so that the suite stays short; same rise/fall logic.
CHECKS = {"inter_ms": 300, "fastinter_ms": 200, "rise": 2, "fall": 2}


def haproxy_inventory(
    tmp_path: Path, spec: InventorySpec, *, instances: int = 1, lb: dict[str, Any] | None = None
) -> tuple[Path, list[str]]:
    """An inventory for `spec` whose nodes sit behind `instances` HAProxy instances (TCP sockets on
    the farm's own loopback block); returns it and the sockets."""
    block = next(_blocks)
    data = spec.render(block, 8080)
    sockets = [f"127.0.{block}.250:{9990 + k}" for k in range(instances)]
    entries = [
        {"driver": "haproxy", "haproxy": {"socket": s, "backend": "web"}, "drain_timeout": 30, **(lb or {})}
        for s in sockets
    ]
    del data["load_balancer"]
    if instances == 1:
        data["load_balancer"] = entries[0]
    else:
        data["load_balancers"] = entries
    data["sim"]["haproxy"] = {"frontend": f"127.0.{block}.250:8000", **CHECKS}
    path = tmp_path / "lb-inventory.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, sockets


def run_outcome(f: Any, node: str) -> str:
    """A node's outcome in the last run, from the journal (orchestrator report)."""
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", str(f.inventory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    outcome: str = next(n["outcome"] for n in json.loads(out)["nodes"] if n["name"] == node)
    return outcome


def _frontend(f: Any) -> str:
    return f"http://{f.describe['load_balancer']['frontend']}/"


def test_rolling_restart_behind_haproxy_under_load_fails_no_request(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(nodes=4, rollout={"strategy": "window", "window": 1, "min_healthy": 3})
    inventory, (sock,) = haproxy_inventory(tmp_path, spec)
    f = farm(inventory)
    assert f.describe["load_balancer"]["backend"] == "web" and f.describe["load_balancer"]["socket"] == sock

    async def scenario() -> tuple[Any, Any]:
        stop = asyncio.Event()
        load = asyncio.create_task(generate(_frontend(f), 100, stop, max_seconds=90))
        run = await asyncio.to_thread(f.run)
        stop.set()
        return run, await load

    with Sampler(sock, "web") as sampler:
        run, load = asyncio.run(scenario())
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert load.sent >= 300  # the run lasted several seconds at 100 req/s
    assert load.failed == 0, load.failures
    # HAProxy's own view: every node was drained at some point, never fewer than 3 of 4 UP.
    for name in ("web-01", "web-02", "web-03", "web-04"):
        assert sampler.drained(name), name
    assert sampler.min_up() >= 3
    assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
    undrain = next(p for p in run.node("web-02")["phases"] if p["phase"] == "undrain")
    assert "healthy in the balancer while drained" in undrain["detail"]


def test_a_server_in_maint_by_hand_stays_maint_and_is_no_capacity(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(nodes=3, rollout={"strategy": "window", "window": 1, "min_healthy": 1})
    inventory, (sock,) = haproxy_inventory(tmp_path, spec)
    f = farm(inventory)
    assert runtime(sock, "set server web/web-02 state maint").strip() == ""
    run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert run.report is not None
    # The plan counted it as no capacity (its own health URL answers 200 all along).
    assert run.report["plan"]["unhealthy"] == ["web-02"]
    left = run.node("web-02")
    assert left["outcome"] == "skipped" and left["rotation"] == "out"
    assert "left out by the operator" in left["left_out_reason"]
    assert f.node_events("web-02", "service_control") == []  # not touched
    assert run.node("web-01")["outcome"] == run.node("web-03")["outcome"] == "done"
    statuses = {name: r["status"] for name, r in servers(sock, "web").items()}
    assert statuses == {"web-01": "UP", "web-02": "MAINT", "web-03": "UP"}


def test_a_reload_mid_run_gets_the_drain_applied_again(farm: Any, tmp_path: Path) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=2))
    f = farm(inventory)
    lb = f.describe["load_balancer"]
    # web-01's drain waits for this request: the run is held with web-01 out while HAProxy reloads.
    held, thread = hold_one(f, f"{f.describe['nodes'][0]['address']}:8080")
    since = time.time()
    proc = f.start_run()
    new: subprocess.Popen[bytes] | None = None
    with killed_on_exit(proc):
        wait_drain_saw(f, since, time.monotonic() + 60)
        # A reload as systemd does it: a new process takes the sockets over, the old one leaves.
        # No state dump was saved first, so the new process starts with every server ready.
        new = subprocess.Popen(["haproxy", "-db", "-f", lb["config"], "-sf", str(lb["pid"])])
        deadline = time.monotonic() + 15
        drained_again = False
        while time.monotonic() < deadline and not drained_again:
            try:
                info = runtime(sock, "show info").splitlines()
                state = runtime(sock, "show servers state web").splitlines()
            except OSError:
                continue  # mid-reload the socket may be briefly gone
            pid = next((line.split(":")[1].strip() for line in info if line.startswith("Pid:")), None)
            row = next((r.split() for r in state if " web-01 " in r), None)
            drained_again = pid == str(new.pid) and row is not None and int(row[6]) & 0x08 != 0
            time.sleep(0.05)
        held.release()
        out, err = proc.communicate(timeout=60)
        assert drained_again, err
        assert proc.returncode == ExitCode.SUCCEEDED, out + err
        assert "HAProxy reloaded during the run" in err
        assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
        if new is not None:
            new.terminate()
            new.wait(timeout=10)
        thread.join(30)


def test_ha_pair_both_drained_and_restored_one_unreachable_refuses(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(nodes=2)
    inventory, sockets = haproxy_inventory(tmp_path, spec, instances=2)
    f = farm(inventory)
    assert [lb["socket"] for lb in f.describe["load_balancers"]] == sockets

    # A third instance nobody runs: refused at preflight, nothing touched on any node or instance.
    broken = yaml.safe_load(inventory.read_text())
    dead = broken["load_balancers"][0] | {
        "haproxy": {"socket": sockets[0].rsplit(":", 1)[0] + ":9", "backend": "web"}
    }
    broken["load_balancers"].append(dead)
    other = tmp_path / "broken.yaml"
    other.write_text(yaml.safe_dump(broken, sort_keys=False))
    run = f.run(inventory=other)
    assert run.code == ExitCode.PREFLIGHT_REFUSED, run.stdout + run.stderr
    assert ":9" in run.stderr and "unreachable" in run.stderr
    assert [e for e in f.events() if e["kind"] == "service_control"] == []
    for sock in sockets:
        assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}

    with Sampler(sockets[0], "web") as first, Sampler(sockets[1], "web") as second:
        run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    for sampler in (first, second):
        assert sampler.drained("web-01") and sampler.drained("web-02")
    for sock in sockets:
        assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
    assert json.loads(json.dumps(run.report))["outcome"] == "succeeded"


def test_a_node_that_answers_5xx_after_rejoining_is_drained_again(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(nodes=2, faults={"web-01": [{"kind": "errors_after_start"}]})
    inventory, (sock,) = haproxy_inventory(tmp_path, spec, lb={"watch_seconds": 3})
    f = farm(inventory)

    async def scenario() -> tuple[Any, Any]:
        stop = asyncio.Event()
        load = asyncio.create_task(generate(_frontend(f), 50, stop, max_seconds=90))
        run = await asyncio.to_thread(f.run)
        stop.set()
        return run, await load

    run, load = asyncio.run(scenario())
    assert run.code == ExitCode.PARTIAL, run.stdout + run.stderr
    node = run.node("web-01")
    assert node["outcome"] == "failed" and node["rotation"] == "out"
    undrain = next(p for p in node["phases"] if p["phase"] == "undrain")
    assert (
        undrain["error"]["kind"] == "health"
        and "new 5xx answers after rejoining" in undrain["error"]["message"]
    )
    assert load.failures["HTTP 500"] > 0  # what the watch saw, seen by clients too, for a moment only
    assert servers(sock, "web")["web-01"]["status"] == "DRAIN"
    assert run.node("web-02")["outcome"] == "done"
    assert servers(sock, "web")["web-02"]["status"] == "UP"


def test_a_server_taken_out_by_hand_mid_run_counts_against_the_floor(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(
        nodes=3, rollout={"strategy": "window", "window": 1, "min_healthy": 2}, timeouts={"node": 8}
    )
    inventory, (sock,) = haproxy_inventory(tmp_path, spec)
    f = farm(inventory)
    # web-01's drain waits for this request: the run is held there while the operator acts.
    held, thread = hold_one(f, f"{f.describe['nodes'][0]['address']}:8080")
    since = time.time()
    proc = f.start_run()
    with killed_on_exit(proc):
        wait_drain_saw(f, since, time.monotonic() + 60)
        # web-03 answers its health URL but the balancer no longer sends it anything.
        assert runtime(sock, "set server web/web-03 state maint").strip() == ""
        wait_for_line(proc, "out of rotation in the load balancer", time.monotonic() + 30)
        held.release()
        out, err = proc.communicate(timeout=90)
    thread.join(30)
    assert proc.returncode == ExitCode.ABORTED_CAPACITY, out + err
    assert run_outcome(f, "web-01") == "done"
    assert f.node_events("web-02", "service_control") == []  # restarting it would leave one node
    # web-03 was no capacity, so the run may reach it: it leaves the operator's MAINT alone.
    web03 = run_outcome(f, "web-03")
    assert web03 in ("not_started", "failed"), web03
    assert f.node_events("web-03", "service_control") == []
    assert servers(sock, "web")["web-03"]["status"] == "MAINT"


def test_drain_state_maint_rejoins_through_drain(farm: Any, tmp_path: Path) -> None:
    spec = InventorySpec(nodes=2)
    inventory, (sock,) = haproxy_inventory(tmp_path, spec)
    data = yaml.safe_load(inventory.read_text())
    data["load_balancer"]["haproxy"]["drain_state"] = "maint"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    f = farm(inventory)
    with Sampler(sock, "web") as sampler:
        run = f.run()
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    # Out in MAINT while stopped; health checked afresh in DRAIN (checks run there) before ready.
    for name in ("web-01", "web-02"):
        assert sampler.seen(name, "MAINT"), name
        undrain = next(p for p in run.node(name)["phases"] if p["phase"] == "undrain")
        assert "healthy in the balancer while drained (DRAIN)" in undrain["detail"]
    assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
