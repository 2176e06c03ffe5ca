"""The `command` driver: the operator's own programs drive the balancer (F5, NetScaler, ARR, a cloud
API...), one argv per operation, never through a shell.

Each program gets the node's fields both substituted in its argv ({lb_name}, {name}, {host}) and in
its environment (ORCH_LB_NAME, ORCH_NODE, ORCH_HOST, ORCH_OPERATION), runs in its own process group,
and is killed with that whole group when it outlives the timeout. Exit codes:

- 0: done (status prints its JSON on stdout);
- 3: the balancer does not know this server;
- 75 (EX_TEMPFAIL): try again later (retried with backoff, like no answer at all);
- anything else: failed (stderr's last line is in the error).

`status` prints {"rotation": "in|out|unknown", "healthy": true|false|null, "sessions": N|null}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence

from orchestrator.lb.base import AdminState, LBError, Membership, Preflight

EXIT_UNKNOWN_SERVER = 3
EXIT_TRY_AGAIN = 75


class CommandBalancer:
    def __init__(
        self,
        argv: Mapping[str, Sequence[str]],
        nodes: Mapping[str, Mapping[str, str]],
        *,
        timeout: float,
    ) -> None:
        self.argv = {op: list(a) for op, a in argv.items()}
        self.nodes = nodes
        self.timeout = timeout
        self.name = f"command {os.path.basename(self.argv['drain'][0])}"

    async def _run(self, operation: str, server: str) -> str:
        fields = dict(self.nodes.get(server, {"lb_name": server, "name": server, "host": ""}))
        argv = [arg.format(**fields) for arg in self.argv[operation]]
        env = {
            **os.environ,
            "ORCH_LB_NAME": fields["lb_name"],
            "ORCH_NODE": fields["name"],
            "ORCH_HOST": fields["host"],
            "ORCH_OPERATION": operation,
        }
        what = f"{operation} {server} ({argv[0]})"
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
        except OSError as exc:
            raise LBError("refused", f"{what}: cannot run: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise LBError("unreachable", f"{what}: no result within {self.timeout:g}s; killed") from None
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1]
        code = proc.returncode
        if code == 0:
            return out.decode(errors="replace")
        if code == EXIT_UNKNOWN_SERVER:
            raise LBError("unknown_server", f"{what}: the balancer has no server {server!r}. {last}".strip())
        if code == EXIT_TRY_AGAIN:
            raise LBError("unreachable", f"{what}: try again later (exit 75). {last}".strip())
        raise LBError("refused", f"{what}: exit {code}. {last}".strip())

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        return Preflight(before={s: await self.state(s) for s in servers})

    async def state(self, server: str) -> Membership:
        text = await self._run("status", server)
        try:
            data = json.loads(text)
            rotation = data["rotation"]
            healthy = data.get("healthy")
            sessions = data.get("sessions")
            if rotation not in ("in", "out", "unknown"):
                raise ValueError(f"rotation {rotation!r}")
            if healthy is not None and not isinstance(healthy, bool):
                raise ValueError(f"healthy {healthy!r}")
            if sessions is not None and (not isinstance(sessions, int) or isinstance(sessions, bool)):
                raise ValueError(f"sessions {sessions!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise LBError(
                "refused",
                f"status {server}: expected {{'rotation': 'in|out|unknown', 'healthy': true|false|null, "
                f"'sessions': N|null}}, got {text.strip()[:200]!r} ({exc})",
            ) from None
        admin: AdminState | None = {"in": "ready", "out": "drain"}.get(rotation)  # type: ignore[assignment]
        return Membership(rotation=rotation, healthy=healthy, sessions=sessions, admin=admin, status=rotation)

    async def drain(self, server: str) -> None:
        await self._run("drain", server)

    async def recheck(self, server: str) -> None:
        if "recheck" in self.argv:
            await self._run("recheck", server)

    async def ready(self, server: str) -> None:
        await self._run("ready", server)

    async def close(self) -> None:
        return None
