"""The run journal: a database that outlives the process and says what every node went through.

`status`, `resume` and `report` read it after the fact, possibly after a crash or a second Ctrl-C, so
every write is committed (and synced) before the call returns, and a run's full result can be rebuilt
from it alone. It lives in a SQLite file or in PostgreSQL (`store.py`); the queries are the same.

One farm has at most one active run: a lease per host of the farm names the run, controller and
process holding it and when it last beat; a lease whose beat stopped is taken over (see `acquire_lock`).

Nothing secret is stored: every text and mapping written goes through `log.redact` first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, get_args

import structlog

from orchestrator import __version__
from orchestrator.log import redact
from orchestrator.results import (
    ErrorInfo,
    ExitCode,
    NodeOutcome,
    NodeResult,
    Phase,
    PhaseOutcome,
    PhaseResult,
    PhaseStatus,
    Recovery,
    Rotation,
    RunOutcome,
    RunResult,
    exit_code_for,
    utc_now,
)
from orchestrator.store import PgJournal, Row, Store, StoreError, Tx, Unavailable, open_store

# Each entry upgrades the schema by one version (PRAGMA user_version in SQLite, the schema_version
# table in PostgreSQL); never edit a shipped entry. `{serial}` is each engine's auto-increment key.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            seq {serial},
            run_id TEXT NOT NULL UNIQUE,
            inventory_path TEXT NOT NULL,
            inventory_digest TEXT NOT NULL,
            tool_version TEXT NOT NULL,
            plan_json TEXT NOT NULL,
            budget_json TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT,
            exit_code INTEGER
        )""",
        "CREATE INDEX runs_by_inventory ON runs (inventory_path, seq)",
        """CREATE TABLE node_events (
            id {serial},
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            node TEXT NOT NULL,
            phase TEXT NOT NULL,
            status TEXT NOT NULL,
            at TEXT NOT NULL,
            detail TEXT NOT NULL,
            error_json TEXT
        )""",
        "CREATE INDEX node_events_by_node ON node_events (run_id, node, id)",
        """CREATE TABLE node_state (
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            node TEXT NOT NULL,
            position INTEGER NOT NULL,
            host TEXT NOT NULL,
            node_group TEXT,
            last_phase TEXT,
            last_status TEXT,
            rotation TEXT NOT NULL,
            services_before_json TEXT,
            services_after_json TEXT,
            outcome TEXT,
            reason TEXT,
            PRIMARY KEY (run_id, node)
        )""",
        """CREATE TABLE locks (
            inventory_path TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            since TEXT NOT NULL
        )""",
        """CREATE TABLE lock_takeovers (
            id {serial},
            inventory_path TEXT NOT NULL,
            at TEXT NOT NULL,
            run_id TEXT NOT NULL,
            stale_run_id TEXT NOT NULL,
            stale_pid INTEGER NOT NULL,
            stale_host TEXT NOT NULL,
            stale_since TEXT NOT NULL
        )""",
    ),
    (
        # What ran before a node was first touched, beyond its services: app pools and the balancer's
        # view; written ahead of the first change (see `record_before`).
        "ALTER TABLE node_state ADD COLUMN pools_before_json TEXT",
        "ALTER TABLE node_state ADD COLUMN rotation_before TEXT",
        # An incomplete run this one found and repaired first, and the dead process's lock it took.
        "ALTER TABLE runs ADD COLUMN recovery_json TEXT",
    ),
    (
        # Leases replace the per-inventory lock rows (`locks` stays, unused, for older journals): one
        # row per host of the farm, so two inventories sharing a host exclude each other, renewed by
        # the run's heartbeat and taken over when the beat is older than the holder's lease.
        """CREATE TABLE leases (
            farm_host TEXT PRIMARY KEY,
            inventory_path TEXT NOT NULL,
            run_id TEXT NOT NULL,
            controller TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            since TEXT NOT NULL,
            last_beat TEXT NOT NULL,
            lease_seconds REAL NOT NULL
        )""",
        "CREATE INDEX leases_by_run ON leases (run_id)",
        "CREATE INDEX leases_by_inventory ON leases (inventory_path)",
        "ALTER TABLE lock_takeovers ADD COLUMN controller TEXT",
        "ALTER TABLE lock_takeovers ADD COLUMN stale_controller TEXT",
        "ALTER TABLE lock_takeovers ADD COLUMN stale_last_beat TEXT",
        "ALTER TABLE lock_takeovers ADD COLUMN why TEXT",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_UNTERMINATED_DETAIL = "no end recorded: the run stopped while this phase was in flight"


class JournalError(Exception):
    """The journal cannot do what was asked (unknown run or node, newer schema, bad arguments)."""


class JournalUnavailable(JournalError):
    """The journal's database could not be reached for longer than the journal waits."""


class LockHeld(JournalError):
    """Another run holds a lease on the farm, and its heartbeat is recent enough to be alive."""

    def __init__(
        self,
        pid: int,
        host: str,
        run_id: str,
        since: datetime,
        controller: str | None = None,
        last_beat: datetime | None = None,
    ) -> None:
        who = f"controller {controller}, " if controller and controller != host else ""
        beat = f", last beat {last_beat.isoformat()}" if last_beat is not None else ""
        super().__init__(
            f"run {run_id} ({who}pid {pid} on {host}, since {since.isoformat()}{beat}) "
            "holds the lease on this farm's hosts"
        )
        self.pid = pid
        self.host = host
        self.run_id = run_id
        self.since = since
        self.controller = controller or host
        self.last_beat = last_beat


@dataclass(frozen=True)
class LockTakeover:
    """A stale lease (its beat stopped, or its process is gone) that `acquire_lock` replaced; worth
    telling the operator."""

    inventory_path: str
    run_id: str  # the run that took it over
    stale_run_id: str
    stale_pid: int
    stale_host: str
    stale_since: datetime
    at: datetime
    controller: str | None = None  # the controller that took it over
    stale_controller: str | None = None
    stale_last_beat: datetime | None = None
    why: str = "its process is gone"


@dataclass(frozen=True)
class Before:
    """What ran on a node before the run's first change to it: the truth a recovery restores."""

    services: dict[str, str]
    pools: dict[str, str]
    rotation: Rotation


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    inventory_path: str
    inventory_digest: str
    tool_version: str
    pid: int
    host: str
    started_at: datetime
    ended_at: datetime | None
    outcome: RunOutcome  # "incomplete" until finish_run
    exit_code: ExitCode
    nodes: int


@dataclass(frozen=True)
class NodeState:
    """A node's latest journalled state. `outcome` None: in flight, or never started if no phase."""

    name: str
    host: str
    group: str | None
    last_phase: Phase | None
    last_status: PhaseStatus | None
    rotation: Rotation
    outcome: NodeOutcome | None
    reason: str | None
    services: dict[str, str]  # the latest snapshot
    before: Before | None = None  # None: never recorded (the node was never about to be touched)
    last_error_kind: str | None = None  # the error kind of the latest phase event, if it failed


def inventory_key(inventory_path: str | os.PathLike[str]) -> str:
    """Runs and locks are keyed by the absolute path, however the operator spelled it."""
    return str(Path(inventory_path).resolve())


def controller_name(environ: Mapping[str, str] | None = None) -> str:
    """Who this controller is, for leases and messages: ORCHESTRATOR_CONTROLLER, or the host name."""
    env = os.environ if environ is None else environ
    return env.get("ORCHESTRATOR_CONTROLLER") or socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        # os.kill(pid, 0) terminates the process on Windows; without a safe probe, assume alive so a
        # lock is never stolen from a running orchestrator.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _check(value: object, allowed: Any, what: str) -> None:
    # A bad value written now would make `run_result` fail later, after a crash, when it matters.
    if value not in get_args(allowed):
        raise JournalError(f"invalid {what} {value!r}; expected one of {', '.join(get_args(allowed))}")


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        raise JournalError(f"time {value.isoformat()} has no timezone; the journal stores UTC")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _dump_services(services: Mapping[str, str]) -> str:
    # Keys are service names from the farm (TokenBroker is not a token): scrub values only.
    return json.dumps(redact(dict(services), by_key=False), sort_keys=True)


def _dump(value: Any) -> str:
    # Plans and budgets are free-form: the value under a secret-looking key is replaced, whatever it is.
    return json.dumps(redact(value), sort_keys=True)


P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger("orchestrator.journal")


def _retried(method: Callable[P, R]) -> Callable[P, R]:
    """Run a journal call again, whole, on a new connection while the database is unreachable.

    A transaction that broke was rolled back by the server, so running the call again is the only
    way to know it committed once. Gives up after the journal's `outage_seconds` with
    `JournalUnavailable`; after that, each call tries once until one succeeds again, so a run that
    lost its database does not wait that long for every record it can no longer write.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        journal = cast("Journal", args[0])
        deadline = time.monotonic() + (0.0 if journal._down else journal.outage_seconds)
        pause = 0.2
        retried = False
        while True:
            try:
                result = method(*args, **kwargs)
            except StoreError as exc:
                # The server now refuses this controller for good (its password or role changed).
                raise JournalError(f"the journal {journal.where} refused the connection: {exc}") from None
            except Unavailable as exc:
                if time.monotonic() + pause > deadline:
                    journal._down = True
                    raise JournalUnavailable(
                        f"the journal {journal.where} is unreachable ({exc}); gave up after "
                        f"{journal.outage_seconds:g} s"
                    ) from None
                log.warning("journal unreachable: retrying", journal=journal.where, error=str(exc))
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                retried = True
                with contextlib.suppress(Unavailable):  # the next attempt says so again
                    journal._store.reconnect()
                continue
            if journal._down or retried:
                journal._down = False
                log.warning("journal reachable again", journal=journal.where)
            return result

    return wrapper


class Journal:
    """One journal: a SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL or a
    `PgJournal`). Thread-safe; each method is a short, committed transaction.

    `outage_seconds`: how long a call retries while a PostgreSQL journal cannot be reached.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | PgJournal,
        *,
        outage_seconds: float = 20.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.outage_seconds = outage_seconds
        self._down = False
        try:
            self._store: Store = open_store(target, environ)
        except StoreError as exc:
            raise JournalError(f"the journal {target}: {exc}") from None
        self.where = self._store.where
        self.kind = self._store.kind
        self.path = Path(self.where) if self.kind == "sqlite" else None
        try:
            self._migrate()
        except BaseException:
            self._store.close()
            raise
        self._host = socket.gethostname()
        self.controller = controller_name(environ)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write(self) -> AbstractContextManager[Tx]:
        return self._store.write()

    def _read(self) -> AbstractContextManager[Tx]:
        return self._store.read()

    @_retried
    def _migrate(self) -> None:
        with self._write() as conn:
            # Two controllers starting at once against a new database: one migrates, the other waits.
            self._store.serialise(conn)
            version = self._store.schema_version(conn)
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.where}: journal schema {version} is newer than this orchestrator "
                    f"supports ({SCHEMA_VERSION}); upgrade the orchestrator"
                )
            if version == SCHEMA_VERSION:
                return
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(self._store.ddl(statement))
            self._store.set_schema_version(conn, SCHEMA_VERSION)

    # -- writing a run ---------------------------------------------------------------------------

    @_retried
    def begin_run(
        self,
        run_id: str,
        inventory_path: str | os.PathLike[str],
        inventory_digest: str,
        plan: Mapping[str, Any],
        nodes: Sequence[tuple[str, str, str | None]],
        *,
        budget: Mapping[str, Any] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Record a run and its nodes (name, host, group) in plan order, all untouched so far."""
        at = started_at or utc_now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None:
                raise JournalError(f"run {run_id!r} is already in the journal")
            names = [name for name, _, _ in nodes]
            if len(set(names)) != len(names):
                raise JournalError(f"run {run_id!r} lists a node twice")
            conn.execute(
                """INSERT INTO runs (run_id, inventory_path, inventory_digest, tool_version, plan_json,
                       budget_json, pid, host, started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id,
                    inventory_key(inventory_path),
                    inventory_digest,
                    __version__,
                    _dump(plan),
                    _dump(budget or {}),
                    os.getpid(),
                    self._host,
                    _time(at),
                ),
            )
            conn.executemany(
                """INSERT INTO node_state (run_id, node, position, host, node_group, rotation)
                   VALUES (?, ?, ?, ?, ?, 'unknown')""",
                [(run_id, name, position, host, group) for position, (name, host, group) in enumerate(nodes)],
            )

    @_retried
    def record_phase(
        self,
        run_id: str,
        node: str,
        phase: Phase,
        status: PhaseStatus,
        at: datetime | None = None,
        detail: str = "",
        error: ErrorInfo | None = None,
    ) -> None:
        """Append a phase event (never rewritten) and move the node's latest phase on."""
        _check(phase, Phase, "phase")
        _check(status, PhaseStatus, "phase status")
        error_json = (
            json.dumps(redact(error.model_dump(mode="json"), by_key=False)) if error is not None else None
        )
        with self._write() as conn:
            self._require_node(conn, run_id, node)
            conn.execute(
                """INSERT INTO node_events (run_id, node, phase, status, at, detail, error_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (run_id, node, phase, status, _time(at or utc_now()), redact(detail), error_json),
            )
            conn.execute(
                "UPDATE node_state SET last_phase = ?, last_status = ? WHERE run_id = ? AND node = ?",
                (phase, status, run_id, node),
            )

    @_retried
    def set_node_state(
        self,
        run_id: str,
        node: str,
        *,
        rotation: Rotation,
        services: Mapping[str, str] | None = None,
        outcome: NodeOutcome | None = None,
        reason: str | None = None,
    ) -> None:
        """State the node's situation now.

        `rotation`, `outcome` (None while in flight) and `reason` (why it is out of rotation; None
        clears it) replace what was there. `services` is the latest snapshot observed (service name ->
        status); None keeps what was recorded.
        """
        _check(rotation, Rotation, "rotation")
        if outcome is not None:
            _check(outcome, NodeOutcome, "node outcome")
        with self._write() as conn:
            self._require_node(conn, run_id, node)
            conn.execute(
                """UPDATE node_state SET rotation = ?, outcome = ?, reason = ?
                   WHERE run_id = ? AND node = ?""",
                (rotation, outcome, redact(reason), run_id, node),
            )
            if services is not None:
                conn.execute(
                    "UPDATE node_state SET services_after_json = ? WHERE run_id = ? AND node = ?",
                    (_dump_services(services), run_id, node),
                )

    @_retried
    def record_before(self, run_id: str, befores: Mapping[str, Before]) -> None:
        """Write ahead, in one committed transaction, what ran on each node before this run changes
        it. A node's first record stands: a later call cannot replace the truth with a state the run
        itself produced."""
        for before in befores.values():
            _check(before.rotation, Rotation, "rotation")
        with self._write() as conn:
            for node, before in befores.items():
                self._require_node(conn, run_id, node)
                conn.execute(
                    """UPDATE node_state SET services_before_json = ?, pools_before_json = ?,
                           rotation_before = ?
                       WHERE run_id = ? AND node = ? AND services_before_json IS NULL""",
                    (
                        _dump_services(before.services),
                        _dump_services(before.pools),
                        before.rotation,
                        run_id,
                        node,
                    ),
                )

    @_retried
    def record_recovery(self, run_id: str, recovery: Recovery) -> None:
        """What this run found of an incomplete earlier one (and its lock), for the rebuilt report."""
        with self._write() as conn:
            _require_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET recovery_json = ? WHERE run_id = ?",
                (_dump(recovery.model_dump(mode="json")), run_id),
            )

    @_retried
    def finish_run(
        self,
        run_id: str,
        outcome: RunOutcome,
        exit_code: int,
        at: datetime | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the run's end; `budget` (spent, limit, why it stopped) replaces the one it began with."""
        _check(outcome, RunOutcome, "run outcome")
        if outcome == "incomplete":
            raise JournalError("a run cannot finish as 'incomplete'")
        if exit_code != exit_code_for(outcome):
            raise JournalError(
                f"exit code {exit_code} does not match outcome {outcome!r} ({int(exit_code_for(outcome))})"
            )
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = ?, "
                "budget_json = COALESCE(?, budget_json) WHERE run_id = ?",
                (
                    _time(at or utc_now()),
                    outcome,
                    exit_code,
                    None if budget is None else _dump(budget),
                    run_id,
                ),
            ).rowcount
            if updated == 0:
                raise JournalError(f"unknown run {run_id!r}")

    @_retried
    def prune(self, inventory_path: str | os.PathLike[str], ended_before: datetime) -> list[str]:
        """Delete this inventory's runs that ended before `ended_before`, with their events and node
        states; returns their ids, oldest first.

        A run with no recorded end is never pruned (it may be in progress, or be the one to resume),
        nor is the inventory's latest run, whatever its age: `status` and `resume` read it.
        """
        key = inventory_key(inventory_path)
        with self._write() as conn:
            rows = conn.execute(
                """SELECT run_id FROM runs
                   WHERE inventory_path = ? AND ended_at IS NOT NULL AND ended_at < ?
                     AND seq < (SELECT MAX(seq) FROM runs WHERE inventory_path = ?)
                   ORDER BY seq""",
                (key, _time(ended_before), key),
            ).fetchall()
            run_ids = [str(row["run_id"]) for row in rows]
            for run_id in run_ids:
                conn.execute("DELETE FROM node_events WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM node_state WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            conn.execute(
                "DELETE FROM lock_takeovers WHERE inventory_path = ? AND at < ?", (key, _time(ended_before))
            )
        return run_ids

    @staticmethod
    def _require_node(conn: Tx, run_id: str, node: str) -> None:
        row = conn.execute(
            "SELECT 1 FROM node_state WHERE run_id = ? AND node = ?", (run_id, node)
        ).fetchone()
        if row is None:
            raise JournalError(f"node {node!r} is not part of run {run_id!r}")

    # -- reading ---------------------------------------------------------------------------------

    @_retried
    def inventory_digest(self, run_id: str) -> str:
        """The SHA-256 of the inventory file as that run read it."""
        with self._read() as conn:
            return str(_require_run(conn, run_id)["inventory_digest"])

    @_retried
    def node_durations(self, inventory_path: str | os.PathLike[str], runs: int = 5) -> list[float]:
        """Seconds each node took, from its first phase after preflight to its last event, for the
        nodes done in the last `runs` finished runs of this inventory (oldest data first)."""
        with self._read() as conn:
            rows = conn.execute(
                """SELECT MIN(e.at) AS first, MAX(e.at) AS last
                   FROM node_events e JOIN node_state s ON s.run_id = e.run_id AND s.node = e.node
                   WHERE e.phase != 'preflight' AND s.outcome = 'done' AND e.run_id IN (
                       SELECT run_id FROM runs WHERE inventory_path = ? AND ended_at IS NOT NULL
                       ORDER BY seq DESC LIMIT ?)
                   GROUP BY e.run_id, e.node ORDER BY e.run_id""",
                (inventory_key(inventory_path), runs),
            ).fetchall()
        # Same format and zone throughout (see _time), so MIN/MAX on the text are the times' order.
        return [(_parse_time(r["last"]) - _parse_time(r["first"])).total_seconds() for r in rows]

    @_retried
    def recovery(self, run_id: str) -> Recovery | None:
        """The earlier run `run_id` itself picked up, if any (see `record_recovery`)."""
        with self._read() as conn:
            row = _require_run(conn, run_id)
        return Recovery.model_validate_json(row["recovery_json"]) if row["recovery_json"] else None

    @_retried
    def latest_run(self, inventory_path: str | os.PathLike[str]) -> RunSummary | None:
        """The most recently begun run of this inventory, finished or not."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE inventory_path = ? ORDER BY seq DESC LIMIT 1",
                (inventory_key(inventory_path),),
            ).fetchone()
            if row is None:
                return None
            counts = conn.execute(
                "SELECT COUNT(*) AS nodes FROM node_state WHERE run_id = ?",
                (row["run_id"],),
            ).fetchone()
        outcome = _run_outcome(row)
        return RunSummary(
            run_id=row["run_id"],
            inventory_path=row["inventory_path"],
            inventory_digest=row["inventory_digest"],
            tool_version=row["tool_version"],
            pid=row["pid"],
            host=row["host"],
            started_at=_parse_time(row["started_at"]),
            ended_at=_parse_time(row["ended_at"]) if row["ended_at"] else None,
            outcome=outcome,
            exit_code=exit_code_for(outcome),
            nodes=counts["nodes"],
        )

    def unfinished_nodes(self, run_id: str) -> list[NodeState]:
        """Nodes that are not done (failed, interrupted, in flight, not started, skipped), plan order."""
        return [state for state in self.node_states(run_id) if state.outcome != "done"]

    def nodes_out_of_rotation(self, run_id: str) -> list[NodeState]:
        """Nodes last known drained from the load balancer ("unknown" ones are in `unfinished_nodes`)."""
        return [state for state in self.node_states(run_id) if state.rotation == "out"]

    @_retried
    def node_states(self, run_id: str) -> list[NodeState]:
        """Every node's latest journalled state, plan order."""
        with self._read() as conn:
            _require_run(conn, run_id)
            rows = conn.execute(
                "SELECT * FROM node_state WHERE run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
            # By column name: rows are mappings in both stores, not pairs.
            last_errors = {
                row["node"]: row["error_json"]
                for row in conn.execute(
                    """SELECT node, error_json FROM node_events WHERE id IN (
                           SELECT MAX(id) FROM node_events WHERE run_id = ? GROUP BY node)""",
                    (run_id,),
                ).fetchall()
            }
        return [
            NodeState(
                name=row["node"],
                host=row["host"],
                group=row["node_group"],
                last_phase=row["last_phase"],
                last_status=row["last_status"],
                rotation=row["rotation"],
                outcome=row["outcome"],
                reason=row["reason"],
                services=json.loads(row["services_after_json"] or "{}"),
                before=_before(row),
                last_error_kind=_error_kind(last_errors.get(row["node"])),
            )
            for row in rows
        ]

    @_retried
    def run_result(self, run_id: str) -> RunResult:
        """The run's full result, rebuilt from the journal alone (works after a crash)."""
        with self._read() as conn:
            run = _require_run(conn, run_id)
            states = conn.execute(
                "SELECT * FROM node_state WHERE run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
            events = conn.execute(
                "SELECT * FROM node_events WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        events_by_node: dict[str, list[Row]] = {}
        for event in events:
            events_by_node.setdefault(event["node"], []).append(event)
        outcome = _run_outcome(run)
        return RunResult(
            run_id=run["run_id"],
            tool_version=run["tool_version"],
            inventory_path=run["inventory_path"],
            started_at=_parse_time(run["started_at"]),
            ended_at=_parse_time(run["ended_at"]) if run["ended_at"] else None,
            outcome=outcome,
            plan=json.loads(run["plan_json"]),
            budget=json.loads(run["budget_json"]),
            recovery=json.loads(run["recovery_json"]) if run["recovery_json"] else None,
            nodes=[_node_result(state, events_by_node.get(state["node"], [])) for state in states],
        )

    # -- leases ----------------------------------------------------------------------------------

    @_retried
    def acquire_lock(
        self,
        inventory_path: str | os.PathLike[str],
        run_id: str,
        hosts: Iterable[str] | None = None,
        *,
        lease_seconds: float = 30.0,
    ) -> LockTakeover | None:
        """Take the farm's lease for `run_id` (this process), or raise `LockHeld`.

        The farm is its `hosts` (normalised by the caller), so two inventories sharing a host exclude
        each other; without hosts, the inventory's path stands for the farm. A run holding any of
        them excludes this one while its heartbeat is younger than its lease, or, on this host,
        while its process exists. A lease whose beat stopped for longer (its controller died, or
        lost the database) is taken over: recorded and returned, so the caller can say which run
        it was and repair what it left.
        """
        key = inventory_key(inventory_path)
        farm = sorted(set(hosts)) if hosts is not None else [key]
        pid = os.getpid()
        with self._write() as conn:
            self._store.serialise(conn)
            now = self._store.now(conn)
            rows = _in(conn, "SELECT * FROM leases WHERE farm_host IN ({})", farm)
            others: dict[str, Row] = {}
            for row in rows:
                if row["run_id"] != run_id:
                    others.setdefault(row["run_id"], row)
            for row in others.values():
                if self._alive(row, now):
                    raise _held(row)
            takeover: LockTakeover | None = None
            for stale in others.values():
                taken = LockTakeover(
                    inventory_path=key,
                    run_id=run_id,
                    stale_run_id=stale["run_id"],
                    stale_pid=stale["pid"],
                    stale_host=stale["host"],
                    stale_since=_parse_time(stale["since"]),
                    at=now,
                    controller=self.controller,
                    stale_controller=stale["controller"],
                    stale_last_beat=_parse_time(stale["last_beat"]),
                    why=self._why_dead(stale, now),
                )
                takeover = takeover or taken
                conn.execute(
                    """INSERT INTO lock_takeovers (inventory_path, at, run_id, stale_run_id, stale_pid,
                           stale_host, stale_since, controller, stale_controller, stale_last_beat, why)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        key,
                        _time(now),
                        run_id,
                        stale["run_id"],
                        stale["pid"],
                        stale["host"],
                        stale["since"],
                        self.controller,
                        stale["controller"],
                        stale["last_beat"],
                        taken.why,
                    ),
                )
                # The dead run's lease goes everywhere, not only on the hosts this farm shares.
                conn.execute("DELETE FROM leases WHERE run_id = ?", (stale["run_id"],))
            conn.executemany(
                """INSERT INTO leases (farm_host, inventory_path, run_id, controller, host, pid, since,
                       last_beat, lease_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (farm_host) DO UPDATE SET last_beat = excluded.last_beat,
                       lease_seconds = excluded.lease_seconds""",
                [
                    (h, key, run_id, self.controller, self._host, pid, _time(now), _time(now), lease_seconds)
                    for h in farm
                ],
            )
            return takeover

    def _why_dead(self, row: Row, now: datetime) -> str:
        if now - _parse_time(row["last_beat"]) > timedelta(seconds=float(row["lease_seconds"])):
            return f"its heartbeat stopped for longer than its {float(row['lease_seconds']):g} s lease"
        return "its process is gone"

    def _alive(self, row: Row, now: datetime) -> bool:
        if now - _parse_time(row["last_beat"]) > timedelta(seconds=float(row["lease_seconds"])):
            return False
        # The same controller on the same host can ask its own process table, which says more than a
        # beat: a process that is gone (kill -9, a crash) held a lease nobody will renew. Another
        # controller waits for the lease: two containers may share a host name, not their pids.
        same = (row["host"], row["controller"]) == (self._host, self.controller)
        return not (same and not _pid_alive(row["pid"]))

    @_retried
    def beat(self, run_id: str) -> datetime | None:
        """Renew `run_id`'s lease; None when it holds none any more (another controller took it)."""
        with self._write() as conn:
            now = self._store.now(conn)
            renewed = conn.execute(
                "UPDATE leases SET last_beat = ? WHERE run_id = ?", (_time(now), run_id)
            ).rowcount
        return now if renewed > 0 else None

    @_retried
    def lock_holder(
        self, inventory_path: str | os.PathLike[str], hosts: Iterable[str] | None = None
    ) -> tuple[LockHeld, bool] | None:
        """Who holds the inventory's lease (or one on any of `hosts`), and whether that run can still
        be running (its beat is younger than its lease); None when nobody does."""
        with self._read() as conn:
            now = self._store.now(conn)
            held = conn.execute(
                "SELECT * FROM leases WHERE inventory_path = ? ORDER BY farm_host LIMIT 1",
                (inventory_key(inventory_path),),
            ).fetchone()
            if held is None and hosts is not None:
                found = _in(conn, "SELECT * FROM leases WHERE farm_host IN ({})", sorted(set(hosts)))
                held = found[0] if found else None
        if held is None:
            return None
        return _held(held), self._alive(held, now)

    @_retried
    def release_lock(self, inventory_path: str | os.PathLike[str], run_id: str) -> bool:
        """Release `run_id`'s lease; False when it holds none (never drops another's)."""
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM leases WHERE run_id = ? AND inventory_path = ?",
                (run_id, inventory_key(inventory_path)),
            ).rowcount
        return deleted > 0

    @_retried
    def lock_takeovers(self, inventory_path: str | os.PathLike[str]) -> list[LockTakeover]:
        """Every stale lease ever taken over for this inventory, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM lock_takeovers WHERE inventory_path = ? ORDER BY id",
                (inventory_key(inventory_path),),
            ).fetchall()
        return [
            LockTakeover(
                inventory_path=row["inventory_path"],
                run_id=row["run_id"],
                stale_run_id=row["stale_run_id"],
                stale_pid=row["stale_pid"],
                stale_host=row["stale_host"],
                stale_since=_parse_time(row["stale_since"]),
                at=_parse_time(row["at"]),
                controller=row["controller"],
                stale_controller=row["stale_controller"],
                stale_last_beat=_parse_time(row["stale_last_beat"]) if row["stale_last_beat"] else None,
                why=row["why"] or "its process is gone",
            )
            for row in rows
        ]


def _in(conn: Tx, sql: str, values: Sequence[str]) -> list[Row]:
    """`sql` with its `IN ({})` list filled, in chunks both engines take whatever the farm's size."""
    rows: list[Row] = []
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        rows.extend(conn.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall())
    return rows


def _held(row: Row) -> LockHeld:
    return LockHeld(
        row["pid"],
        row["host"],
        row["run_id"],
        _parse_time(row["since"]),
        controller=row["controller"],
        last_beat=_parse_time(row["last_beat"]),
    )


def _error_kind(error_json: str | None) -> str | None:
    if error_json is None:
        return None
    kind = json.loads(error_json).get("kind")
    return kind if isinstance(kind, str) else None


def _before(row: Row) -> Before | None:
    if row["services_before_json"] is None:
        return None
    return Before(
        services=json.loads(row["services_before_json"]),
        pools=json.loads(row["pools_before_json"] or "{}"),
        rotation=row["rotation_before"] or "unknown",
    )


def _require_run(conn: Tx, run_id: str) -> Row:
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise JournalError(f"unknown run {run_id!r}")
    return cast(Row, row)


def _run_outcome(run: Row) -> RunOutcome:
    return cast(RunOutcome, run["outcome"] or "incomplete")


@dataclass
class _PhaseTally:
    phase: Phase
    started_at: datetime
    attempts: int = 0
    ended_at: datetime | None = None
    outcome: PhaseOutcome | None = None
    detail: str = ""
    error: ErrorInfo | None = None

    def add(self, status: PhaseStatus, at: datetime, detail: str, error: ErrorInfo | None) -> None:
        if status == "started":
            self.attempts += 1
            self.ended_at, self.outcome, self.error = None, None, None
            self.detail = detail
            return
        self.ended_at, self.outcome, self.detail, self.error = at, status, detail, error

    def result(self) -> PhaseResult:
        if self.outcome is None:
            return PhaseResult(
                phase=self.phase,
                started_at=self.started_at,
                outcome="cancelled",
                attempts=self.attempts,
                detail=self.detail or _UNTERMINATED_DETAIL,
            )
        return PhaseResult(
            phase=self.phase,
            started_at=self.started_at,
            ended_at=self.ended_at,
            outcome=self.outcome,
            attempts=self.attempts,
            detail=self.detail,
            error=self.error,
        )


def _node_result(state: Row, events: list[Row]) -> NodeResult:
    tallies: dict[str, _PhaseTally] = {}
    for event in events:
        at = _parse_time(event["at"])
        tally = tallies.setdefault(event["phase"], _PhaseTally(phase=event["phase"], started_at=at))
        error = ErrorInfo.model_validate_json(event["error_json"]) if event["error_json"] else None
        tally.add(event["status"], at, event["detail"], error)
    # Preflight only reads: a node is started (and can be interrupted) from its first later phase,
    # as in the live result.
    touched = [event for event in events if event["phase"] != "preflight"]
    outcome: NodeOutcome = state["outcome"] or ("interrupted" if touched else "not_started")
    started_at = _parse_time(touched[0]["at"]) if touched else None
    ended_at = _parse_time(events[-1]["at"]) if touched and state["outcome"] else None
    return NodeResult(
        name=state["node"],
        host=state["host"],
        group=state["node_group"],
        outcome=outcome,
        phases=[tally.result() for tally in tallies.values()],
        services_before=json.loads(state["services_before_json"] or "{}"),
        services_after=json.loads(state["services_after_json"] or "{}"),
        rotation=state["rotation"],
        left_out_reason=state["reason"],
        started_at=started_at,
        ended_at=ended_at,
    )
