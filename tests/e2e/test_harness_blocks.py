"""The harness's loopback blocks: parallel workers never hand out the same one."""

from __future__ import annotations

import pytest

from tests.e2e.harness import _worker_blocks


def _all_blocks(monkeypatch: pytest.MonkeyPatch, worker: str | None, count: int | None) -> list[int]:
    for name, value in (("PYTEST_XDIST_WORKER", worker), ("PYTEST_XDIST_WORKER_COUNT", count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))
    blocks = _worker_blocks()
    taken = []
    with pytest.raises(RuntimeError, match=r"used all its loopback blocks"):
        while True:
            taken.append(next(blocks))
    return taken


def test_parallel_workers_take_disjoint_blocks_and_a_lone_process_takes_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alone = _all_blocks(monkeypatch, None, None)
    assert alone == list(range(100, 250))
    first, second = (_all_blocks(monkeypatch, f"gw{i}", 2) for i in range(2))
    assert not set(first) & set(second)
    assert sorted(first + second) == alone
    assert first[:3] == [100, 102, 104] and second[:3] == [101, 103, 105]
