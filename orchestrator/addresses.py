"""One machine, one spelling: the address a node's host stands for, to find one machine listed twice.

The system resolver reads more than dotted quads: `2130706689`, `127.1`, `0x7f.0.0.1` and
`127.000.001.001` (octal parts) are all IPv4 literals to it, and `::ffff:127.0.1.1` reaches the same
IPv4 host. Comparing hosts as written would let one machine be restarted twice in one run while a
node never touched is reported done. `literal_address` reads a host as the resolver would;
`resolve` turns names into addresses once, when a run starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What inet_aton could read as a number: digits, hex digits after 0x, and dots. A DNS name of these
# characters only would have an all-numeric top-level label, which no DNS name has.
_NUMERIC = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)(\.(0[xX][0-9A-Fa-f]*|[0-9]+)){0,3}")


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` spells in any form the resolver reads as a literal; None for a name.

    An IPv4-mapped IPv6 address is its IPv4 address: a connection to either reaches the same host.
    """
    try:
        address: IPAddress = ipaddress.ip_address(host)
    except ValueError:
        if not _NUMERIC.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_key(host: str) -> str:
    """The same string for two spellings of one host known without DNS: the canonical address, or
    the name in lower case without a final dot."""
    address = literal_address(host)
    return str(address) if address is not None else host.lower().rstrip(".")


async def resolve(hosts: Iterable[str], *, timeout: float, limit: int = 32) -> Mapping[str, frozenset[str]]:
    """The addresses each name resolves to (literals need no lookup). A name that does not resolve,
    or not within `timeout`, is left out: preflight reports it as unreachable."""
    names = sorted({h for h in hosts if literal_address(h) is None})
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(limit)

    async def one(name: str) -> frozenset[str]:
        async with gate:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), timeout=timeout
                )
            except (OSError, TimeoutError):
                return frozenset()
        return frozenset(host_key(str(info[4][0])) for info in infos)

    found = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, found, strict=True))
