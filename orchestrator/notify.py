"""Notifications: webhooks told when a run starts, finishes or aborts.

A notification is a courtesy, never a gate: a webhook that fails, refuses or hangs is retried a
bounded number of times, each attempt bounded in time, then given up with a warning; the run's
outcome and exit code do not change. Webhook URLs and tokens are secrets (a chat webhook's URL is
its credential): they are registered with the log redactor and never written anywhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog

from orchestrator.inventory import Webhook
from orchestrator.log import redact, register_secret
from orchestrator.report.events import RunStarted
from orchestrator.results import RunResult

log = structlog.get_logger("orchestrator.notify")

Moment = Literal["start", "finish", "abort"]
_BACKOFF_SECONDS = 0.5  # doubled after each failed attempt


def moment_of(result: RunResult) -> Moment:
    """A run that went through (every node done, or failures within budget) finished; any other
    outcome is an abort."""
    return "finish" if result.outcome in ("succeeded", "partial") else "abort"


def start_payload(event: RunStarted) -> dict[str, Any]:
    text = f"orchestrator run {event.run_id} started on {event.inventory_path}: {len(event.nodes)} nodes"
    return {
        "event": "start",
        "run_id": event.run_id,
        "inventory": event.inventory_path,
        "at": event.at.isoformat(),
        "outcome": None,
        "exit_code": None,
        "nodes": len(event.nodes),
        "totals": None,
        "out_of_rotation": [],
        "text": text,
    }


def end_payload(result: RunResult) -> dict[str, Any]:
    totals = result.totals
    out = [node.name for node in result.nodes if node.rotation == "out"]
    text = (
        f"orchestrator run {result.run_id} on {result.inventory_path}: {result.outcome} "
        f"(exit {int(result.exit_code)}): {totals.done} done, {totals.failed} failed, "
        f"{totals.interrupted} interrupted, {totals.not_started} not started of {totals.nodes}"
        + (f"; out of rotation: {', '.join(out)}" if out else "")
    )
    return {
        "event": moment_of(result),
        "run_id": result.run_id,
        "inventory": result.inventory_path,
        "at": (result.ended_at or result.started_at).isoformat(),
        "outcome": result.outcome,
        "exit_code": int(result.exit_code),
        "nodes": totals.nodes,
        "totals": totals.model_dump(),
        "out_of_rotation": out,
        "text": text,
    }


@dataclass(frozen=True)
class _Target:
    index: int  # how the log names it: notify.webhooks[index], never by its URL
    url: str
    token: str | None
    spec: Webhook


class Notifier:
    """Sends the inventory's webhooks. `started` is the run's start callback (it must not block the
    run): it schedules the sending on the running loop; `settle` waits for it; `finished` sends the
    end of the run."""

    def __init__(self, webhooks: Sequence[Webhook], environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._targets: list[_Target] = []
        self._pending: list[asyncio.Task[None]] = []
        for index, hook in enumerate(webhooks):
            url = hook.url if hook.url is not None else env.get(hook.url_env or "", "")
            token = env.get(hook.token_env, "") if hook.token_env else None
            for secret in (url, token):
                if secret:
                    register_secret(secret)
            if not url:
                log.warning(
                    "webhook skipped: its URL variable is not set", webhook=index, variable=hook.url_env
                )
                continue
            if hook.token_env and not token:
                log.warning(
                    "webhook skipped: its token variable is not set", webhook=index, variable=hook.token_env
                )
                continue
            self._targets.append(_Target(index, url, token, hook))

    def started(self, event: RunStarted) -> None:
        if self._wants("start"):
            self._pending.append(
                asyncio.get_running_loop().create_task(self._send("start", start_payload(event)))
            )

    async def settle(self) -> None:
        """Until every notification already scheduled is sent or given up (each is bounded)."""
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending, return_exceptions=True)

    async def finished(self, result: RunResult) -> None:
        await self.settle()
        payload = end_payload(result)
        await self._send(payload["event"], payload)

    def _wants(self, moment: Moment) -> bool:
        return any(moment in t.spec.on for t in self._targets)

    async def _send(self, moment: Moment, payload: dict[str, Any]) -> None:
        targets = [t for t in self._targets if moment in t.spec.on]
        if not targets:
            return
        # No proxies from the environment, no cookies kept: each notification stands alone.
        async with aiohttp.ClientSession(trust_env=False) as http:
            await asyncio.gather(*(self._deliver(http, t, moment, payload) for t in targets))

    async def _deliver(
        self, http: aiohttp.ClientSession, target: _Target, moment: Moment, payload: dict[str, Any]
    ) -> None:
        body = {"text": payload["text"]} if target.spec.format == "text" else payload
        body = redact(body, by_key=False)
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        attempts = target.spec.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                async with http.post(
                    target.url,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=target.spec.timeout),
                    allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        log.info("notification sent", webhook=target.index, moment=moment, attempt=attempt)
                        return
                    problem = f"HTTP {response.status}"
            except TimeoutError:
                problem = f"no answer within {target.spec.timeout:g}s"
            except aiohttp.ClientError as exc:
                # The exception's text may quote the URL: only its kind is reported.
                problem = type(exc).__name__
            if attempt < attempts:
                await asyncio.sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))
        log.warning(
            "notification failed; the run goes on",
            webhook=target.index,
            moment=moment,
            attempts=attempts,
            problem=problem,
        )
