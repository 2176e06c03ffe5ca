"""Bounded fan-out over many nodes with the standard library.

asyncio.TaskGroup gives the property that matters at 2 a.m.: when the caller is cancelled (a second
SIGINT, a deadline), every in-flight call is cancelled and awaited before control returns, so no
remote call is left running unobserved. A semaphore bounds how many run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, limit: int) -> list[R]:
    """`[await fn(x) for x in items]` with at most `limit` running at once, results in input order.

    An exception in one call cancels the others and propagates (wrap `fn` to collect errors instead).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await fn(item)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(item)) for item in items]
    return [task.result() for task in tasks]
