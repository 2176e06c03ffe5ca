"""The command and http drivers end to end: a rolling restart through each against the farm's real
HAProxy (the command driver through the shipped example hook, the http driver through an API server
started by the test), and a failing and a hanging hook for each."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from simfarm.load import Sampler, runtime, servers

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec
from tests.e2e.test_lb_haproxy import haproxy_inventory

HOOK = Path(__file__).parents[2] / "examples" / "lb" / "haproxy-runtime.py"
API_KEY = "k3y-that-must-never-be-logged"


def _run_inventory(f: Any, tmp_path: Path, lb: dict[str, Any]) -> Path:
    """The farm's inventory with another balancer driver in front of the same nodes."""
    data = yaml.safe_load(f.inventory.read_text())
    data["load_balancer"] = lb
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _hook_failing_then_hanging(tmp_path: Path) -> list[str]:
    """A drain hook: web-01's fails at once; web-02's never returns (nor does the child it starts)."""
    script = tmp_path / "drain-hook.py"
    pids = tmp_path / "hook-pids"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess, sys, time
            if os.environ["ORCH_NODE"] == "web-01":
                print("pool member locked by another change", file=sys.stderr)
                sys.exit(1)
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}\\n")
            time.sleep(120)
            """
        )
    )
    return [sys.executable, str(script)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, the killed hook, is gone too).
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_command_driver_restarts_through_the_example_hook(
    farm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=2))
    f = farm(inventory)
    hook = [sys.executable, str(HOOK)]
    run_inv = _run_inventory(
        f,
        tmp_path,
        {
            "driver": "command",
            "command": {
                "drain": [*hook, "drain", "{lb_name}"],
                "ready": [*hook, "ready", "{lb_name}"],
                "recheck": [*hook, "recheck", "{lb_name}"],
                "status": [*hook, "status", "{lb_name}"],
                "timeout": 10,
            },
        },
    )
    monkeypatch.setenv("HAPROXY_SOCKET", sock)
    with Sampler(sock, "web") as sampler:
        run = f.run(inventory=run_inv)
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert sampler.drained("web-01") and sampler.drained("web-02")
    assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
    undrain = next(p for p in run.node("web-01")["phases"] if p["phase"] == "undrain")
    assert "healthy in the balancer while drained" in undrain["detail"]


def test_command_driver_failing_and_hanging_hooks(farm: Any, tmp_path: Path) -> None:
    f = farm(InventorySpec(nodes=2))
    # Braces doubled: argv elements are templates.
    status = [sys.executable, "-c", 'print(\'{{"rotation": "in", "healthy": true, "sessions": 0}}\')']
    run_inv = _run_inventory(
        f,
        tmp_path,
        {
            "driver": "command",
            "command": {
                "drain": _hook_failing_then_hanging(tmp_path),
                "ready": status,
                "status": status,
                "timeout": 0.5,
            },
        },
    )
    run = f.run(inventory=run_inv)
    assert run.code == ExitCode.ABORTED_BUDGET, run.stdout + run.stderr
    failing = next(p for p in run.node("web-01")["phases"] if p["phase"] == "drain")
    assert failing["error"]["kind"] == "lb" and "exit 1" in failing["error"]["message"]
    assert "pool member locked by another change" in failing["error"]["message"]
    hanging = next(p for p in run.node("web-02")["phases"] if p["phase"] == "drain")
    assert "no result within 0.5s; killed" in hanging["error"]["message"]
    # Retried (no answer is transient), and every attempt's whole process group was killed.
    attempts = [line.split() for line in (tmp_path / "hook-pids").read_text().splitlines()]
    assert len(attempts) >= 2
    assert not any(_alive(int(pid)) for pair in attempts for pid in pair)
    assert [e for e in f.events() if e["kind"] == "service_control"] == []


class BalancerAPI:
    """A small balancer API in front of the farm's HAProxy, as a Data Plane API would be: JSON in
    and out, an API key, and faults on demand."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.fail_drain: set[str] = set()
        self.hang_drain: set[str] = set()
        self.unauthorized = 0
        app = web.Application()
        app.router.add_get("/servers/{name}", self.get)
        app.router.add_put("/servers/{name}", self.put)
        self.runner = web.AppRunner(app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def _check(self, request: web.Request) -> None:
        if request.headers.get("X-Api-Key") != API_KEY:
            self.unauthorized += 1
            raise web.HTTPUnauthorized(text="bad key")
        if request.match_info["name"] not in servers(self.sock, "web"):
            raise web.HTTPNotFound(text="no such member")

    async def get(self, request: web.Request) -> web.Response:
        self._check(request)
        name = request.match_info["name"]
        row = servers(self.sock, "web")[name]
        state = next(
            r.split()
            for r in runtime(self.sock, "show servers state web").splitlines()[2:]
            if r.split()[3] == name
        )
        admin = int(state[6])
        up = row["status"] in ("UP", "DRAIN") and state[5] == "2"
        return web.json_response(
            {
                "admin_state": "maint" if admin & 0x67 else "drain" if admin & 0x18 else "ready",
                "operational_state": "up" if up else "down",
                "stats": {"scur": int(row["scur"]) + int(row["qcur"])},
            }
        )

    async def put(self, request: web.Request) -> web.Response:
        self._check(request)
        name = request.match_info["name"]
        body = await request.json()
        if body.get("admin_state") == "drain":
            if name in self.fail_drain:
                return web.json_response({"message": "member locked"}, status=500)
            if name in self.hang_drain:
                # Far past the client's timeout; then it gives up without draining anything.
                await asyncio.sleep(5)
                return web.json_response({"message": "gateway timeout"}, status=504)
        if "admin_state" in body:
            answer = runtime(self.sock, f"set server web/{name} state {body['admin_state']}")
        else:
            answer = runtime(self.sock, f"set server web/{name} health {body['operational_state']}")
        if answer.strip():
            return web.json_response({"message": answer.strip()}, status=400)
        return web.json_response({"name": name, **body})


def _http_lb(url: str, timeout: float) -> dict[str, Any]:
    member = url + "/servers/{lb_name}"
    return {
        "driver": "http",
        "http": {
            "drain": {"method": "PUT", "url": member, "body": {"admin_state": "drain"}},
            "ready": {"method": "PUT", "url": member, "body": {"admin_state": "ready"}},
            "recheck": {"method": "PUT", "url": member, "body": {"operational_state": "down"}},
            "state": {
                "url": member,
                "rotation": {"path": "admin_state", "map": {"ready": "in", "drain": "out", "maint": "out"}},
                "healthy": {"path": "operational_state", "map": {"up": True, "down": False}},
                "sessions": {"path": "stats.scur"},
            },
            "auth_header": "X-Api-Key",
            "auth_env": "LB_API_KEY",
            "timeout": timeout,
        },
    }


def test_http_driver_restarts_through_a_balancer_api_and_never_logs_the_key(
    farm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=2))
    f = farm(inventory)
    monkeypatch.setenv("LB_API_KEY", API_KEY)

    async def scenario() -> tuple[Any, BalancerAPI]:
        api = BalancerAPI(sock)
        await api.start()
        try:
            with Sampler(sock, "web") as sampler:
                run = await asyncio.to_thread(
                    f.run,
                    "--events",
                    str(tmp_path / "ev.jsonl"),
                    inventory=_run_inventory(f, tmp_path, _http_lb(api.url, 5)),
                )
            assert sampler.drained("web-01") and sampler.drained("web-02")
            return run, api
        finally:
            await api.runner.cleanup()

    run, api = asyncio.run(scenario())
    assert run.code == ExitCode.SUCCEEDED, run.stdout + run.stderr
    assert api.unauthorized == 0
    assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
    written = run.stdout + run.stderr + (tmp_path / "ev.jsonl").read_text() + str(run.report)
    assert API_KEY not in written


