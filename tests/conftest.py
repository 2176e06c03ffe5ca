"""Fixtures shared by the core and end-to-end tests: a private PostgreSQL server for the journal."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.pgserver import PgServer

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One server for the session, started on first use and stopped by its PID at the end. Clients
    find the test role's password in PGPASSWORD, as an operator's libpq would."""
    server = PgServer.create()
    previous = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = server.password
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = previous
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A new, empty database on the session's server: its URL, without a password."""
    return pg_server.create_database(f"journal_{os.getpid()}_{next(_databases)}")
