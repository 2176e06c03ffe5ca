"""Shared helpers for the machine-model tests: nodes with fast timings, a recording sink, free ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from psrpcore.types import ErrorRecord

from simfarm.config import Range, ServiceTiming, SimConfig, Timings
from simfarm.events import EventLog, read_events
from simfarm.node import SimNode
from simfarm.powershell import CommandSpec, run_pipeline

FAST = Timings(default=ServiceTiming(stop=Range(low=0.01, high=0.03), start=Range(low=0.01, high=0.03)))


def config(faults: Sequence[dict[str, Any]] = (), **settings: Any) -> SimConfig:
    """A one-node farm ("web01") with fast timings and the given faults."""
    data: dict[str, Any] = {"timings": FAST.model_dump(), **settings}
    data["nodes"] = {"web01": {"faults": list(faults)}}
    return SimConfig.model_validate(data)


@asynccontextmanager
async def booted(cfg: SimConfig, log: Path | None = None) -> AsyncIterator[SimNode]:
    node = SimNode("web01", "127.0.0.1", cfg, EventLog(log))
    await node.boot()
    try:
        yield node
    finally:
        await node.close()


def events(log: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(log) if e["kind"] == kind]


class Sink:
    """Collects every stream a pipeline writes."""

    def __init__(self) -> None:
        self.output: list[Any] = []
        self.errors: list[ErrorRecord] = []
        self.warnings: list[str] = []
        self.verbose: list[str] = []

    def write_output(self, value: Any) -> None:
        self.output.append(value)

    def write_error(self, record: ErrorRecord) -> None:
        self.errors.append(record)

    def write_warning(self, message: str) -> None:
        self.warnings.append(message)

    def write_verbose(self, message: str) -> None:
        self.verbose.append(message)


async def run(node: SimNode, name: str, *args: tuple[str | None, Any], endpoint: Any = None) -> Sink:
    """Run one cmdlet as pypsrp sends it."""
    sink = Sink()
    await run_pipeline(node, [CommandSpec(name, args=tuple(args))], sink, endpoint=endpoint)
    return sink


async def script(node: SimNode, text: str, endpoint: Any = None) -> Sink:
    sink = Sink()
    await run_pipeline(node, [CommandSpec(text, is_script=True)], sink, endpoint=endpoint)
    return sink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    """Wait for a condition the model reaches on its own tasks, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)
