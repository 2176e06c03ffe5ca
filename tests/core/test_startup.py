"""`validate` and `plan` import only what they need: not the WinRM client, the HTTP stack or the
rollout (their start-up is most of what an operator waits for). Checked in a fresh interpreter, where
`sys.modules` holds exactly what the command imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[2] / "inventories" / "demo.yaml"
HEAVY = ("aiohttp", "pypsrp", "requests", "orchestrator.rollout", "orchestrator.remote.session")

# Runs one command as `orchestrator ...` would, then prints which of HEAVY it imported.
_PROBE = """
import importlib, json, sys
for name in {preimport!r}:
    importlib.import_module(name)
from orchestrator.cli import main
sys.argv = ["orchestrator", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = {heavy!r}
print(json.dumps({{"code": code, "imported": sorted(m for m in heavy if m in sys.modules)}}))
"""


def _imported_by(*args: str, preimport: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """The command's exit code, and which of HEAVY it left imported."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, preimport=preimport), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    return int(found["code"]), list(found["imported"])


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["plan", "--json"]])
def test_validate_and_plan_import_neither_the_winrm_client_nor_the_http_stack(command: list[str]) -> None:
    assert _imported_by(*command, str(DEMO)) == (0, [])


def test_the_probe_sees_the_rollout_when_something_imports_it() -> None:
    # What `run` imports, imported first: the probe reports it, so the check above can fail.
    code, imported = _imported_by("validate", str(DEMO), preimport=("orchestrator.rollout",))
    assert code == 0
    assert {"aiohttp", "orchestrator.rollout"} <= set(imported)
