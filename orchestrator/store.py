"""Where the journal lives: a SQLite file (one controller) or a PostgreSQL database (several).

The journal's queries are written once, in SQLite's dialect with `?` placeholders; a store runs them
on its engine: connection, placeholders, transactions, the schema version and the database's clock.
A PostgreSQL store that loses its connection raises `Unavailable`, so the journal can retry the whole
call on a new connection rather than guess how far a broken transaction got.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

Row = Mapping[str, Any]

# One key for the advisory lock that serialises schema migrations and lease changes between
# controllers ("orch" in ASCII): transactions that change who holds a farm queue behind it.
_ADVISORY_KEY = 0x6F726368


class StoreError(Exception):
    """The journal's location is unusable as given (a URL with a password, an unknown scheme)."""


class Unavailable(Exception):
    """The database cannot be reached now (connection refused, lost, server shutting down)."""


@dataclass(frozen=True)
class PgJournal:
    """A journal in PostgreSQL. The URL never holds a password: that comes from libpq's own places
    (PGPASSWORD, ~/.pgpass, PGPASSFILE) or from the environment variable `password_env` names."""

    url: str
    password_env: str | None = None

    def __post_init__(self) -> None:
        problem = url_problem(self.url)
        if problem is not None:
            raise StoreError(problem)

    def exists(self) -> bool:
        # A database is created by its administrator, never by a run: it is there or it is an error.
        return True

    def __str__(self) -> str:
        return self.url


def is_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a journal database, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("postgresql", "postgres"):
        return f"unknown scheme {parts.scheme!r}; use a file path or a postgresql:// URL"
    if parts.password is not None or re.search(r"(^|[?&])password=", parts.query):
        return (
            "the URL holds a password; remove it and give it through PGPASSWORD, ~/.pgpass or "
            "journal_password_env"
        )
    if not parts.hostname and "host=" not in parts.query:
        return "the URL names no host"
    return None


class Tx(Protocol):
    """One transaction: the journal's statements in SQLite's dialect."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> object: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Store(Protocol):
    kind: str
    where: str  # for messages: the file, or the URL (no password in it)

    def write(self) -> contextlib.AbstractContextManager[Tx]: ...

    def read(self) -> contextlib.AbstractContextManager[Tx]: ...

    def schema_version(self, tx: Tx) -> int: ...

    def set_schema_version(self, tx: Tx, version: int) -> None: ...

    def ddl(self, statement: str) -> str: ...

    def serialise(self, tx: Tx) -> None: ...

    def now(self, tx: Tx) -> datetime: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Node names, hosts and error texts are nobody else's business; SQLite gives its -wal and -shm
        # files the database file's mode, so creating it 0600 covers all three.
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        if self.path.stat().st_mode & 0o077:
            # A journal created by an older version, or by hand: tighten it if we may.
            with contextlib.suppress(OSError):
                self.path.chmod(0o600)
        self._lock = threading.Lock()
        # Autocommit mode: transactions are explicit, so nothing is left pending between calls.
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed phase event survives a power cut too, not just a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        # IMMEDIATE takes the write lock up front, so two processes racing for a lock row serialise.
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        # One snapshot for multi-query reads, so a rebuilt result is never half old, half new.
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def schema_version(self, tx: Tx) -> int:
        return int(tx.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def ddl(self, statement: str) -> str:
        return statement.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT")

    def serialise(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's only write lock

    def now(self, tx: Tx) -> datetime:
        # One file, one machine: its clock is the only one there is.
        return datetime.now(UTC)

    def reconnect(self) -> None:
        pass  # a file does not go away between calls

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PgStore:
    kind = "postgresql"

    def __init__(self, target: PgJournal, environ: Mapping[str, str] | None = None, connect_timeout: int = 5):
        self.target = target
        self.where = target.url
        env = os.environ if environ is None else environ
        self._password: str | None = None
        if target.password_env is not None:
            self._password = env.get(target.password_env)
            if not self._password:
                raise StoreError(f"journal_password_env: the variable {target.password_env} is not set")
            from orchestrator.log import register_secret

            register_secret(self._password)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._connect()

    def _connect(self) -> None:
        import psycopg
        from psycopg.rows import dict_row

        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": self._connect_timeout,
            "application_name": f"orchestrator@{socket.gethostname()}",
            # A database host that vanishes without closing the connection (a partition, a power
            # cut) must fail a call in seconds, not hang the run on a socket that never answers.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            self._conn = psycopg.connect(self.target.url, **kwargs)
        except psycopg.OperationalError as exc:
            raise Unavailable(_scrub(str(exc), self._password)) from None

    def reconnect(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            self._connect()

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = None
                self._connect()
            conn = self._conn
            try:
                with conn.transaction():
                    yield _PgTx(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not (conn.closed or conn.broken or isinstance(exc, psycopg.errors.AdminShutdown)):
                    raise  # a query problem on a live connection: not an outage
                with contextlib.suppress(Exception):
                    conn.close()
                self._conn = None
                raise Unavailable(_scrub(str(exc), self._password)) from None

    def write(self) -> contextlib.AbstractContextManager[Tx]:
        return self._transaction()

    def read(self) -> contextlib.AbstractContextManager[Tx]:
        return self._transaction()

    def schema_version(self, tx: Tx) -> int:
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row["version"])

    def set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute("DELETE FROM schema_version")
        tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def ddl(self, statement: str) -> str:
        return statement.replace("{serial}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")

    def serialise(self, tx: Tx) -> None:
        # Released at commit or rollback; a controller that dies mid-transaction releases it too.
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))

    def now(self, tx: Tx) -> datetime:
        # The database's clock, not the controller's: two controllers' clocks may disagree, and a
        # lease judged by each one's own would expire early on one of them.
        value = tx.execute("SELECT clock_timestamp() AS now").fetchone()["now"]
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self._conn.execute(_pg_sql(sql), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_pg_sql(sql), [tuple(row) for row in rows])


def _pg_sql(sql: str) -> str:
    # The journal's statements hold no literal '?' or '%': placeholders translate one for one.
    return sql.replace("%", "%%").replace("?", "%s")


def _scrub(message: str, password: str | None) -> str:
    if password:
        message = message.replace(password, "***")
    return message.strip().splitlines()[0] if message.strip() else "connection lost"


def open_store(target: str | os.PathLike[str] | PgJournal, environ: Mapping[str, str] | None = None) -> Store:
    if isinstance(target, PgJournal):
        return PgStore(target, environ)
    if isinstance(target, str) and is_url(target):
        return PgStore(PgJournal(target), environ)
    return SqliteStore(target)
