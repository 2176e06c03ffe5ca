"""Webhooks on start, finish and abort, sent by `orchestrator run` to real HTTP servers started here:
one that answers, one for chat text, one that fails, one that hangs, one not subscribed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec

TOKEN = "tok-9f2c1e0d77"
SECRET_PATH = "good-s3cr3t-7d1a"


async def test_webhooks_are_told_start_and_abort_and_a_failing_one_never_fails_the_run(
    farm: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    received: dict[str, list[tuple[dict[str, str], Any]]] = {
        name: [] for name in ("good", "text", "failing", "hanging", "finish-only")
    }
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        name = "good" if name == SECRET_PATH else name
        received[name].append((dict(request.headers), await request.json()))
        if name == "failing":
            return web.Response(status=500)
        if name == "hanging":
            await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{name}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/hooks"
    try:
        f = farm(
            InventorySpec(
                nodes=2,
                faults={"web-01": [{"kind": "hang_stop", "service": "W3SVC"}]},
                timeouts={"stop": 1.5},
                rollout={"strategy": "window", "window": 1, "failure_budget": {"max_failures": 0}},
            )
        )
        data = yaml.safe_load(f.inventory.read_text())
        data["notify"] = {
            "webhooks": [
                {"url_env": "ORCH_TEST_HOOK_URL", "token_env": "ORCH_TEST_HOOK_TOKEN"},
                {"url": f"{base}/text", "format": "text", "on": ["abort"]},
                {"url": f"{base}/failing", "retries": 2, "timeout": 2},
                {"url": f"{base}/hanging", "retries": 1, "timeout": 0.5},
                {"url": f"{base}/finish-only", "on": ["finish"]},
            ]
        }
        f.inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("ORCH_TEST_HOOK_URL", f"{base}/{SECRET_PATH}")
        monkeypatch.setenv("ORCH_TEST_HOOK_TOKEN", TOKEN)
        run = await asyncio.to_thread(f.run, "--log-level", "info")
    finally:
        release.set()
        await runner.cleanup()

    # The run's outcome is its own: two webhooks failing changed nothing.
    assert run.code == ExitCode.ABORTED_BUDGET, run.stdout + run.stderr
    assert run.report is not None
    good = [body for _, body in received["good"]]
    assert [body["event"] for body in good] == ["start", "abort"]
    assert all(headers["Authorization"] == f"Bearer {TOKEN}" for headers, _ in received["good"])
    start, abort = good
    assert start["run_id"] == abort["run_id"] == run.report["run_id"] and start["nodes"] == 2
    assert abort["outcome"] == "aborted_budget" and abort["exit_code"] == ExitCode.ABORTED_BUDGET
    assert abort["totals"]["failed"] == 1 and abort["totals"]["not_started"] == 1
    assert abort["out_of_rotation"] == ["web-01"]
    assert "\n" not in abort["text"] and "aborted_budget" in abort["text"] and "web-01" in abort["text"]
    # Chat text: the one-line summary alone, only on abort as subscribed.
    assert [body for _, body in received["text"]] == [{"text": abort["text"]}]
    # Bounded retries: 1 + retries attempts for each of start and abort, then given up.
    assert len(received["failing"]) == 2 * 3
    assert len(received["hanging"]) == 2 * 2
    assert received["finish-only"] == []
    failures = [json.loads(line) for line in run.stderr.splitlines() if "notification failed" in line]
    assert sorted((e["webhook"], e["moment"]) for e in failures) == [
        (2, "abort"),
        (2, "start"),
        (3, "abort"),
        (3, "start"),
    ]
    # The URL with its secret path and the token are written nowhere.
    journal = (f.inventory.parent / "journal.sqlite").read_bytes()
    for secret in (TOKEN, SECRET_PATH):
        assert secret not in run.stdout and secret not in run.stderr
        assert secret not in json.dumps(run.report) and secret.encode() not in journal
