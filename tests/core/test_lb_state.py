"""Pure balancer logic: HAProxy's answers read by column name, states combined over backends and
instances, transient errors retried and others not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from orchestrator.inventory.model import HttpField, HttpState
from orchestrator.lb.base import LBError, Membership, Preflight, combine
from orchestrator.lb.haproxy import admin_state, membership
from orchestrator.lb.retrying import Retrying
from orchestrator.lb.runtime import info_fields, servers_state_rows, stat_rows
from orchestrator.lb.webhook import fill, pick, read_state

# Columns reordered and trimmed on purpose: nothing may depend on positions.
STAT = """# pxname,svname,status,qcur,scur,check_status,hrsp_5xx,weight
web,web-01,UP,0,3,L7OK,2,1
web,web-02,DRAIN,1,2,L7OK,0,1
web,web-03,DOWN,0,0,L7STS,7,1
web,web-04,UP 1/2,0,0,L7STS,0,1
web,web-05,no check,0,0,,0,1
"""
STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight
3 web 1 web-01 127.0.0.1 2 0 1
3 web 2 web-02 127.0.0.2 2 8 1
3 web 3 web-03 127.0.0.3 0 8 1
3 web 4 web-04 127.0.0.4 2 0 1
3 web 5 web-05 127.0.0.5 2 1 1
"""


def _m(name: str) -> Membership:
    stat = {r["svname"]: r for r in stat_rows(STAT)}
    state = {r["srv_name"]: r for r in servers_state_rows(STATE)}
    return membership(stat[name], state[name])


def test_haproxy_rows_read_by_name() -> None:
    assert _m("web-01") == Membership("in", True, 3, "ready", "UP", 2)
    assert _m("web-02") == Membership("out", True, 3, "drain", "DRAIN", 0)
    # DOWN in show stat hides the drain bit; show servers state still has it.
    assert _m("web-03") == Membership("out", False, 0, "drain", "DOWN", 7)
    # A transition is not healthy: only exactly UP or DRAIN is.
    assert _m("web-04").healthy is False and _m("web-04").rotation == "in"
    assert _m("web-05").healthy is None and _m("web-05").admin == "maint"


def test_admin_bits() -> None:
    assert admin_state(0) == "ready"
    assert admin_state(0x08) == admin_state(0x10) == "drain"
    assert admin_state(0x01) == admin_state(0x09) == admin_state(0x20) == "maint"


def test_info_fields() -> None:
    info = info_fields("Name: HAProxy\nPid: 42\nStart_time_sec: 1700000000\n")
    assert (info["Pid"], info["Start_time_sec"]) == ("42", "1700000000")


def test_combined_out_only_when_out_everywhere() -> None:
    up = Membership("in", True, 1, "ready", "UP", 0)
    drained = Membership("out", True, 2, "drain", "DRAIN", 1)
    unknown_sessions = Membership("out", None, None, None)
    both = combine([up, drained])
    assert both.rotation == "unknown" and both.sessions == 3 and both.admin == "drain"
    assert both.errors_5xx == 1 and both.status == "UP | DRAIN"
    assert combine([drained, drained]).rotation == "out"
    assert combine([up, up]).rotation == "in"
    assert combine([drained, unknown_sessions]).sessions is None
    assert combine([up, Membership("in", False, 0, "ready", "DOWN", 0)]).healthy is False


class Flaky:
    """Fails `failures` times with `kind`, then answers."""

    name = "flaky"

    def __init__(self, failures: int, kind: str) -> None:
        self.failures = failures
        self.kind = kind
        self.calls = 0

    async def preflight(self, servers: Sequence[str]) -> Preflight:
        raise LBError("unreachable", "down")

    async def state(self, server: str) -> Membership:
        self.calls += 1
        if self.calls <= self.failures:
            raise LBError(self.kind, "no")  # type: ignore[arg-type]
        return Membership("in", True, 0)

    async def drain(self, server: str) -> None: ...
    async def recheck(self, server: str) -> None: ...
    async def ready(self, server: str) -> None: ...
    async def close(self) -> None: ...


def test_transient_errors_are_retried_others_are_not() -> None:
    flaky = Flaky(2, "unreachable")
    assert asyncio.run(Retrying(flaky, pauses=(0, 0, 0)).state("s")).rotation == "in"
    assert flaky.calls == 3

    exhausted = Flaky(5, "unreachable")
    with pytest.raises(LBError):
        asyncio.run(Retrying(exhausted, pauses=(0, 0)).state("s"))
    assert exhausted.calls == 3

    refused = Flaky(1, "permission")
    with pytest.raises(LBError) as err:
        asyncio.run(Retrying(refused, pauses=(0, 0)).state("s"))
    assert err.value.kind == "permission" and refused.calls == 1

    # Preflight is never retried: an instance unreachable then refuses the run at once.
    with pytest.raises(LBError):
        asyncio.run(Retrying(Flaky(0, "unreachable"), pauses=(0,)).preflight(["s"]))


def test_http_state_read_by_paths_and_mappings() -> None:
    spec = HttpState(
        url="http://lb/{lb_name}",
        rotation=HttpField(path="peers.0.state", map={"up": "in", "draining": "out", "down": "out"}),
        healthy=HttpField(path="peers.0.health.ok", map={"1": True, "0": False}),
        sessions=HttpField(path="peers.0.active"),
    )
    doc = {"peers": [{"state": "draining", "health": {"ok": 1}, "active": 4}]}
    assert read_state(doc, spec) == Membership("out", True, 4, "drain", "draining")
    # Unmapped rotation is unknown; missing paths and wrong types are unknown, never guessed.
    odd = {"peers": [{"state": "backup", "active": "many"}]}
    assert read_state(odd, spec) == Membership("unknown", None, None, None, "backup")
    assert pick({"a": [{"b": 2}]}, "a.0.b") == 2 and pick({"a": []}, "a.3.b") is None
    assert fill({"server": "{lb_name}", "tags": ["{host}"], "weight": 0}, {"lb_name": "s1", "host": "h"}) == {
        "server": "s1",
        "tags": ["h"],
        "weight": 0,
    }
