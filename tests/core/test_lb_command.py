"""The command driver's contract with real child processes: exit codes, the status JSON, the
environment and argv a hook gets."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from orchestrator.lb.base import LBError
from orchestrator.lb.command import CommandBalancer

NODES = {"s1": {"lb_name": "s1", "name": "web-01", "host": "10.0.0.1"}}


def _py(code: str) -> list[str]:
    # Braces doubled: argv elements are templates.
    return [sys.executable, "-c", code.replace("{", "{{").replace("}", "}}")]


def _driver(status: list[str], drain: list[str] | None = None) -> CommandBalancer:
    other = drain or _py("pass")
    return CommandBalancer({"drain": other, "ready": other, "status": status}, NODES, timeout=5)


def test_exit_codes_have_kinds() -> None:
    async def kind(code: int) -> str:
        with pytest.raises(LBError) as err:
            await _driver(_py(f"import sys; print('boom', file=sys.stderr); sys.exit({code})")).state("s1")
        assert "boom" in str(err.value) or code == 3
        return err.value.kind

    assert asyncio.run(kind(3)) == "unknown_server"
    assert asyncio.run(kind(75)) == "unreachable"  # try again: transient
    assert asyncio.run(kind(1)) == "refused"


def test_status_json_is_checked() -> None:
    good = _py('print(\'{"rotation": "out", "healthy": null, "sessions": 2}\')')
    m = asyncio.run(_driver(good).state("s1"))
    assert (m.rotation, m.healthy, m.sessions, m.admin) == ("out", None, 2, "drain")
    for bad in ("not json", '{"rotation": "sideways"}', '{"rotation": "in", "sessions": "2"}'):
        with pytest.raises(LBError) as err:
            asyncio.run(_driver(_py(f"print({bad!r})")).state("s1"))
        assert err.value.kind == "refused" and "expected" in str(err.value)


def test_hook_gets_node_fields_in_argv_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    record = [
        sys.executable,
        "-c",
        # Braces doubled: argv elements are templates.
        "import json, os, sys; env = os.environ.items(); "
        "json.dump({{'argv': sys.argv[1:], 'env': {{k: v for k, v in env if k.startswith('ORCH_')}}}}, "
        "open(sys.argv[1], 'w'))",
        str(out),
        "{lb_name}",
        "{name}@{host}",
    ]
    asyncio.run(_driver(_py("pass"), drain=record).drain("s1"))
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(out), "s1", "web-01@10.0.0.1"]
    assert seen["env"] == {
        "ORCH_LB_NAME": "s1",
        "ORCH_NODE": "web-01",
        "ORCH_HOST": "10.0.0.1",
        "ORCH_OPERATION": "drain",
    }
