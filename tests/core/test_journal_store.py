"""The journal field: a file or a PostgreSQL URL, where the password comes from, and the lease times."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.inventory import parse_inventory
from orchestrator.journal import Journal, JournalUnavailable
from orchestrator.lease import LeaseTimes, farm_identity
from orchestrator.log import redact
from orchestrator.store import PgJournal
from orchestrator.yamlsource import SourceError
from tests.pgserver import ROLE, PgServer

NODES = """\
version: 1
defaults:
  credentials: {username: u, password_env: PW}
  action: {type: iis-restart}
  health: {url: "http://{host}/healthz"}
nodes:
  - {name: web-01, host: 10.0.0.1}
"""


def inventory(extra: str) -> str:
    return NODES + extra


def test_a_file_journal_is_beside_the_inventory_and_a_url_names_a_database(tmp_path: Path) -> None:
    inv = parse_inventory(inventory("journal: state/j.sqlite\n"), str(tmp_path / "farm.yaml"))
    assert inv.journal == tmp_path / "state" / "j.sqlite"
    assert inv.lease == LeaseTimes()
    inv = parse_inventory(
        inventory(
            "journal: postgresql://orch@db.example:5432/farm\njournal_password_env: JOURNAL_PW\n"
            "journal_lease_seconds: 10\njournal_heartbeat_seconds: 2\njournal_outage_seconds: 4\n"
        ),
        "farm.yaml",
    )
    assert inv.journal == PgJournal("postgresql://orch@db.example:5432/farm", "JOURNAL_PW")
    assert inv.lease == LeaseTimes(lease=10, heartbeat=2, outage=4)


@pytest.mark.parametrize(
    ("extra", "line", "field", "message"),
    [
        ("journal: postgresql://orch:s3cr3t-pw@db:5432/farm\n", 8, "journal", "holds a password"),
        ("journal: postgresql://orch@db/farm?password=s3cr3t-pw\n", 8, "journal", "holds a password"),
        ("journal: mysql://orch@db/farm\n", 8, "journal", "unknown scheme"),
        ("journal: j.sqlite\njournal_password_env: PW\n", 9, "journal_password_env", "not a file"),
        (
            "journal_lease_seconds: 4\njournal_heartbeat_seconds: 3\n",
            9,
            "journal_heartbeat_seconds",
            "twice a lease",
        ),
    ],
)
def test_a_bad_journal_field_is_refused_at_its_line_without_echoing_a_password(
    extra: str, line: int, field: str, message: str
) -> None:
    with pytest.raises(SourceError) as caught:
        parse_inventory(inventory(extra), "farm.yaml")
    text = str(caught.value)
    assert f"farm.yaml:{line}:" in text and field in text and message in text, text
    assert "s3cr3t-pw" not in text


def test_the_farm_is_its_hosts_in_one_spelling() -> None:
    assert farm_identity(["WEB-01.corp.", "web-01.corp", "127.0.0.1", "::ffff:127.0.0.1", "2130706433"]) == [
        "127.0.0.1",
        "web-01.corp",
    ]


def test_the_password_comes_from_the_named_variable_and_never_from_the_url(
    pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(JournalUnavailable) as caught:
        Journal(pg_url)  # libpq's places have nothing: refused by the server, said plainly
    assert ROLE in str(caught.value) or "password" in str(caught.value)
    with pytest.raises(JournalUnavailable) as caught:
        Journal(PgJournal(pg_url, "JOURNAL_PW"), environ={"JOURNAL_PW": "wrong-" + pg_server.password})
    assert pg_server.password not in str(caught.value)
    with Journal(PgJournal(pg_url, "JOURNAL_PW"), environ={"JOURNAL_PW": pg_server.password}) as journal:
        assert journal.kind == "postgresql" and journal.latest_run("farm.yaml") is None
    # Registered as a secret: scrubbed wherever it would be written.
    assert pg_server.password not in str(redact(f"connecting with {pg_server.password}"))


def test_a_missing_password_variable_is_named() -> None:
    with pytest.raises(Exception, match="JOURNAL_PW is not set"):
        Journal(PgJournal("postgresql://orch@127.0.0.1:1/farm", "JOURNAL_PW"), environ={})
