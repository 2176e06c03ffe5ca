"""One machine, one key: hosts as the system resolver reads them."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from orchestrator.addresses import host_key, literal_address, resolve


@pytest.mark.parametrize(
    "spelling",
    ["127.0.1.1", "127.000.001.001", "2130706689", "0x7f.0.1.1", "127.0.257", "::ffff:127.0.1.1"],
)
def test_every_spelling_of_an_ipv4_address_is_that_address(spelling: str) -> None:
    assert literal_address(spelling) == ipaddress.IPv4Address("127.0.1.1")
    assert host_key(spelling) == "127.0.1.1"


@pytest.mark.parametrize(
    "name", ["web-01", "deadbeef", "web-01.corp.example", "1.2.3.4.5", "0x", "999.1.1.1"]
)
def test_names_are_not_addresses(name: str) -> None:
    assert literal_address(name) is None


def test_names_compare_without_case_or_final_dot() -> None:
    assert host_key("WEB-01.Corp.Example.") == host_key("web-01.corp.example") == "web-01.corp.example"


def test_ipv6_is_canonical() -> None:
    assert host_key("fd00:0:0::2") == host_key("FD00::2") == "fd00::2"


def test_names_are_resolved_and_literals_are_not_looked_up() -> None:
    found = asyncio.run(resolve(["localhost", "127.0.0.1", "no-such-host.invalid"], timeout=5))
    assert "127.0.0.1" in found["localhost"]
    assert "127.0.0.1" not in found  # a literal needs no lookup
    assert found["no-such-host.invalid"] == frozenset()  # left to preflight
