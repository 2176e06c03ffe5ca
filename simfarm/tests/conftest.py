"""Fixtures for the simulated farm: a farm served in-process on its own loopback range.

pypsrp is synchronous, so tests drive it from a worker thread (`in_thread`) while the farm runs on
the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from simfarm.config import SimConfig
from simfarm.farm import Farm, serve_farm

T = TypeVar("T")

# A range of its own, so these farms never meet the demo farm (127.0.1.x) or other suites.
BASE = "127.0.50."

FarmFactory = Callable[..., Awaitable[Farm]]


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
def in_thread() -> Callable[..., Awaitable[Any]]:
    """`await in_thread(fn, *args)`: run a blocking pypsrp call off the event loop serving the farm."""
    return _in_thread


@pytest.fixture
async def start_farm(tmp_path: Path) -> AsyncIterator[FarmFactory]:
    """`await start_farm(config=..., count=...)`: a farm on 127.0.50.1..count, closed after the test."""
    farms: list[Farm] = []

    async def start(config: SimConfig | None = None, count: int = 1, first: int = 1) -> Farm:
        nodes = [(f"web-{i:03d}", f"{BASE}{i}") for i in range(first, first + count)]
        workdir = tmp_path / f"farm-{len(farms)}"
        farm = await serve_farm(nodes, config or SimConfig(), workdir, workdir / "events.jsonl")
        farms.append(farm)
        return farm

    yield start
    for farm in farms:
        await farm.close()


@pytest.fixture
async def farm(start_farm: FarmFactory) -> Farm:
    """One node, web-001 on 127.0.50.1, default settings."""
    return await start_farm()
