"""A private PostgreSQL server for tests: Debian's binaries, a temporary data directory, a loopback
port picked free, its socket in the temporary directory, stopped by its PID.

CI runs as root and `initdb` refuses root, so the server's files belong to the `postgres` system user
and its commands run as that user. The test role's password reaches clients through `PGPASSWORD`
(never an inventory), as an operator's would.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROLE = "orchestrator"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv  # already an ordinary user: initdb accepts us
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class PgServer:
    root: Path
    port: int
    password: str
    pid: int | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """A URL without the password: that goes through PGPASSWORD, as the product requires."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    @classmethod
    def create(cls) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        root.chmod(0o755)
        server = cls(root=root, port=_free_port(), password=secrets.token_urlsafe(16))
        data = server.data
        pwfile = root / "pw"
        pwfile.write_text(server.password + "\n")
        if os.geteuid() == 0:
            info = pwd.getpwnam("postgres")
            os.chown(root, info.pw_uid, info.pw_gid)
            os.chown(pwfile, info.pw_uid, info.pw_gid)
        pwfile.chmod(0o600)
        subprocess.run(
            _as_postgres(
                [
                    str(_bindir() / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    ROLE,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        server.start()
        return server

    def start(self) -> None:
        # fsync off: a test server's durability is not what is under test, and it saves seconds.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(_bindir() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID; waits until it is gone."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