def test_http_driver_failing_and_hanging_hooks(
    farm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, (sock,) = haproxy_inventory(tmp_path, InventorySpec(nodes=2))
    f = farm(inventory)
    monkeypatch.setenv("LB_API_KEY", API_KEY)

    async def scenario() -> Any:
        api = BalancerAPI(sock)
        api.fail_drain.add("web-01")
        api.hang_drain.add("web-02")
        await api.start()
        try:
            return await asyncio.to_thread(
                f.run, inventory=_run_inventory(f, tmp_path, _http_lb(api.url, 0.5))
            )
        finally:
            await api.runner.cleanup()

    run = asyncio.run(scenario())
    assert run.code == ExitCode.ABORTED_BUDGET, run.stdout + run.stderr
    failing = next(p for p in run.node("web-01")["phases"] if p["phase"] == "drain")
    assert "HTTP 500" in failing["error"]["message"] and "member locked" in failing["error"]["message"]
    hanging = next(p for p in run.node("web-02")["phases"] if p["phase"] == "drain")
    assert "no answer within 0.5s" in hanging["error"]["message"]
    assert [e for e in f.events() if e["kind"] == "service_control"] == []
    # Neither drain went through: both servers still take traffic.
    assert {r["status"] for r in servers(sock, "web").values()} == {"UP"}
