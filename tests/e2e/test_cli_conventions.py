"""The command line as a new user meets it: the installed `orchestrator` command, its help, the
README's quick start, `plan` and `validate` output, and `make demo` on busy addresses."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator import __version__
from orchestrator.results import ExitCode

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's bin, as `. .venv/bin/activate` puts it on PATH
DEMO = ROOT / "inventories" / "demo.yaml"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="100")
    return subprocess.run(
        ["orchestrator", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


def test_help_and_version_follow_conventions() -> None:
    for flag in ("-h", "--help"):
        top = _cli(flag)
        assert top.returncode == 0, top.stderr
        assert "Usage: orchestrator [OPTIONS] COMMAND" in top.stdout
        assert "--version" in top.stdout
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"orchestrator {__version__}"
    for command in ("validate", "plan", "run", "resume", "status", "report", "schema"):
        page = _cli(command, "-h")
        assert page.returncode == 0, page.stderr
        assert "<bool>" not in page.stdout and "{" not in page.stdout, page.stdout
        if command != "schema":
            assert f"Usage: orchestrator {command} [OPTIONS] FILE" in page.stdout


def test_readme_quick_start_runs_as_written() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quick-start.*?```sh\n(.*?)```", text, re.S)
    assert block is not None, "README has no quick-start block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert ". .venv/bin/activate" in lines
    commands = [line for line in lines if line.startswith("orchestrator ")]
    assert len(commands) >= 4
    for line in commands:
        words = shlex.split(line.split(">")[0])
        result = _cli(*words[1:])
        assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"


def test_plan_of_a_window_shows_its_size_and_order_not_a_batch() -> None:
    result = _cli("plan", "inventories/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "strategy window: up to 2 nodes in flight" in result.stdout
    assert "batch" not in result.stdout
    order = re.findall(r"^\S*\s*(\d) \S\s*(web-\d\d)", result.stdout, re.M)
    assert [name for _, name in order] == [f"web-0{i}" for i in range(1, 7)]
    assert "site-a at most 1, site-b at most 1" in result.stdout
    assert "{" not in result.stdout  # groups not printed as a Python dict


def test_validate_names_the_line_of_a_missing_file(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["journal"] = str(tmp_path / "journal.sqlite")
    data["defaults"]["transport"] = {"scheme": "https", "auth": "ntlm", "ca_file": "pki/ca.pem"}
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _cli("validate", str(inv))
    assert result.returncode == ExitCode.INVALID_INPUT, result.stdout
    line = next(n for n, text in enumerate(inv.read_text().splitlines(), 1) if "ca_file" in text)
    assert f"{inv}:{line}:" in result.stderr and "defaults.transport.ca_file" in result.stderr
    assert "does not exist" in result.stderr and result.stderr.count("error:") == 1  # once, not per node
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert _cli("validate", str(inv)).returncode == 0
    # A credentials file others may read is refused now, as the run would refuse it.
    data["defaults"]["credentials"] = {"file": "secrets/winrm.yaml"}
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "secrets").mkdir()
    secret = tmp_path / "secrets" / "winrm.yaml"
    secret.write_text("username: u\npassword: p\n")
    secret.chmod(0o644)
    result = _cli("validate", str(inv))
    assert result.returncode == ExitCode.INVALID_INPUT and "defaults.credentials.file" in result.stderr
    assert "chmod 600" in result.stderr
    secret.chmod(0o600)
    assert _cli("validate", str(inv)).returncode == 0, _cli("validate", str(inv)).stderr
    # The shipped example is valid as shipped.
    assert _cli("validate", "inventories/example.yaml").returncode == 0


def test_make_demo_on_busy_addresses_says_so_in_one_line(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.1.1", 5985))
    busy.listen()
    try:
        venv = BIN.parent
        result = subprocess.run(
            ["make", "-s", "-o", f"{venv}/.installed", "demo", f"VENV={venv}", f"RUN={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
    finally:
        busy.close()
    assert result.returncode != 0
    # make's own "*** Error" line (make[1] under a parent make) aside.
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if not re.match(r"make(\[\d+\])?:", line)
    ]
    assert len(ours) == 1, ours
    assert "address already in use" in ours[0] and "127.0.1.1" in ours[0]


def test_validate_checks_the_programs_and_ca_bundle_a_balancer_driver_uses(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["journal"] = str(tmp_path / "journal.sqlite")
    status = tmp_path / "lb-status"
    status.write_text("#!/bin/sh\necho '{}'\n")
    status.chmod(0o700)
    data["load_balancer"] = {
        "driver": "command",
        "command": {
            "drain": [str(tmp_path / "lb-drain"), "{lb_name}"],  # missing
            "ready": ["sh", "-c", "true"],  # found on PATH
            "status": [str(status), "{lb_name}"],
        },
    }
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _cli("validate", str(inv))
    assert result.returncode == ExitCode.INVALID_INPUT, result.stdout
    assert "load_balancer.command.drain[0]" in result.stderr and "lb-drain does not exist" in result.stderr
    assert result.stderr.count("error:") == 1
    (tmp_path / "lb-drain").write_text("#!/bin/sh\n")
    result = _cli("validate", str(inv))
    assert "lb-drain is not executable" in result.stderr
    (tmp_path / "lb-drain").chmod(0o700)
    assert _cli("validate", str(inv)).returncode == 0, _cli("validate", str(inv)).stderr
    data["load_balancer"] = {
        "driver": "http",
        "http": {
            "drain_url": "https://127.0.0.1:9/servers/{lb_name}/drain",
            "ready_url": "https://127.0.0.1:9/servers/{lb_name}/ready",
            "status_url": "https://127.0.0.1:9/servers/{lb_name}",
            "ca_file": str(tmp_path / "lb-ca.pem"),
        },
    }
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    for command in ("validate", "run"):  # refused with its place, before any driver opens it
        result = _cli(command, str(inv))
        assert result.returncode == ExitCode.INVALID_INPUT, result.stdout + result.stderr
        assert "load_balancer.http.ca_file" in result.stderr and "lb-ca.pem does not exist" in result.stderr
        assert "Traceback" not in result.stderr
