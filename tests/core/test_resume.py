"""Where a resumed run picks a node up, from what the journal recorded."""

from __future__ import annotations

import pytest

from orchestrator.resume import resume_point


@pytest.mark.parametrize(
    ("outcome", "phase", "status", "expected"),
    [
        ("done", "undrain", "ok", None),
        ("skipped", None, None, None),  # skipped by an earlier resume: it was done before that
        ("not_started", "preflight", "ok", "drain"),
        ("failed", "preflight", "failed", "drain"),  # nothing was touched; preflight runs again anyway
        (None, None, None, "drain"),
        ("failed", "stop", "failed", "stop"),
        ("interrupted", "start", "cancelled", "start"),
        (None, "verify", "started", "verify"),  # cut off mid-phase by a crash
        ("interrupted", "drain", "ok", "stop"),
        (None, "undrain", "ok", "undrain"),  # crashed before recording done: undrain again is harmless
    ],
)
def test_resume_point(
    outcome: str | None, phase: str | None, status: str | None, expected: str | None
) -> None:
    assert resume_point(outcome, phase, status) == expected  # type: ignore[arg-type]
