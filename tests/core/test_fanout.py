"""Bounded fan-out: the limit holds, order is kept, and cancelling the caller cancels in-flight work."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.fanout import bounded_map


async def test_results_keep_input_order_and_limit_holds() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    three_running = asyncio.Event()

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1
        return n * 10

    task = asyncio.create_task(bounded_map(work, range(10), limit=3))
    async with asyncio.timeout(5):
        await three_running.wait()
    await asyncio.sleep(0)  # one more turn: a fourth would start now if the limit leaked
    assert peak == 3  # a fourth never started while three were waiting
    release.set()
    assert await task == [n * 10 for n in range(10)]
    assert peak == 3


async def test_cancelling_the_caller_cancels_and_awaits_in_flight_work() -> None:
    started = 0
    cancelled: list[int] = []
    finished_cleanup: list[int] = []
    four_started = asyncio.Event()

    async def work(n: int) -> None:
        nonlocal started
        started += 1
        if started == 4:
            four_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(n)
            await asyncio.sleep(0)  # cleanup that itself awaits must still run to the end
            finished_cleanup.append(n)
            raise

    caller = asyncio.create_task(bounded_map(work, range(8), limit=4))
    async with asyncio.timeout(5):
        await four_started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # Every in-flight call was cancelled and had finished its cleanup by the time the caller returned;
    # the queued ones never started.
    assert sorted(cancelled) == [0, 1, 2, 3]
    assert sorted(finished_cleanup) == [0, 1, 2, 3]
    assert started == 4


async def test_one_failure_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def work(n: int) -> None:
        if n == 0:
            await asyncio.sleep(0)
            raise RuntimeError("boom")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(ExceptionGroup) as group:
        await bounded_map(work, range(3), limit=3)
    assert group.group_contains(RuntimeError)
    assert cancelled.is_set()


async def test_limit_must_be_positive() -> None:
    async def work(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="limit"):
        await bounded_map(work, [1], limit=0)
