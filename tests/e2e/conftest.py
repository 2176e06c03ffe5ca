"""Fixtures for the end-to-end tests (the harness itself is in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Farm, InventorySpec, start_farm, stop_farm


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Any]:
    """`farm(InventorySpec(...))` starts a farm for that inventory and returns a Farm."""
    started: list[Farm] = []

    def start(spec: InventorySpec | Path) -> Farm:
        return start_farm(spec, tmp_path, started.append)

    yield start
    for f in started:
        stop_farm(f)
