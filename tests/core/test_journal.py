import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import orchestrator
from orchestrator.journal import SCHEMA_VERSION, Before, Journal, JournalError, LockHeld
from orchestrator.log import register_secret
from orchestrator.results import ErrorInfo, ExitCode, Recovery, StaleLock

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
NODES = [("web01", "10.0.0.1", "site-a"), ("web02", "10.0.0.2", "site-a"), ("web03", "10.0.0.3", None)]
REPO = Path(orchestrator.__file__).resolve().parent.parent


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Every test here runs against both stores: a SQLite file, and a new PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "state" / "nested" / "journal.db"


def sqlite_only(db: Any) -> None:
    if not isinstance(db, Path):
        pytest.skip("about the SQLite file itself")


def raw_text(db: Any) -> bytes:
    """Everything the store holds, as bytes: the files of a SQLite journal, every row in PostgreSQL."""
    if isinstance(db, Path):
        return b"".join(path.read_bytes() for path in db.parent.iterdir())
    import psycopg

    with psycopg.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "".join(str(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables).encode()


def set_schema_version(db: Any, version: int) -> None:
    if isinstance(db, Path):
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.close()
        return
    import psycopg

    with psycopg.connect(db) as pg:
        pg.execute("UPDATE schema_version SET version = %s", (version,))


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "farm.yaml"
    path.write_text("nodes: []\n")
    return path


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    with Journal(db) as j:
        yield j


def begin(journal: Journal, inventory: Path, run_id: str = "r1") -> None:
    journal.begin_run(
        run_id,
        inventory,
        "sha256:abc",
        {"strategy": "batch"},
        NODES,
        budget={"max_failures": 1},
        started_at=T0,
    )


def python(code: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True, **kwargs)


def test_journal_file_is_created_with_its_directories_in_wal_mode(journal: Journal, db: Path) -> None:
    sqlite_only(db)
    assert db.exists()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_journal_from_a_newer_orchestrator_is_refused(db: Path) -> None:
    Journal(db).close()
    set_schema_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(JournalError, match="newer"):
        Journal(db)


def test_every_write_is_visible_to_another_connection_before_the_call_returns(
    journal: Journal, db: Path, inventory: Path
) -> None:
    begin(journal, inventory)
    journal.record_phase("r1", "web01", "drain", "started", at(1))
    reader = Journal(db)
    assert reader.unfinished_nodes("r1")[0].last_phase == "drain"
    journal.set_node_state("r1", "web01", rotation="out", reason="draining")
    assert reader.nodes_out_of_rotation("r1")[0].reason == "draining"
    reader.close()


def test_a_node_with_only_preflight_events_was_never_started(db: Any, inventory: Path) -> None:
    journal = Journal(db)
    begin(journal, inventory)
    journal.record_phase("r1", "web01", "preflight", "started", at(0))
    journal.record_phase("r1", "web01", "preflight", "ok", at(1))
    journal.close()
    node = Journal(db).run_result("r1").nodes[0]
    assert (node.outcome, node.started_at) == ("not_started", None)
    assert [p.phase for p in node.phases] == ["preflight"]


def test_run_result_is_rebuilt_from_the_journal(journal: Journal, db: Path, inventory: Path) -> None:
    begin(journal, inventory)
    error = ErrorInfo(kind="cannot_accept_control", message="1061", code=1061, target="W3SVC")
    journal.record_phase("r1", "web01", "preflight", "started", at(0))
    journal.record_phase("r1", "web01", "preflight", "ok", at(1), "3 services")
    journal.set_node_state("r1", "web01", rotation="in")
    journal.record_before("r1", {"web01": Before({"W3SVC": "Running"}, {}, "in")})
    journal.record_phase("r1", "web01", "drain", "started", at(1))
    journal.record_phase("r1", "web01", "drain", "ok", at(5))
    journal.set_node_state("r1", "web01", rotation="out", reason="drained for restart")
    # Two attempts at stop: the first fails with a retryable error, the second too.
    journal.record_phase("r1", "web01", "stop", "started", at(5))
    journal.record_phase("r1", "web01", "stop", "failed", at(8), "retrying", error)
    journal.record_phase("r1", "web01", "stop", "started", at(9))
    journal.record_phase("r1", "web01", "stop", "failed", at(20), "gave up", error)
    journal.set_node_state(
        "r1",
        "web01",
        rotation="out",
        services={"W3SVC": "StopPending"},
        outcome="failed",
        reason="stop failed; drained",
    )
    for phase in ("preflight", "drain", "stop", "start", "verify", "undrain"):
        journal.record_phase("r1", "web02", phase, "started", at(20))
        journal.record_phase("r1", "web02", phase, "ok", at(21))
    journal.set_node_state("r1", "web02", rotation="in", outcome="done")
    journal.finish_run("r1", "partial", ExitCode.PARTIAL, at(30))
    journal.close()

    result = Journal(db).run_result("r1")
    assert (result.outcome, result.exit_code, result.ended_at) == ("partial", ExitCode.PARTIAL, at(30))
    assert result.inventory_path == str(inventory.resolve())
    assert result.plan == {"strategy": "batch"}
    assert result.budget == {"max_failures": 1}
    assert result.tool_version == orchestrator.__version__
    web01, web02, web03 = result.nodes
    assert (web01.outcome, web01.rotation, web01.left_out_reason) == ("failed", "out", "stop failed; drained")
    # Started with its first phase after preflight (which only reads), as the live result says.
    assert (web01.started_at, web01.ended_at) == (at(1), at(20))
    assert web01.services_before == {"W3SVC": "Running"}
    assert web01.services_after == {"W3SVC": "StopPending"}
    assert [(p.phase, p.outcome, p.attempts) for p in web01.phases] == [
        ("preflight", "ok", 1),
        ("drain", "ok", 1),
        ("stop", "failed", 2),
    ]
    stop = web01.phases[2]
    assert (stop.started_at, stop.ended_at, stop.detail, stop.error) == (at(5), at(20), "gave up", error)
    assert web01.failed_phase == stop
    assert web02.outcome == "done" and len(web02.phases) == 6
    assert (web03.outcome, web03.group, web03.phases, web03.started_at) == ("not_started", None, [], None)
    assert result.totals.failed == 1 and result.totals.out_of_rotation == 1


def test_a_retried_phase_that_succeeds_has_no_error(journal: Journal, inventory: Path) -> None:
    begin(journal, inventory)
    journal.record_phase("r1", "web01", "start", "started", at(0))
    journal.record_phase(
        "r1", "web01", "start", "failed", at(1), error=ErrorInfo(kind="timed_out", message="1053")
    )
    journal.record_phase("r1", "web01", "start", "started", at(2))
    journal.record_phase("r1", "web01", "start", "ok", at(3))
    (phase,) = journal.run_result("r1").nodes[0].phases
    assert (phase.outcome, phase.attempts, phase.error, phase.ended_at) == ("ok", 2, None, at(3))


def killed_run(db: Path, inventory: Path) -> int:
    """A run whose process holds the lock and dies by SIGKILL in the middle of web01's stop."""
    proc = python(
        f"""
        import os, signal
        from orchestrator.journal import Journal
        j = Journal({str(db)!r})
        j.acquire_lock({str(inventory)!r}, "dead-run")
        j.begin_run("dead-run", {str(inventory)!r}, "d", {{}}, {NODES!r})
        j.record_phase("dead-run", "web01", "preflight", "started")
        j.record_phase("dead-run", "web01", "preflight", "ok")
        j.record_phase("dead-run", "web01", "drain", "started")
        j.record_phase("dead-run", "web01", "drain", "ok")
        j.set_node_state("dead-run", "web01", rotation="out", reason="drained for restart")
        j.record_phase("dead-run", "web01", "stop", "started")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return proc.pid


def test_a_run_killed_mid_phase_is_reported_honestly(db: Path, inventory: Path) -> None:
    killed_run(db, inventory)
    journal = Journal(db)
    summary = journal.latest_run(inventory)
    assert summary is not None
    assert (summary.run_id, summary.outcome, summary.exit_code) == (
        "dead-run",
        "incomplete",
        ExitCode.INTERNAL,
    )
    assert summary.nodes == 3

    result = journal.run_result("dead-run")
    assert result.outcome == "incomplete" and result.ended_at is None
    web01 = result.nodes[0]
    assert (web01.outcome, web01.rotation, web01.left_out_reason) == (
        "interrupted",
        "out",
        "drained for restart",
    )
    assert web01.ended_at is None
    stop = web01.phases[-1]
    assert (stop.phase, stop.outcome, stop.ended_at) == ("stop", "cancelled", None)
    assert "no end recorded" in stop.detail
    assert [n.outcome for n in result.nodes[1:]] == ["not_started", "not_started"]

    (out,) = journal.nodes_out_of_rotation("dead-run")
    assert (out.name, out.last_phase, out.last_status, out.outcome) == ("web01", "stop", "started", None)
    assert [n.name for n in journal.unfinished_nodes("dead-run")] == ["web01", "web02", "web03"]


def test_the_lock_of_a_dead_process_is_taken_over_and_recorded(db: Path, inventory: Path) -> None:
    dead_pid = killed_run(db, inventory)
    journal = Journal(db)
    takeover = journal.acquire_lock(inventory, "r2")
    assert takeover is not None
    assert (takeover.stale_run_id, takeover.stale_pid) == ("dead-run", dead_pid)
    assert journal.lock_takeovers(inventory) == [takeover]
    with pytest.raises(LockHeld) as held:
        Journal(db).acquire_lock(inventory, "r3")
    assert (held.value.run_id, held.value.pid) == ("r2", os.getpid())


def test_a_live_lock_in_another_process_is_respected(db: Path, inventory: Path) -> None:
    holder = python(
        f"""
        import sys
        from orchestrator.journal import Journal
        j = Journal({str(db)!r})
        j.acquire_lock({str(inventory)!r}, "other-run")
        print("locked", flush=True)
        sys.stdin.read()
        j.release_lock({str(inventory)!r}, "other-run")
        """,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        journal = Journal(db)
        with pytest.raises(LockHeld) as held:
            journal.acquire_lock(inventory, "mine")
        assert (held.value.pid, held.value.run_id) == (holder.pid, "other-run")
        assert "other-run" in str(held.value)
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        assert journal.acquire_lock(inventory, "mine") is None
        assert journal.lock_takeovers(inventory) == []
    finally:
        holder.kill()
        holder.wait()


def test_two_journals_on_one_file_contend_for_the_lock(db: Path, inventory: Path, tmp_path: Path) -> None:
    first, second = Journal(db), Journal(db)
    assert first.acquire_lock(inventory, "r1") is None
    assert first.acquire_lock(inventory, "r1") is None  # re-entrant for the same run
    with pytest.raises(LockHeld):
        second.acquire_lock(inventory, "r2")
    assert second.acquire_lock(tmp_path / "other.yaml", "r2") is None  # locks are per inventory
    assert second.release_lock(inventory, "r2") is False  # cannot drop another run's lock
    with pytest.raises(LockHeld):
        second.acquire_lock(inventory, "r2")
    assert first.release_lock(inventory, "r1") is True
    assert second.acquire_lock(inventory, "r2") is None


def age_lease(db: Any, run_id: str, seconds: float) -> None:
    """Move a lease's last beat into the past, as if its controller had stopped beating then."""
    if isinstance(db, Path):
        conn = sqlite3.connect(db)
        with conn:
            rows = conn.execute("SELECT farm_host, last_beat FROM leases WHERE run_id = ?", (run_id,))
            for host, beat in rows.fetchall():
                old = (datetime.fromisoformat(beat) - timedelta(seconds=seconds)).isoformat()
                conn.execute("UPDATE leases SET last_beat = ? WHERE farm_host = ?", (old, host))
        conn.close()
        return
    import psycopg

    with psycopg.connect(db) as pg:
        for host, beat in pg.execute("SELECT farm_host, last_beat FROM leases WHERE run_id = %s", (run_id,)):
            old = (datetime.fromisoformat(beat) - timedelta(seconds=seconds)).isoformat()
            pg.execute("UPDATE leases SET last_beat = %s WHERE farm_host = %s", (old, host))


def test_a_live_lease_of_another_controller_is_respected_until_its_beat_stops(
    db: Any, inventory: Path
) -> None:
    other = Journal(db, environ={"ORCHESTRATOR_CONTROLLER": "ctl-b"})
    mine = Journal(db, environ={"ORCHESTRATOR_CONTROLLER": "ctl-a"})
    hosts = ["10.0.0.1", "10.0.0.2"]
    assert other.acquire_lock(inventory, "theirs", hosts, lease_seconds=30) is None
    beat = other.beat("theirs")
    assert beat is not None
    with pytest.raises(LockHeld) as held:
        mine.acquire_lock(inventory, "mine", hosts, lease_seconds=30)
    assert (held.value.run_id, held.value.controller, held.value.last_beat) == ("theirs", "ctl-b", beat)
    assert "ctl-b" in str(held.value) and "last beat" in str(held.value)
    holder = mine.lock_holder(inventory)
    assert holder is not None and holder[0].run_id == "theirs" and holder[1] is True

    age_lease(db, "theirs", 31)  # its controller stopped beating 31 s ago: past its 30 s lease
    holder = mine.lock_holder(inventory)
    assert holder is not None and holder[1] is False
    takeover = mine.acquire_lock(inventory, "mine", hosts, lease_seconds=30)
    assert takeover is not None
    assert (takeover.stale_run_id, takeover.stale_controller, takeover.controller) == (
        "theirs",
        "ctl-b",
        "ctl-a",
    )
    assert mine.lock_takeovers(inventory) == [takeover]
    # The dead run's heartbeat, were it to come back, learns it lost the lease.
    assert other.beat("theirs") is None
    assert mine.beat("mine") is not None
    with pytest.raises(LockHeld):
        other.acquire_lock(inventory, "theirs-again", hosts)
    other.close()
    mine.close()


def test_two_inventories_sharing_a_host_exclude_each_other(db: Any, tmp_path: Path) -> None:
    first, second = Journal(db), Journal(db)
    assert first.acquire_lock(tmp_path / "a.yaml", "ra", ["10.0.0.1", "10.0.0.2"]) is None
    with pytest.raises(LockHeld) as held:
        second.acquire_lock(tmp_path / "b.yaml", "rb", ["10.0.0.2", "10.0.0.3"])
    assert held.value.run_id == "ra"
    assert second.acquire_lock(tmp_path / "c.yaml", "rc", ["10.0.0.4"]) is None  # no host in common
    assert first.release_lock(tmp_path / "a.yaml", "ra") is True
    assert second.acquire_lock(tmp_path / "b.yaml", "rb", ["10.0.0.2", "10.0.0.3"]) is None
    first.close()
    second.close()


def test_latest_run_is_per_inventory_whatever_the_spelling_of_its_path(
    journal: Journal, inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert journal.latest_run(inventory) is None
    begin(journal, inventory, "r1")
    journal.finish_run("r1", "succeeded", 0, at(10))
    monkeypatch.chdir(tmp_path)
    begin(journal, Path("farm.yaml"), "r2")
    journal.begin_run("other", tmp_path / "other.yaml", "x", {}, [("a", "h", None)])
    latest = journal.latest_run(inventory)
    assert latest is not None and (latest.run_id, latest.outcome) == ("r2", "incomplete")
    journal.finish_run("r2", "aborted_window", ExitCode.ABORTED_WINDOW, at(20))
    latest = journal.latest_run("./farm.yaml")
    assert latest is not None
    assert (latest.outcome, latest.exit_code, latest.ended_at) == ("aborted_window", 6, at(20))


def test_unfinished_and_out_of_rotation_nodes(journal: Journal, inventory: Path) -> None:
    begin(journal, inventory)
    journal.set_node_state("r1", "web01", rotation="in", outcome="done")
    journal.set_node_state("r1", "web02", rotation="out", outcome="failed", reason="verify failed")
    journal.set_node_state("r1", "web03", rotation="unknown", outcome="interrupted")
    assert [n.name for n in journal.unfinished_nodes("r1")] == ["web02", "web03"]
    (out,) = journal.nodes_out_of_rotation("r1")
    assert (out.name, out.host, out.group, out.reason) == ("web02", "10.0.0.2", "site-a", "verify failed")
    journal.set_node_state("r1", "web02", rotation="in", outcome="done")
    assert journal.nodes_out_of_rotation("r1") == []


def test_bad_writes_are_refused_and_leave_nothing_behind(journal: Journal, inventory: Path) -> None:
    begin(journal, inventory)
    with pytest.raises(JournalError, match="already in the journal"):
        begin(journal, inventory)
    with pytest.raises(JournalError, match="twice"):
        journal.begin_run("r2", inventory, "d", {}, [NODES[0], NODES[0]])
    assert journal.latest_run(inventory).run_id == "r1"  # type: ignore[union-attr]
    with pytest.raises(JournalError, match="not part of run"):
        journal.record_phase("r1", "web99", "stop", "started")
    with pytest.raises(JournalError, match="phase status"):
        journal.record_phase("r1", "web01", "stop", "exploded")  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="rotation"):
        journal.set_node_state("r1", "web01", rotation="sideways")  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="does not match"):
        journal.finish_run("r1", "partial", 0)
    with pytest.raises(JournalError, match="no timezone"):
        journal.record_phase("r1", "web01", "stop", "started", datetime(2025, 3, 1, 2, 0))
    with pytest.raises(JournalError, match="incomplete"):
        journal.finish_run("r1", "incomplete", 1)
    with pytest.raises(JournalError, match="unknown run"):
        journal.run_result("nope")
    result = journal.run_result("r1")
    assert result.outcome == "incomplete"
    assert all(node.phases == [] and node.outcome == "not_started" for node in result.nodes)


def test_secrets_never_reach_the_journal_file(db: Path, inventory: Path) -> None:
    password = f"pw-{uuid.uuid4()}"
    plan_token = f"tok-{uuid.uuid4()}"
    register_secret(password)
    with Journal(db) as journal:
        journal.begin_run(
            "r1", inventory, "d", {"lb": {"api_token": plan_token}, "note": f"user:{password}"}, NODES
        )
        error = ErrorInfo(kind="auth", message=f"logon failed for {password}")
        journal.record_phase("r1", "web01", "preflight", "failed", detail=f"tried {password}", error=error)
        journal.set_node_state("r1", "web01", rotation="in", outcome="failed", reason=f"bad {password}")
        result = journal.run_result("r1")
    raw = raw_text(db)
    assert password.encode() not in raw and plan_token.encode() not in raw
    assert result.nodes[0].left_out_reason == "bad [REDACTED]"
    assert result.plan["lb"] == {"api_token": "[REDACTED]"}


def test_node_durations_come_from_finished_runs_of_this_inventory(
    db: Any, inventory: Path, tmp_path: Path
) -> None:
    journal = Journal(db)
    begin(journal, inventory, "r1")
    for node, start, end in (("web01", 1, 9), ("web02", 2, 14)):
        journal.record_phase("r1", node, "preflight", "started", at(0))
        journal.record_phase("r1", node, "preflight", "ok", at(0))
        journal.record_phase("r1", node, "drain", "started", at(start))
        journal.record_phase("r1", node, "undrain", "ok", at(end))
        journal.set_node_state("r1", node, rotation="in", outcome="done")
    journal.record_phase("r1", "web03", "drain", "started", at(1))
    journal.record_phase("r1", "web03", "stop", "failed", at(50))
    journal.set_node_state("r1", "web03", rotation="out", outcome="failed")
    assert journal.node_durations(inventory) == []  # the run has not finished
    journal.finish_run("r1", "partial", ExitCode.PARTIAL, at(60))
    # Preflight excluded, failed nodes excluded.
    assert sorted(journal.node_durations(inventory)) == [8.0, 12.0]
    assert journal.node_durations(tmp_path / "other.yaml") == []


def test_the_first_record_of_what_ran_before_stands(journal: Journal, db: Path, inventory: Path) -> None:
    begin(journal, inventory)
    truth = Before({"W3SVC": "Running", "W3LOGSVC": "Running"}, {"AppPool1": "Started"}, "in")
    journal.record_before("r1", {"web01": truth})
    # A later record (the run's own half-stopped state) cannot replace it.
    journal.record_before("r1", {"web01": Before({"W3SVC": "Running", "W3LOGSVC": "Stopped"}, {}, "out")})
    journal.close()
    reopened = Journal(db)
    web01, web02, _ = reopened.node_states("r1")
    assert web01.before == truth
    assert web02.before is None
    assert reopened.run_result("r1").nodes[0].services_before == truth.services
    with pytest.raises(JournalError, match="not part of run"):
        reopened.record_before("r1", {"web09": truth})


def test_what_a_run_recovered_is_rebuilt_with_it(journal: Journal, db: Path, inventory: Path) -> None:
    begin(journal, inventory)
    assert journal.recovery("r1") is None and journal.run_result("r1").recovery is None
    recovery = Recovery(
        run_id="dead-run",
        lock_takeover=StaleLock(run_id="dead-run", pid=4242, host="ops-01", since=at(0)),
        repaired={"web01": "stop"},
    )
    journal.record_recovery("r1", recovery)
    journal.close()
    reopened = Journal(db)
    assert reopened.recovery("r1") == recovery
    assert reopened.run_result("r1").recovery == recovery


def test_a_heartbeat_keeps_the_lease_and_says_when_it_is_lost(db: Any, inventory: Path) -> None:
    import threading

    from orchestrator.lease import Heartbeat, LeaseTimes

    times = LeaseTimes(lease=2.0, heartbeat=0.1, outage=1.0)
    holder = Journal(db, environ={"ORCHESTRATOR_CONTROLLER": "ctl-a"})
    rival = Journal(db, environ={"ORCHESTRATOR_CONTROLLER": "ctl-b"})
    assert holder.acquire_lock(inventory, "run-a", ["h1"], lease_seconds=times.lease) is None
    since = holder.lock_holder(inventory)[0].since  # type: ignore[index]
    lost = threading.Event()
    reasons: list[str] = []
    between_beats = threading.Lock()  # held by each beat, so the test can act between two of them

    class Beating(Journal):
        def beat(self, run_id: str) -> datetime | None:
            with between_beats:
                return super().beat(run_id)

    def on_lost(why: str) -> None:
        reasons.append(why)
        lost.set()

    beat = Heartbeat(lambda: Beating(db), "run-a", times, on_lost)
    beat.start()
    try:
        # Beyond a whole lease after it was taken, the beats keep it: another controller is refused.
        deadline = time.monotonic() + 30
        while True:
            held = rival.lock_holder(inventory)
            assert held is not None and held[1], "the lease lapsed while beating"
            assert held[0].last_beat is not None
            if (held[0].last_beat - since).total_seconds() > times.lease:
                break
            assert time.monotonic() < deadline, "no beat renewed the lease"
            time.sleep(0.05)
        with pytest.raises(LockHeld):
            rival.acquire_lock(inventory, "run-b", ["h1"])
        # The holder stalls past its lease (as if its beats had stopped) and is taken over: its next
        # beat finds the lease gone and says so.
        with between_beats:
            age_lease(db, "run-a", 60)
            assert rival.acquire_lock(inventory, "run-b", ["h1"]) is not None
        assert lost.wait(timeout=30)
        assert reasons == ["another controller took the farm's lease over"]
    finally:
        beat.stop()
        holder.close()
        rival.close()
