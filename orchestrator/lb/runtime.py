"""HAProxy's runtime API: one command per connection over a unix socket or TCP.

A command is sent with its trailing newline (without it HAProxy waits forever) and the answer is
read until HAProxy closes the connection, under a client-side timeout. Answers are plain text:
`set server` says nothing (a bare newline) when it worked, a sentence when it did not.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re

from orchestrator.lb.base import LBError

_HOST_PORT = re.compile(r"^\[?(?P<host>[^\]]+?)\]?:(?P<port>\d{1,5})$")

# HAProxy's answers to a command it refused, and what they mean to us.
_REFUSALS = (
    ("Permission denied", "permission"),
    ("No such server", "unknown_server"),
    ("No such backend", "unknown_server"),
    ("Can't find backend", "unknown_server"),
)


class RuntimeAPI:
    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("/"):
            return await asyncio.open_unix_connection(self.address)
        m = _HOST_PORT.match(self.address)
        if m is None:
            raise LBError(
                "unreachable", f"not a socket path or host:port: {self.address}", instance=self.address
            )
        return await asyncio.open_connection(m["host"], int(m["port"]))

    async def call(self, command: str) -> str:
        """The raw answer; LBError(unreachable) when HAProxy does not answer in time."""
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open()
                try:
                    writer.write(command.encode() + b"\n")
                    await writer.drain()
                    data = await reader.read()
                finally:
                    writer.close()
        except TimeoutError:
            raise LBError(
                "unreachable", f"no answer to {command!r} within {self.timeout:g}s", instance=self.address
            ) from None
        except OSError as exc:
            raise LBError(
                "unreachable", f"{exc.strerror or exc} (runtime API {command!r})", instance=self.address
            ) from None
        return data.decode("utf-8", "replace")

    async def command(self, command: str) -> str:
        """Run a command whose refusal is a sentence; raise LBError with its kind."""
        answer = await self.call(command)
        text = answer.strip()
        for needle, kind in _REFUSALS:
            if needle in text:
                raise LBError(kind, f"{command!r}: {text}", instance=self.address)  # type: ignore[arg-type]
        return answer

    async def set(self, command: str) -> None:
        """A `set ...` command: success is an empty answer, anything else a refusal."""
        text = (await self.command(command)).strip()
        if text:
            raise LBError("refused", f"{command!r}: {text.splitlines()[0]}", instance=self.address)


def stat_rows(text: str) -> list[dict[str, str]]:
    """`show stat` CSV, by column name (the header line starts with '# ')."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    body = "\n".join([lines[0][2:], *lines[1:]])
    return [dict(row) for row in csv.DictReader(io.StringIO(body))]


def servers_state_rows(text: str) -> list[dict[str, str]]:
    """`show servers state`: a version line, a '# ' header, then space-separated rows."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
        elif header is not None and line.strip():
            rows.append(dict(zip(header, line.split(), strict=False)))
    return rows


def info_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out
