"""The run's command-line options and local files, checked before any node is contacted.

Found any later, an unusable path costs the most: a report path that is a directory used to fail
after every node had been restarted, and a journal that is not a database failed with a traceback.
Each check here names the option (or the inventory field) and what is wrong with it.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.inventory import Inventory
from orchestrator.journal import SCHEMA_VERSION

LOG_LEVELS = ("debug", "info", "warning", "error")
_SQLITE_HEADER = b"SQLite format 3\x00"


class OptionError(Exception):
    """An option or local file the run cannot use; nothing was contacted."""


def check_log_level(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise OptionError(f"--log-level: {level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")


def check_run_options(inv: Inventory, log_level: str, outputs: Mapping[str, Path | None]) -> None:
    """`outputs`: option name (e.g. "--report") -> the path given, or None. Raises OptionError."""
    check_log_level(log_level)
    taken: dict[Path, str] = {inv.path.resolve(): f"the inventory {inv.path}"}
    if isinstance(inv.journal, Path):
        taken[inv.journal.resolve()] = f"the journal {inv.journal}"
    for option, path in outputs.items():
        if path is None:
            continue
        resolved = path.resolve()
        if resolved in taken:
            raise OptionError(f"{option} {path}: is also {taken[resolved]}; it would be overwritten")
        taken[resolved] = f"{option}"
        _check_output(option, path, append=option == "--events")
    check_journal(inv)


def _check_output(option: str, path: Path, *, append: bool) -> None:
    what = f"{option} {path}"
    if path.is_dir():
        raise OptionError(f"{what}: is a directory; give a file name")
    if path.exists():
        if not path.is_file():
            raise OptionError(f"{what}: is not a regular file")
        if append:
            try:
                with path.open("a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise OptionError(f"{what}: cannot be appended to: {exc.strerror}") from None
    if (problem := _not_creatable(path)) is not None:
        raise OptionError(f"{what}: {problem}")


def _not_creatable(path: Path) -> str | None:
    """Why files cannot be created beside `path`, or None. Reports are written to a temporary file
    beside the target and renamed over it; the journal keeps -wal and -shm files beside it; missing
    directories are created, so the nearest existing one must take new entries."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    try:
        # A real attempt, not os.access: root passes access() on read-only mounts and in /proc.
        fd, probe = tempfile.mkstemp(prefix=".orchestrator-probe.", dir=ancestor)
    except OSError as exc:
        return f"cannot create files in {ancestor}: {exc.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


def check_journal(inv: Inventory) -> None:
    """The inventory's journal is a journal of this orchestrator, or does not exist yet. A database
    is checked when the run connects to it (Journal refuses a newer schema there)."""
    path = inv.journal
    if not isinstance(path, Path):
        return

    def fail(problem: str) -> OptionError:
        return OptionError(str(inv.error_at(("journal",), f"{path}: {problem}")))

    if path.is_dir():
        raise fail("is a directory; the journal is a file")
    if path.exists():
        if not path.is_file():
            raise fail("is not a regular file")
        try:
            with path.open("rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise fail(f"cannot be read: {exc.strerror}") from None
        if header and header != _SQLITE_HEADER:
            raise fail("is not a journal (not an SQLite database); point journal: at a new file")
        if header:
            _check_schema(path, fail)
    if (problem := _not_creatable(path)) is not None:
        raise fail(problem)


def _check_schema(path: Path, fail: Callable[[str], OptionError]) -> None:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise fail(f"is not a readable SQLite database ({exc})") from None
    if version > SCHEMA_VERSION:
        raise fail(
            f"journal schema {version} is newer than this orchestrator supports ({SCHEMA_VERSION}); "
            "upgrade the orchestrator"
        )
    if version == 0 and tables:
        raise fail(
            f"is an SQLite database of something else (tables {', '.join(sorted(tables)[:5])}); "
            "point journal: at a new file"
        )
