"""The run's options and local files, checked before any node is contacted."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.inventory import Inventory, load_inventory
from orchestrator.journal import Journal
from orchestrator.options import OptionError, check_journal, check_run_options

INVENTORY = """\
version: 1
defaults:
  credentials: {username_env: U, password_env: P}
  health: {url: "http://{host}:8080/healthz"}
nodes:
  - {name: web-01, host: 10.0.0.1}
journal: state/journal.sqlite
"""


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "farm.yaml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def test_usable_options_pass_and_create_nothing(inv: Inventory, tmp_path: Path) -> None:
    outputs = {"--report": tmp_path / "out" / "r.json", "--events": tmp_path / "e.jsonl", "--junit": None}
    check_run_options(inv, "INFO", outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["farm.yaml"]


def test_an_existing_journal_of_ours_passes(inv: Inventory) -> None:
    Journal(inv.journal).close()
    check_journal(inv)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda p: p.mkdir(parents=True), "is a directory; the journal is a file"),
        (lambda p: p.write_bytes(b"\x00" * 64), "is not a journal (not an SQLite database)"),
        (lambda p: _foreign(p), "is an SQLite database of something else (tables notes)"),
        (lambda p: _foreign(p, user_version=99), "journal schema 99 is newer than this orchestrator"),
    ],
    ids=["directory", "not-sqlite", "foreign-sqlite", "newer-schema"],
)
def test_an_unusable_journal_is_refused_at_the_journal_field(
    inv: Inventory, prepare: Callable[[Path], object], message: str
) -> None:
    journal = inv.journal
    assert isinstance(journal, Path)  # a file journal; PostgreSQL's are checked when connecting
    journal.parent.mkdir(parents=True, exist_ok=True)
    prepare(journal)
    content = journal.read_bytes() if journal.is_file() else None
    with pytest.raises(OptionError) as caught:
        check_journal(inv)
    assert f"farm.yaml:7:1: journal: {inv.journal}: {message}" in str(caught.value)
    assert content is None or journal.read_bytes() == content  # left as it was


def _foreign(path: Path, user_version: int = 0) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text)")
        conn.execute(f"PRAGMA user_version = {user_version}")
    conn.close()


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("--report", lambda tmp: tmp, "is a directory; give a file name"),
        ("--html", lambda tmp: tmp / "farm.yaml", "is also the inventory"),
        ("--junit", lambda tmp: tmp / "state" / "journal.sqlite", "is also the journal"),
        ("--events", lambda tmp: Path("/proc/orchestrator-events.jsonl"), "cannot create files in /proc"),
        ("--report", lambda tmp: tmp / "farm.yaml" / "r.json", "farm.yaml is not a directory"),
    ],
    ids=["directory", "inventory", "journal", "proc", "under-a-file"],
)
def test_an_unusable_output_is_refused_naming_the_option(
    inv: Inventory, tmp_path: Path, option: str, target: Callable[[Path], Path], message: str
) -> None:
    path = target(tmp_path)
    with pytest.raises(OptionError) as caught:
        check_run_options(inv, "warning", {option: path})
    assert str(caught.value).startswith(f"{option} {path}: ")
    assert message in str(caught.value)


def test_two_outputs_on_one_file_are_refused(inv: Inventory, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"--junit .*: is also --report"):
        check_run_options(inv, "warning", {"--report": tmp_path / "x", "--junit": tmp_path / "x"})


def test_an_unknown_log_level_is_refused(inv: Inventory) -> None:
    with pytest.raises(
        OptionError, match="--log-level: 'verbose' is not a log level; use one of debug, info"
    ):
        check_run_options(inv, "verbose", {})
