"""Fixtures for the end-to-end tests (the harness itself is in harness.py)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Farm, InventorySpec, _blocks, _env


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Any]:
    """`farm(InventorySpec(...))` starts a farm for that inventory and returns a Farm."""
    started: list[Farm] = []

    def start(spec: InventorySpec | Path) -> Farm:
        inventory = tmp_path / "inventory.yaml"
        if isinstance(spec, Path):
            inventory.write_text(spec.read_text())
        else:
            inventory.write_text(yaml.safe_dump(spec.render(next(_blocks), 8080), sort_keys=False))
        describe = tmp_path / "farm.json"
        # stderr to a file: a pipe nobody reads would fill up and stall the farm.
        with open(tmp_path / "sim.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "sim",
                    "--inventory",
                    str(inventory),
                    "--describe",
                    str(describe),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                env=_env(),
            )
        f = Farm(inventory, {}, proc, tmp_path)
        started.append(f)
        _wait_ready(proc, tmp_path / "sim.log", deadline=time.monotonic() + 60)
        f.describe = json.loads(describe.read_text())
        return f

    yield start
    for f in started:
        f.proc.terminate()
        try:
            f.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            f.proc.kill()
            f.proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"ready\n" in buf:
                return
    raise AssertionError(f"farm did not become ready: {buf!r}\n{log.read_text()}")
