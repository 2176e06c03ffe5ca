"""The `haproxy` driver: one HAProxy instance, driven over its runtime API.

- Drain is `set server B/S state drain` (new requests avoid the server at once, in-flight ones
  finish); MAINT is never used unless the inventory names it: HAProxy stops health-checking a server
  in MAINT, and `ready` from MAINT sends traffic before the server has proven anything.
- `recheck` is `set server B/S health down` while the server is still drained: the status reads
  DRAIN again only after `rise` fresh passing checks, so `healthy` is evidence from after the restart.
- State is read by column name: `show stat` for status, sessions, check result and 5xx count;
  `show servers state` for the admin bits (a drained server whose backend is dead shows only DOWN
  in `show stat`) and the operational state.
- A reload forgets runtime drains unless the configuration keeps a server-state-file: while any
  server is drained by this run, `show info` (Pid, Start_time_sec) is watched and, after a reload,
  the drain of every such server is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import structlog

from orchestrator.lb.base import AdminState, LBError, Membership, Preflight, combine
from orchestrator.lb.runtime import RuntimeAPI, info_fields, servers_state_rows, stat_rows

log = structlog.get_logger("orchestrator.lb")

# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced, inherited, config and resolver maintenance,
# forced and inherited drain.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_DRAIN_BITS = 0x08 | 0x10
_RUNNING = "2"  # srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping
_PASSING = ("L4OK", "L6OK", "L7OK", "L7OKC")


def admin_state(bits: int) -> AdminState:
    if bits & _MAINT_BITS:
        return "maint"
    if bits & _DRAIN_BITS:
        return "drain"
    return "ready"


def membership(stat: dict[str, str], servers_state: dict[str, str]) -> Membership:
    """One server in one backend, from its `show stat` row and its `show servers state` row."""
    admin = admin_state(int(servers_state.get("srv_admin_state", "0") or 0))
    status = stat.get("status", "")
    check = stat.get("check_status", "").lstrip("* ")
    healthy: bool | None
    if status == "no check":
        healthy = None
    else:
        # Exactly UP or DRAIN: "UP 1/2" is a server on its way down, "DRAIN 1/2" one not yet risen.
        healthy = (
            servers_state.get("srv_op_state") == _RUNNING and status in ("UP", "DRAIN") and check in _PASSING
        )
    return Membership(
        rotation="in" if admin == "ready" else "out",
        healthy=healthy,
        sessions=_int(stat.get("scur")) + _int(stat.get("qcur")),
        admin=admin,
        status=status,
        errors_5xx=_int(stat.get("hrsp_5xx")),
    )


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


class HAProxy:
    def __init__(
        self,
        socket: str,
        backends: Sequence[str],
        *,
        timeout: float = 5.0,
        config: str | None = None,
        drain_state: str = "drain",
        guard_interval: float = 0.5,
    ) -> None:
        self.api = RuntimeAPI(socket, timeout)
        self.name = f"haproxy {socket}"
        self.socket = socket
        self.backends = list(backends)
        self.config = config
        self.drain_state = drain_state
        self.guard_interval = guard_interval
        self._where: dict[str, list[str]] = {}  # server -> the backends it sits in
        self._drained: set[str] = set()  # servers this run drained and has not put back
        self._generation: tuple[str, str] | None = None
        self._guard: asyncio.Task[None] | None = None
        self.reloads_seen = 0

    # --- preflight ------------------------------------------------------------------------------

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        level = (await self.api.command("show cli level")).strip()
        if level != "admin":
            raise LBError(
                "permission",
                f"the runtime API runs at level {level or '?'}; draining needs `level admin`",
                instance=self.socket,
            )
        found: dict[str, list[str]] = {}
        for backend in self.backends:
            rows = servers_state_rows(await self.api.command(f"show servers state {backend}"))
            for row in rows:
                found.setdefault(row.get("srv_name", ""), []).append(backend)
        missing = [s for s in servers if s not in found]
        if missing:
            raise LBError(
                "unknown_server",
                f"no server {missing[0]!r} in backend {', '.join(self.backends)}",
                instance=self.socket,
            )
        self._where = {s: found[s] for s in servers}
        self._generation = await self._read_generation()
        warnings = []
        if self.config is not None and not _keeps_state(Path(self.config)):
            warnings.append(
                f"{self.socket}: {self.config} has no server-state-file: a reload of HAProxy forgets "
                "drains (the run re-applies them when it sees one)"
            )
        return Preflight(before={s: await self.state(s) for s in servers}, warnings=warnings)

    # --- state ----------------------------------------------------------------------------------

    async def state(self, server: str) -> Membership:
        # Every server row at once (proxy names may be shared by a frontend), picked by name.
        stat = stat_rows(await self.api.command("show stat -1 4 -1"))
        parts = []
        for backend in self._backends_of(server):
            state = servers_state_rows(await self.api.command(f"show servers state {backend}"))
            row = next((r for r in stat if r.get("pxname") == backend and r.get("svname") == server), None)
            srow = next((r for r in state if r.get("srv_name") == server), None)
            if row is None or srow is None:
                raise LBError("unknown_server", f"no server {backend}/{server}", instance=self.socket)
            parts.append(membership(row, srow))
        return combine(parts)

    def _backends_of(self, server: str) -> list[str]:
        return self._where.get(server) or self.backends

    # --- commands -------------------------------------------------------------------------------

    async def drain(self, server: str) -> None:
        self._drained.add(server)
        await self._set_all(server, f"state {self.drain_state}")
        self._start_guard()

    async def recheck(self, server: str) -> None:
        if self.drain_state == "maint":
            # MAINT stops the health checks: go through DRAIN so they run (still no new traffic).
            await self._set_all(server, "state drain")
        await self._set_all(server, "health down")

    async def ready(self, server: str) -> None:
        await self._set_all(server, "state ready")
        self._drained.discard(server)

    async def _set_all(self, server: str, what: str) -> None:
        for backend in self._backends_of(server):
            await self.api.set(f"set server {backend}/{server} {what}")

    async def close(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._guard

    # --- reload guard ---------------------------------------------------------------------------

    async def _read_generation(self) -> tuple[str, str]:
        info = info_fields(await self.api.command("show info"))
        return info.get("Pid", ""), info.get("Start_time_sec", info.get("Uptime_sec", ""))

    def _start_guard(self) -> None:
        if self._guard is None or self._guard.done():
            self._guard = asyncio.create_task(self._watch_reloads(), name=f"reload-guard {self.socket}")

    async def _watch_reloads(self) -> None:
        while self._drained:
            await asyncio.sleep(self.guard_interval)
            try:
                generation = await self._read_generation()
            except LBError:
                continue  # mid-reload the socket may be briefly gone: look again
            if self._generation is not None and generation != self._generation:
                self.reloads_seen += 1
                log.warning(
                    "HAProxy reloaded during the run: draining again",
                    instance=self.socket,
                    servers=sorted(self._drained),
                )
                try:
                    for server in sorted(self._drained):
                        await self._set_all(server, f"state {self.drain_state}")
                except LBError as exc:
                    log.error(
                        "could not re-apply a drain after a reload", instance=self.socket, error=str(exc)
                    )
                    continue  # keep the old generation: try again on the next round
            self._generation = generation


def _keeps_state(config: Path) -> bool:
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.split("#", 1)[0].split()[:1] == ["server-state-file"] for line in text.splitlines())
